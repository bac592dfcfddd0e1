"""The training engine: one :class:`Trainer` that runs the lift-reproject-lift cycle (or the
supervised reference) from a :class:`~fastlift.training.config.TrainConfig`.

Reading order: ``Trainer.__init__`` (data, networks, optimisers, resume) -> ``fit`` (the loop:
step, log, validate, checkpoint, stop on budget or signal) -> ``unsupervised_step`` /
``supervised_step`` (the maths) -> ``validate`` -> ``save`` / ``_restore``.

One unsupervised step (method.md, "The lift-reproject-lift cycle"), batch ``x`` (B, J, 2):

1. ``Y = lift(x, G(x))``; with the temporal discriminator the previous frames are lifted in the
   same forward pass (one batch of 2B real poses, so BatchNorm sees one distribution).
2. ``R`` random rotations (counter-based: ``seed`` and the global sample index, so resuming needs
   no RNG state for them); ``y~ = normalize(P(R Y))``; ``Y~ = s R Y`` (``s`` the re-normalisation
   scale: the re-lift sees the pose at that scale).
3. ``Y' = lift(y~, G(y~))``; ``x' = normalize(P(R^T Y'))``.
4. Discriminator update(s) on real ``x`` against the detached ``y~`` (real and fake in one
   forward; no BatchNorm in D), and the temporal discriminator on frame differences.
5. Lifter update on ``w_adv L_adv + w_2d L_2D + w_3d L_3D + w_T L_T (+ cues)``, with D's
   parameters frozen for the adversarial term (no wasted weight gradients).

Distributed data parallel: under ``torchrun`` every process takes its shard of each batch (the
data loader's ``rank``/``world_size``) and gradients are averaged with one flattened
``all_reduce`` per network and update, i.e. DDP's gradient semantics, done explicitly because the
cycle calls the lifter twice (on ``x`` and on ``y~``) before one backward, which
``DistributedDataParallel``'s reducer does not allow. BatchNorm statistics stay per process (as
DDP without SyncBatchNorm) and are averaged before validation and checkpoints.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import signal
import sys
import time
import warnings
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist

from fastlift._atomic import atomic_write
from fastlift.data.layouts import get_layout
from fastlift.models import Lifter, PoseDiscriminator, TemporalDiscriminator
from fastlift.models.flow import PoseFlow
from fastlift.training import geometry as geo
from fastlift.training import losses as L
from fastlift.training.checkpoint import check_compatible, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fastlift.training.config import ConfigError, TrainConfig, config_to_toml
from fastlift.training.evaluate import pose_metrics
from fastlift.training.inputs import (EvalSet, input_stats, make_eval_set, normalized_2d, prepare_data,
                                      supervised_targets)
from fastlift.training.prior import capped_nll, flow_training_poses, train_pose_flow

__all__ = ["Trainer", "build_lifter", "build_discriminators", "train"]

CSV_COLUMNS = ["step", "epoch", "time_s", "lr", "loss_g", "loss_adv", "loss_2d", "loss_3d", "loss_t", "loss_bone", "loss_knee", "loss_flow",
               "loss_sup", "loss_d", "loss_dt", "loss_r1", "d_acc", "d_flip_acc", "dt_acc", "adv_gain", "depth_stretch", "sign_margin", "sign_flips", "samples_per_s",
               "val_p_mpjpe", "val_n_mpjpe", "val_mpjpe_scaled", "val_p_mpjpe_flip", "val_p_mpjpe_flat"]


# ----------------------------------------------------------------------------------- builders
def _chirality_axes(layout) -> list[tuple[int, int]]:
    """Joint pairs of the reference axes of D's kinematic features: right -> left hip, right ->
    left shoulder, pelvis -> thorax (those the layout has)."""
    axes = []
    for a, b in (("r_hip", "l_hip"), ("r_shoulder", "l_shoulder"), ("pelvis", "thorax")):
        if a in layout.canonical and b in layout.canonical:
            axes.append((layout.canonical.index(a), layout.canonical.index(b)))
    return axes


def build_lifter(cfg: TrainConfig, num_joints: int) -> Lifter:
    return Lifter(num_joints, cfg.width, cfg.blocks, cfg.batch_norm, cfg.dropout, cfg.activation,
                  cfg.out_init_scale, cfg.c, cfg.depth_floor, cfg.min_depth)


def build_discriminators(cfg: TrainConfig, layout) -> tuple[PoseDiscriminator, TemporalDiscriminator]:
    J = layout.num_joints
    axes = _chirality_axes(layout)
    disc = PoseDiscriminator(J, cfg.d_width, cfg.d_blocks, cfg.d_batch_norm, cfg.d_dropout, cfg.d_activation,
                             cfg.d_spectral_norm, kinematic=cfg.d_kinematic and bool(axes),
                             parents=layout.parents, axes=axes)
    tdisc = TemporalDiscriminator(J, cfg.t_width, cfg.t_blocks, False, 0.0, cfg.d_activation, cfg.d_spectral_norm,
                                  with_pose=cfg.t_with_pose)
    return disc, tdisc


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        w = min(1.0, (step + 1) / cfg.lr_warmup) if cfg.lr_warmup else 1.0
        if cfg.lr_schedule == "constant":
            return w
        if cfg.lr_schedule == "exp":
            return w * cfg.exp_decay ** (step / 1000.0)
        t = min(1.0, step / max(1, cfg.steps))
        return w * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    return f


# ------------------------------------------------------------------------------------ trainer
class Trainer:
    """Sets up everything a run needs from ``cfg``; :meth:`fit` trains.

    Args:
        cfg: the resolved configuration.
        log: where progress lines go (rank 0 only).
        install_signal_handlers: SIGINT/SIGTERM -> checkpoint, then stop (``fit`` returns with
            ``interrupted=True`` and the CLI exits with status 130/143).
    """

    def __init__(self, cfg: TrainConfig, log=print, install_signal_handlers: bool = True):
        self.cfg = cfg
        self._setup_distributed()
        self.log = log if self.rank == 0 else (lambda *a, **k: None)
        self._install_signals = install_signal_handlers
        self._signal = None
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = self._device()
        geo.set_backend(cfg.ops_backend)
        self.layout = get_layout(cfg.layout)
        self.J = self.layout.num_joints
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)

        # ---- resume / init: read the checkpoint first so a mismatch fails before any data work
        self._resume_state = None
        if cfg.resume:
            st = load_checkpoint(cfg.resume)
            check_compatible(st, cfg, resume=True)
            if st.get("world_size", 1) != self.world_size:
                raise ConfigError(f"checkpoint {st['path']!r} was written by {st.get('world_size', 1)} processes; "
                                  f"resume it with the same number (now {self.world_size})")
            self._resume_state = st
        init_state = None
        if cfg.init and not cfg.resume:
            init_state = load_checkpoint(cfg.init)
            check_compatible(init_state, cfg, resume=False)

        # ---- data (raises PoseDataError on unusable input, before training)
        self.data = prepare_data(cfg, log=self.log, extra_cache=self._extra_cache())
        self.root, self.head = self.data.root, self.data.head
        self.val_set = (make_eval_set(self.data.val, self.root, self.head, cfg.c, cfg.val_samples, "val")
                        if self.data.val is not None else None)
        self.temporal = (cfg.mode == "unsupervised" and cfg.use_temporal and cfg.use_discriminator
                         and self._has_sequences(self.data.train))
        if cfg.mode == "unsupervised" and cfg.use_temporal and cfg.use_discriminator and not self.temporal:
            self.log("temporal discriminator: off (the training data has no consecutive frames at offset "
                     f"{cfg.temporal_offset})")
        self.use_bone_temporal = cfg.mode == "unsupervised" and cfg.w_bone_temporal > 0 and self._has_sequences(self.data.train)
        train = self.data.train
        by_subject = cfg.bone_sequence_group == "subject" and train.subject is not None
        self.use_bone_sequence = (cfg.mode == "unsupervised" and cfg.w_bone_sequence > 0
                                  and self._has_groups(train.subject if by_subject else train.sequence))
        if cfg.mode == "unsupervised" and cfg.w_bone_sequence > 0 and not self.use_bone_sequence:
            self.log("bone-length cue across sequences: off (the training data has no sequences, or subjects, of 2 or "
                     "more poses)")
        self.partner_key = "subject" if by_subject else "sequence"
        if self.use_bone_sequence and cfg.bone_sequence_group == "subject" and not by_subject:
            self.log("bone-length cue: the training data has no subject names; partners come from each pose's sequence")
        self.loader = self._make_loader()

        # ---- networks
        self.lifter = build_lifter(cfg, self.J)
        if cfg.standardize_inputs:
            self.lifter.set_input_stats(*input_stats(self.data.train, self.root, self.head, cfg.c))
        if cfg.mode == "supervised" and cfg.supervised_standardize:
            self.lifter.set_output_stats(*self._target_stats())
        self.use_d = cfg.mode == "unsupervised" and cfg.use_discriminator and cfg.w_adv > 0
        self.disc, self.tdisc = build_discriminators(cfg, self.layout)
        self.flow = (PoseFlow(self.J, self.root, cfg.flow_width, cfg.flow_layers, seed=cfg.seed).to(self.device)
                     if cfg.mode == "unsupervised" and cfg.w_flow > 0 else None)
        if self.flow is not None:  # refuse before anything trains, not when the flow's fit begins
            complete = int((np.asarray(self.data.train.confidence) > 0).all(-1).sum())
            if complete <= self.flow.dim:
                raise ConfigError(f"w_flow: the training data has {complete} complete 2D poses (every joint present); "
                                  f"the flow prior needs more than {self.flow.dim} (or set w_flow 0)")
        self.lifter.to(self.device)
        self.disc.to(self.device)
        self.tdisc.to(self.device)
        self.lifter_ema = None
        if init_state is not None:
            states = dict(init_state["models"])
            if "lifter_ema" in states:  # start from the averaged (validated) weights
                states["lifter"] = states.pop("lifter_ema")
            self._load_models(states)
            self.log(f"initialised networks from {init_state['path']}")
        self._broadcast_parameters()
        if cfg.ema > 0:  # a moving average of the lifter's weights: what is validated and saved
            self.lifter_ema = copy.deepcopy(self.lifter).eval()
            for p in self.lifter_ema.parameters():
                p.requires_grad_(False)
        self.g_fwd = torch.compile(self.lifter) if cfg.compile else self.lifter
        self.d_fwd = torch.compile(self.disc) if cfg.compile else self.disc
        self.t_fwd = torch.compile(self.tdisc) if cfg.compile else self.tdisc

        # ---- optimisation
        betas = (cfg.beta1, cfg.beta2)
        fused = self._fused_adam_ok()
        mk = lambda params, lr: torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=cfg.weight_decay,  # noqa: E731
                                                  fused=fused or None, foreach=None if fused else True)
        self.opt_g = mk(self.lifter.parameters(), cfg.lr)
        self.opt_d = mk(self.disc.parameters(), cfg.lr * cfg.d_lr_ratio)
        self.opt_t = mk(self.tdisc.parameters(), cfg.lr * cfg.d_lr_ratio)
        self.scheds = {k: torch.optim.lr_scheduler.LambdaLR(o, _lr_lambda(cfg))
                       for k, o in (("g", self.opt_g), ("d", self.opt_d), ("t", self.opt_t))}
        self._active_scheds = ["g"] + (["d"] if self.use_d else []) + (["t"] if self.use_d and self.temporal else [])
        amp = self._resolve_amp(cfg.amp)
        self.amp = amp
        self.log(f"device {self.device}, {torch.get_num_threads()} thread(s), amp {amp}"
                 + (" (auto)" if cfg.amp == "auto" else "") + f", ops backend {cfg.ops_backend}")
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        fp16 = amp == "fp16"
        self.scalers = {k: torch.amp.GradScaler(self.device.type, enabled=fp16) for k in ("g", "d", "t")}

        # ---- bookkeeping
        self.step = 0
        self.epoch = 0
        self._epoch_ended = False
        self._val_step = -1
        self.elapsed = 0.0
        self.best = {"metric": "val_p_mpjpe", "value": float("inf"), "step": -1}
        self.adv_gain = 1.0   # adv_balance: the adversarial weight's multiplier, steered by D's accuracy
        self.rollbacks = 0    # collapse_guard: rollbacks so far (they shift the rotation stream)
        self._acc_window: list[float] = []
        self._stretch_window: list[float] = []
        self._snapshots: list[dict] = []
        self._first_snapshot: dict | None = None
        self._last_rollback_to = -1
        self.sign_flips = 0        # sign_check: times the depth head was negated
        self._mirror_wins = 0      # sign_check: consecutive checks the depth mirrors won
        self._sign_margin: float | None = None
        self.last_val: dict = {}
        bones = self.layout.bones
        self._bone_child = torch.tensor([c for c, _ in bones], device=self.device)
        self._bone_parent = torch.tensor([p for _, p in bones], device=self.device)
        self._sym = self._symmetric_bones()
        self._torso = self._torso_joints()
        self._mirror_x = torch.tensor([-1.0, 1.0], device=self.device)
        self._flip_perm = torch.as_tensor(self.layout.flip_index, device=self.device)
        self._limbs = self._limb_triples()
        self._legs, self._hips = self._leg_triples()
        self.out = self._out_dir()
        if self._resume_state is not None:
            self._restore(self._resume_state)
            self.log(f"resumed from {self._resume_state['path']} at step {self.step}")
            self._resume_state = None

    # ------------------------------------------------------------------------------ setup
    def _setup_distributed(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.distributed = self.world_size > 1
        if self.distributed and not dist.is_initialized():
            backend = self.cfg.dist_backend
            if backend == "auto":
                backend = "nccl" if torch.cuda.is_available() and self.cfg.device != "cpu" else "gloo"
            dist.init_process_group(backend=backend)

    def _device(self) -> torch.device:
        d = self.cfg.device
        if d == "auto":
            d = "cuda" if torch.cuda.is_available() else "cpu"
        if d == "cuda" and self.distributed:
            d = f"cuda:{self.local_rank}"
        dev = torch.device(d)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"config: device {d!r} requested but CUDA is not available")
            torch.cuda.set_device(dev)
        return dev

    def _resolve_amp(self, amp: str) -> str:
        """``auto``: bf16 on CUDA GPUs that support it and on CPUs with native bf16 matmuls
        (oneDNN's check: AVX512-BF16 / AMX), else none (emulated bf16 would be slower)."""
        if amp != "auto":
            return amp
        if self.device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "none"
        try:
            return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "none"
        except (AttributeError, RuntimeError):
            return "none"

    def _fused_adam_ok(self) -> bool:
        """The fused AdamW kernel (one pass over the parameters) when this torch has it for the device."""
        try:
            p = torch.nn.Parameter(torch.zeros(2, device=self.device))
            p.grad = torch.zeros(2, device=self.device)
            torch.optim.AdamW([p], fused=True).step()
            return True
        except (RuntimeError, TypeError, ValueError):
            return False

    def _has_sequences(self, ps) -> bool:
        return bool((ps.previous_index(self.cfg.temporal_offset) >= 0).mean() > 0.5)

    @staticmethod
    def _has_groups(keys) -> bool:
        """Whether most poses share their key (sequence id, subject name) with another pose."""
        _, inv, counts = np.unique(np.asarray(keys), return_inverse=True, return_counts=True)
        return bool((counts[inv] >= 2).mean() > 0.5)

    def _make_loader(self):
        from fastlift.data import PoseLoader
        cfg = self.cfg
        k = cfg.temporal_offset if (self.temporal or self.use_bone_temporal) else None
        return PoseLoader(self.data.train, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
                          temporal_offset=k, rank=self.rank, world_size=self.world_size,
                          sequence_partners=cfg.bone_sequence_partners if self.use_bone_sequence else 0,
                          partner_key=self.partner_key,
                          normalization="fixed" if cfg.normalization == "dataset" else "per_sample",
                          device=self.device, c=cfg.c, root=self.root, head=self.head)

    def _target_stats(self):
        ps = self.data.train
        idx = np.arange(0, len(ps), max(1, len(ps) // 200_000))
        x, _, _ = normalized_2d(ps, self.root, self.head, self.cfg.c, idx)
        d = supervised_targets(torch.from_numpy(x), torch.from_numpy(np.asarray(ps.keypoints_3d[idx], dtype=np.float32)),
                               self.cfg.c + self.cfg.min_depth, self.root)
        return d.mean(0), d.std(0)

    def _torso_joints(self):
        """((r_hip, l_hip), (r_shoulder, l_shoulder)) indices, or None when the layout lacks one."""
        c = self.layout.canonical
        names = ("r_hip", "l_hip", "r_shoulder", "l_shoulder")
        if not all(n in c for n in names):
            return None
        i = [c.index(n) for n in names]
        return (i[0], i[1]), (i[2], i[3])

    def _symmetric_bones(self):
        lay = self.layout
        pairs = []
        for l, r in zip(lay.left, lay.right):
            pl, pr = lay.parents[l], lay.parents[r]
            if pl >= 0 and pr >= 0:
                pairs.append((l, pl, r, pr))
        t = lambda i: torch.tensor([p[i] for p in pairs], device=self.device, dtype=torch.long)  # noqa: E731
        return (t(0), t(1), t(2), t(3)) if pairs else None

    def _resume_dir(self) -> str | None:
        """The run directory of the checkpoint being resumed (``<run>/checkpoints/<name>.pt``)."""
        if self._resume_state is None:
            return None
        return os.path.dirname(os.path.dirname(os.path.abspath(self._resume_state["path"])))

    def _extra_cache(self) -> str | None:
        """Where rank 0 keeps the adapted ``extra_2d`` poses: read back on resume (the same data
        without retraining the adapter), replaced by a fresh run in the same directory."""
        cfg = self.cfg
        if cfg.extra_2d is None or self.rank != 0:
            return None
        d = cfg.out or self._resume_dir()
        if d is None:
            return None  # runs/<timestamp> is named later; the adapter then runs once, uncached
        path = os.path.join(d, "extra_2d_adapted.npz")
        if self._resume_state is None and os.path.exists(path):
            os.remove(path)
        return path

    def _out_dir(self) -> str | None:
        cfg = self.cfg
        if cfg.out is None:
            if self._resume_state is not None:
                p = self._resume_dir()
            else:
                stamp = time.strftime("%Y%m%d-%H%M%S")
                if self.distributed:  # every rank must agree on the name
                    obj = [stamp]
                    dist.broadcast_object_list(obj, src=0)
                    stamp = obj[0]
                p = os.path.join("runs", stamp)
            cfg.out = p
        if self.rank == 0:
            os.makedirs(os.path.join(cfg.out, "checkpoints"), exist_ok=True)
            atomic_write(os.path.join(cfg.out, "config.toml"), lambda f: f.write(config_to_toml(cfg)), "w")
            atomic_write(os.path.join(cfg.out, "config.json"), lambda f: json.dump(asdict(cfg), f, indent=1), "w")
        return cfg.out

    # ------------------------------------------------------------------------ networks
    def _models(self) -> dict:
        m = {"lifter": self.lifter, "disc": self.disc, "tdisc": self.tdisc}
        if self.lifter_ema is not None:
            m["lifter_ema"] = self.lifter_ema
        if self.flow is not None:
            m["flow"] = self.flow
        return m

    @property
    def eval_lifter(self) -> Lifter:
        """The lifter that is validated, tested and exported: the moving average when ``ema`` > 0."""
        return self.lifter_ema if self.lifter_ema is not None else self.lifter

    @torch.no_grad()
    def _update_ema(self):
        if self.lifter_ema is None:
            return
        decay = min(self.cfg.ema, (1.0 + self.step) / (self.cfg.ema_warmup + self.step))
        ema_p = [p for p in self.lifter_ema.parameters()]
        cur_p = [p.detach() for p in self.lifter.parameters()]
        torch._foreach_lerp_(ema_p, cur_p, 1.0 - decay)
        for b_ema, b in zip(self.lifter_ema.buffers(), self.lifter.buffers()):
            b_ema.copy_(b)

    def _load_models(self, states: dict):
        for k, m in self._models().items():
            src = k if k in states else ("lifter" if k == "lifter_ema" else None)  # no EMA saved: start it here
            if src in states:
                try:
                    m.load_state_dict(states[src])
                except RuntimeError as exc:
                    raise ConfigError(f"checkpoint: network {k!r} does not fit this config: {exc}") from None

    def _broadcast_parameters(self):
        if not self.distributed:
            return
        for m in self._models().values():
            for t in list(m.parameters()) + list(m.buffers()):
                dist.broadcast(t.data, src=0)

    def _check_replicas(self):
        """Raise if the processes' parameters diverged (they must stay bitwise equal)."""
        if not self.distributed:
            return
        for name, m in self._models().items():
            flat = torch.cat([p.detach().reshape(-1).float() for p in m.parameters()])
            lo, hi = flat.clone(), flat.clone()
            dist.all_reduce(lo, op=dist.ReduceOp.MIN)
            dist.all_reduce(hi, op=dist.ReduceOp.MAX)
            if not torch.equal(lo, hi):
                raise RuntimeError(f"distributed training: the {name} replicas diverged across processes")

    def _average_buffers(self):
        """Average BatchNorm running statistics over processes (before validation/checkpoints)."""
        if not self.distributed:
            return
        for m in self._models().values():
            for name, b in m.named_buffers():
                if b.is_floating_point() and ("running_" in name):
                    dist.all_reduce(b.data)
                    b.data /= self.world_size

    def _allreduce_grads(self, module: torch.nn.Module):
        if not self.distributed:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        off = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[off:off + n].view_as(g))
            off += n

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _fp32(self):
        """Geometry always runs in float32, also inside an autocast region."""
        return torch.autocast(self.device.type, enabled=False) if self.amp_dtype is not None else contextlib.nullcontext()

    def _lift(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            d = self.g_fwd(x)
        with self._fp32():
            return geo.lift_to_3d(x, d.float(), c=self.cfg.c, floor=self.cfg.depth_floor, min_depth=self.cfg.min_depth)

    def _project(self, Y, R, transpose=False):
        cfg = self.cfg
        with self._fp32():
            # renorm_floor: a view along the torso would otherwise be scaled up without bound
            eps = cfg.renorm_floor / cfg.c if cfg.renorm_floor > 0 else 1e-6
            return geo.project_normalized(Y, R, c=cfg.c, root=self.root, head=self.head, transpose=transpose,
                                          floor=cfg.projection_floor, min_depth=cfg.min_depth, eps=eps)

    def _rotations(self, n: int, Y: torch.Tensor | None = None, level: bool = False):
        """``n`` random rotations of the step. With ``rotation_axis = "estimated"`` and the lifted
        poses ``Y``, the azimuth turns about the world's vertical as estimated from the batch (the
        mean torso tilt of the lifts: the camera's elevation), not about the camera's y axis.
        ``level``: the same azimuths (the same stream) without the elevation offsets."""
        cfg = self.cfg
        # after a collapse_guard rollback the steps repeat: a fresh stream (2^32 steps further on)
        offset = ((self.step + self.rollbacks * 2**32) * self.world_size + self.rank) * n
        az_range, el_range = cfg.azimuth_rad, cfg.elevation_rad
        if cfg.rotation_warmup:  # the ranges widen from near the input's own view
            f = cfg.rotation_warmup_start
            s = min(1.0, f + (1.0 - f) * self.step / cfg.rotation_warmup)
            az_range, el_range = tuple(a * s for a in az_range), tuple(e * s for e in el_range)
        if cfg.elevation_anneal:  # the elevation range shrinks to the input's own elevation
            s = min(1.0, max(0.0, (self.step - cfg.elevation_anneal_start) / cfg.elevation_anneal))
            el_range = tuple(e * (1.0 - s) for e in el_range)
        if level:
            el_range = (0.0, 0.0)
        if cfg.rotation_axis == "camera" or cfg.rotation_distribution != "uniform":
            return geo.sample_rotations(n, az_range, el_range, seed=cfg.seed, offset=offset,
                                        distribution=cfg.rotation_distribution, device=self.device)
        az, el = geo.sample_angles(n, az_range, el_range, seed=cfg.seed, offset=offset, device=self.device)
        with self._fp32():  # the step's autocast would compose the rotations in bf16/fp16
            cam = 0.0
            if Y is not None and self._torso is not None:
                cam = geo.torso_tilt(Y.detach().float(), *self._torso).mean()
            return geo.rotations_about_vertical(az, el, cam).contiguous()

    def _update(self, key: str, loss: torch.Tensor, module: torch.nn.Module, opt, clip: float = 0.0):
        scaler = self.scalers[key]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        self._allreduce_grads(module)
        if clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        scaler.step(opt)
        scaler.update()

    # -------------------------------------------------------------------------- steps
    def _augment(self, batch: dict) -> dict:
        """Mirror a random half of the batch: x -> -x and left/right joints swapped (3D: X -> -X)."""
        if not self.cfg.flip_augment:
            return batch
        x = batch["keypoints_2d"]
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        out = dict(batch)
        m3 = torch.tensor([-1.0, 1.0, 1.0], device=x.device)
        # a pose's partner frames are mirrored with it, so that its left bones meet their left bones
        for key, mirror in (("keypoints_2d", self._mirror_x), ("keypoints_2d_prev", self._mirror_x),
                            ("keypoints_2d_partner", self._mirror_x), ("confidence", None),
                            ("confidence_prev", None), ("confidence_partner", None), ("keypoints_3d", m3)):
            if key not in batch:
                continue
            v = batch[key]
            f = v[:, self._flip_perm]
            if mirror is not None:
                f = f * mirror
            fl = flip.repeat(v.shape[0] // flip.shape[0])  # K partners per pose, partner-major
            out[key] = torch.where(fl.view(-1, *([1] * (v.dim() - 1))), f, v)
        return out

    def unsupervised_step(self, batch: dict) -> dict:
        """One generator step of the cycle, with its discriminator update(s). Returns detached losses."""
        cfg = self.cfg
        batch = self._augment(batch)
        x = batch["keypoints_2d"]
        conf = batch["confidence"]
        x = torch.where(conf[..., None] > 0, x, torch.zeros_like(x))
        B = x.shape[0]
        prev = batch.get("keypoints_2d_prev") if (self.temporal or self.use_bone_temporal) else None
        if prev is not None and "confidence_prev" in batch:
            prev = torch.where(batch["confidence_prev"][..., None] > 0, prev, torch.zeros_like(prev))
        # the partners are lifted only while their cue counts (not before bone_sequence_start)
        partner = batch.get("keypoints_2d_partner") if self.use_bone_sequence and self._w_bone_sequence() > 0 else None
        if partner is not None:
            partner = torch.where(batch["confidence_partner"][..., None] > 0, partner, torch.zeros_like(partner))

        warm = self.step < cfg.d_warmup and self.use_d  # discriminator warm-up: the lifter waits
        # 1-3 run in one autocast region (when amp is on) so the lifter's weights are cast once
        with self._autocast(), (torch.no_grad() if warm else contextlib.nullcontext()):
            # 1. lift (the previous frames and the sequence partners ride along in the same forward)
            extra = [t for t in (prev, partner) if t is not None]
            Y_all = self._lift(torch.cat([x, *extra], 0)) if extra else self._lift(x)
            Y = Y_all[:B]
            Y_prev = Y_all[B:2 * B] if prev is not None else None
            Y_partner = Y_all[B + (B if prev is not None else 0):] if partner is not None else None
            # 2. rotate, project, re-normalise; with cycle_views K each pose gets K random views,
            #    stacked view-major, and the discriminators see the first B (view 0)
            need_cycle = ((cfg.use_l2d and cfg.w_2d > 0) or (cfg.use_l3d and (cfg.w_3d > 0 or cfg.w_3d_final > 0))) and not warm
            K = cfg.cycle_views if need_cycle else 1
            R = self._rotations(K * B, Y)
            tile = (lambda t: t.repeat(K, *([1] * (t.dim() - 1)))) if K > 1 else (lambda t: t)
            y_fake_all, Y_rot, _ = self._project(tile(Y), R)
            y_fake_all = torch.where(tile(conf)[..., None] > 0, y_fake_all, torch.zeros_like(y_fake_all))
            y_fake = y_fake_all[:B]
            R_adv = R[:B]
            if cfg.adv_level_views:  # D judges the same azimuths at the data's own elevation
                R_adv = self._rotations(K * B, Y, level=True)[:B]
                y_fake, _, _ = self._project(Y, R_adv)
                y_fake = torch.where(conf[..., None] > 0, y_fake, torch.zeros_like(y_fake))
            # 3. re-lift, rotate back
            out = {}
            if need_cycle:
                Y_re = self._lift(y_fake_all)
                w = tile(conf) if cfg.use_confidence else None
                with self._fp32():  # rotate back, re-project, both losses: one fused op
                    # 'detached': the re-lift regresses onto the rotated lift, which L_3D cannot move
                    target = Y_rot.detach() if cfg.l3d_target == "detached" else Y_rot
                    l2d, l3d = geo.cycle_reprojection_loss(tile(x), Y_re, R, target, weights=w, kind=cfg.consistency,
                                                           c=cfg.c, root=self.root, head=self.head,
                                                           floor=cfg.projection_floor, min_depth=cfg.min_depth)
            else:
                l2d = l3d = torch.zeros((), device=self.device)

        # 4. discriminator updates on detached fakes
        if self.use_d:
            yf = y_fake.detach()
            for _ in range(cfg.d_steps):
                out.update(self._d_update(x, yf))
            if self.temporal:
                y_prev_fake, _, _ = self._project(Y_prev, R_adv)
                pf = y_prev_fake.detach()
                out.update(self._t_update(x, prev, yf, pf))

        if warm:
            return out
        # 5. lifter update
        ramp = min(1.0, (self.step + 1) / cfg.consistency_warmup) if cfg.consistency_warmup else 1.0
        loss = torch.zeros((), device=self.device)
        if cfg.use_l2d:
            loss = loss + cfg.w_2d * ramp * l2d
        if cfg.use_l3d:
            loss = loss + self._w_3d() * ramp * l3d
        if self.use_d:
            gain = self._adv_gain(out.get("d_acc"))
            with self._frozen(self.disc), self._autocast():
                adv = L.g_loss(cfg.gan_loss, self.d_fwd(self._d_noise(y_fake)))
            loss = loss + cfg.w_adv * gain * adv
            out["loss_adv"] = adv.detach()
            if self.temporal:
                with self._frozen(self.tdisc), self._autocast():
                    lt = L.g_loss(cfg.gan_loss, self.t_fwd(self._d_noise(y_fake), self._d_noise(y_prev_fake)))
                loss = loss + cfg.w_temporal * gain * lt
                out["loss_t"] = lt.detach()
        if self.flow is not None:
            # the frozen flow's NLL of the re-projections; poses with a missing joint are left out
            # (the flow models complete poses; missing joints sit at the root)
            full = (conf > 0).all(-1).float()
            with self._frozen(self.flow), self._fp32():
                nll = capped_nll(self.flow.nll(y_fake.float()), cfg.flow_nll_cap)
            lf = (nll * full).sum() / full.sum().clamp_min(1.0)
            loss = loss + cfg.w_flow * lf
            out["loss_flow"] = lf.detach()
        # cues on the lift (bone lengths, depth extent); their weighted sum is logged as loss_bone
        cues = torch.zeros((), device=self.device)
        if cfg.w_bone_sym > 0 and self._sym is not None:
            cues = cues + cfg.w_bone_sym * L.bone_symmetry_loss(Y, *self._sym)
        if self.use_bone_temporal and Y_prev is not None:
            ok = (batch["confidence"] > 0) & (batch["confidence_prev"] > 0) if "confidence_prev" in batch else None
            cues = cues + cfg.w_bone_temporal * L.bone_constancy_loss(Y, Y_prev, self._bone_child, self._bone_parent,
                                                                      valid=ok)
        if Y_partner is not None:
            # bones with a missing end in either frame are left out
            K = Y_partner.shape[0] // B
            ok = (batch["confidence"] > 0).repeat(K, 1) & (batch["confidence_partner"] > 0)
            cues = cues + self._w_bone_sequence() * L.bone_log_ratio_loss(
                Y.repeat(K, 1, 1), Y_partner, self._bone_child, self._bone_parent, valid=ok)
        if cfg.w_depth_extent > 0:
            cues = cues + cfg.w_depth_extent * L.depth_extent_loss(Y, self.root, cfg.depth_extent_margin)
        knee = cfg.w_knee_hinge > 0 and self._legs is not None and self.step >= cfg.knee_hinge_start
        if knee:
            lk = L.knee_hinge_loss(Y, self._legs, self._hips, cfg.knee_hinge_margin, valid=batch["confidence"] > 0)
            cues = cues + cfg.w_knee_hinge * lk
            out["loss_knee"] = lk.detach()
        if cfg.w_bone_sym > 0 or self.use_bone_temporal or cfg.w_depth_extent > 0 or Y_partner is not None or knee:
            loss = loss + cues
            out["loss_bone"] = cues.detach()
        self._update("g", loss, self.lifter, self.opt_g, cfg.grad_clip)
        self._update_ema()
        out.update(loss_g=loss.detach(), loss_2d=l2d.detach(), loss_3d=l3d.detach(),
                   depth_stretch=L.depth_stretch(Y, self.root))
        if cfg.adv_balance_target and self.use_d:
            out["adv_gain"] = torch.tensor(self.adv_gain)
        return out

    def _w_bone_sequence(self) -> float:
        """This step's weight of the sequence bone-length cue: 0 before ``bone_sequence_start``,
        then rising linearly to ``w_bone_sequence`` over ``bone_sequence_ramp`` steps."""
        cfg = self.cfg
        t = self.step - cfg.bone_sequence_start
        if t < 0:
            return 0.0
        return cfg.w_bone_sequence * (min(1.0, (t + 1) / cfg.bone_sequence_ramp) if cfg.bone_sequence_ramp else 1.0)

    def _adv_gain(self, d_acc) -> float:
        """The adversarial weights' multiplier of this step (``adv_balance_target``): log(gain)
        moves by ``rate * (accuracy - target)``, so the lifter listens harder to the
        discriminators while D is winning and less while it is not, within
        ``adv_balance_range``. 1 when off. Logged as ``adv_gain``."""
        cfg = self.cfg
        if not cfg.adv_balance_target or d_acc is None:
            return 1.0
        lo, hi = cfg.adv_balance_range
        acc = self._process_mean(d_acc)  # one gain for all processes
        g = self.adv_gain * math.exp(cfg.adv_balance_rate * (acc - cfg.adv_balance_target))
        self.adv_gain = min(hi, max(lo, g))
        return self.adv_gain

    def _process_mean(self, value) -> float:
        """``value`` (a scalar or 0-d tensor) averaged over the processes: decisions taken from
        batch statistics (the adversarial gain, the collapse guard) must agree on every replica."""
        v = torch.as_tensor(value, dtype=torch.float32, device=self.device).clone()
        if self.distributed:
            dist.all_reduce(v)
            v /= self.world_size
        return float(v)

    def _w_3d(self) -> float:
        """The L_3D weight of this step: w_3d, or on the way from w_3d to w_3d_final."""
        cfg = self.cfg
        if not cfg.w_3d_final:
            return cfg.w_3d
        since = self.step - cfg.w_3d_ramp_start
        if since < 0:
            return cfg.w_3d
        t = min(1.0, since / cfg.w_3d_ramp) if cfg.w_3d_ramp else 1.0
        return cfg.w_3d + (cfg.w_3d_final - cfg.w_3d) * t

    @contextlib.contextmanager
    def _frozen(self, module):
        flags = [p.requires_grad for p in module.parameters()]
        for p in module.parameters():
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, f in zip(module.parameters(), flags):
                p.requires_grad_(f)

    def _d_update(self, real: torch.Tensor, fake: torch.Tensor) -> dict:
        """One update of D on real against fake poses (one forward over both). With
        ``d_flip_negatives`` the real poses mirrored in x, labels kept (projections of
        chirality-flipped people, i.e. of depth-mirrored lifts), are extra fakes: D learns
        chirality from 2D data alone."""
        cfg = self.cfg
        B = real.shape[0]
        (real_in,), r1 = self._real_inputs(real)
        parts = [real_in, self._d_noise(fake)]
        if cfg.d_flip_negatives > 0:
            parts.append(self._d_noise(real * self._mirror_x))
        if cfg.d_bend_negatives > 0 and self._limbs is not None:
            bent, bent_ok = self._bend_flip(real)
            parts.append(self._d_noise(bent))
        with self._autocast():
            o = self.d_fwd(torch.cat(parts, 0)).float()
        o_real, o_fake = o[:B], o[B:2 * B]
        loss = L.d_loss(cfg.gan_loss, o_real, o_fake, cfg.label_smoothing)
        out = {}
        if r1:
            pen = self._r1_penalty(self.d_fwd, (real_in,), o_real)
            loss = loss + self._r1_weight() * pen
            out["loss_r1"] = pen.detach()
        k = 2 * B
        if cfg.d_flip_negatives > 0:
            loss = loss + cfg.d_flip_negatives * L.d_fake_term(cfg.gan_loss, o[k:k + B])
            k += B
        if cfg.d_bend_negatives > 0 and self._limbs is not None:
            loss = loss + cfg.d_bend_negatives * L.d_fake_term(cfg.gan_loss, o[k:k + B], bent_ok)
        if cfg.gan_loss == "wgan-gp":
            loss = loss + cfg.gp_weight * L.gradient_penalty(self.d_fwd, real, fake)
        acc = L.d_accuracy(cfg.gan_loss, o_real.detach(), o_fake.detach())
        if self._d_may_update(acc):
            self._update("d", loss, self.disc, self.opt_d)
        out.update(loss_d=loss.detach(), d_acc=acc)
        if cfg.d_flip_negatives > 0:
            out["d_flip_acc"] = L.d_accuracy(cfg.gan_loss, o_real.detach(), o[2 * B:3 * B].detach())
        return out

    def _d_may_update(self, acc) -> bool:
        """d_acc_cap: a discriminator updates unless its batch accuracy exceeds the cap. The
        processes decide on their mean accuracy, all together: an update all-reduces the
        gradients, so one process skipping while another updates would leave that one waiting."""
        cap = self.cfg.d_acc_cap
        return cap >= 1.0 or self._process_mean(acc) <= cap

    def _d_noise(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus Gaussian noise of std ``d_input_noise`` (instance noise: real and fake
        distributions overlap, so D's gradients stay informative); ``x`` itself when off."""
        s = self.cfg.d_input_noise
        return x + s * torch.randn_like(x) if s > 0 else x

    def _real_inputs(self, *xs: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], bool]:
        """The real poses a discriminator update sees (with instance noise), and whether the R1
        penalty is due this step; when it is (and is taken over the whole batch, ``d_r1_samples``
        0), they are leaves that require grad."""
        cfg = self.cfg
        r1 = cfg.d_r1 > 0 and self.step % cfg.d_r1_every == 0 and self._r1_weight() > 0
        xs = tuple(self._d_noise(x) for x in xs)
        if r1 and not cfg.d_r1_samples:
            xs = tuple(x.detach().requires_grad_(True) for x in xs)
        return xs, r1

    def _r1_penalty(self, fwd, real_in: tuple, o_real: torch.Tensor) -> torch.Tensor:
        """R1 at the real poses: from the update's own forward (``o_real``) or, with
        ``d_r1_samples`` n, from a forward of its own over the first n of them: the double backward
        then runs over n poses instead of the whole real, fake and negative batch (the default's
        step took 0.37 s with 64, 0.60 s over the batch, 0.29 s without R1)."""
        n = self.cfg.d_r1_samples
        if n:
            real_in = tuple(x[:n].detach().requires_grad_(True) for x in real_in)
            with self._autocast():
                o_real = fwd(*real_in).float()
        return L.r1_penalty(o_real, real_in if len(real_in) > 1 else real_in[0], 1.0 / self.cfg.c)

    def _r1_weight(self) -> float:
        """0.5 d_r1, times d_r1_every: a lazy penalty applied every K-th step is weighted by K;
        with ``d_r1_until``, fading to 0 over ``d_r1_fade`` steps and 0 from that step on."""
        cfg = self.cfg
        fade = 1.0
        if cfg.d_r1_until:
            left = cfg.d_r1_until - self.step
            fade = 0.0 if left <= 0 else min(1.0, left / cfg.d_r1_fade) if cfg.d_r1_fade else 1.0
        return 0.5 * cfg.d_r1 * cfg.d_r1_every * fade

    def _leg_triples(self):
        """((L, 3) (hip, knee, ankle) triples, (right hip, left hip)) for the knee-hinge cue, or
        (None, None) when the layout lacks a leg's joints or the hips."""
        c = self.layout.canonical
        legs = [[c.index(f"{s}_{n}") for n in ("hip", "knee", "ankle")] for s in ("r", "l")
                if all(f"{s}_{n}" in c for n in ("hip", "knee", "ankle"))]
        if not legs or "r_hip" not in c or "l_hip" not in c:
            return None, None
        return torch.tensor(legs, dtype=torch.long, device=self.device), (c.index("r_hip"), c.index("l_hip"))

    def _limb_triples(self):
        """(upper, middle, end) joint triples of the knees and elbows the layout has."""
        lay = self.layout
        out = []
        for side in ("l", "r"):
            for a, b, c in (("hip", "knee", "ankle"), ("shoulder", "elbow", "wrist")):
                names = [f"{side}_{a}", f"{side}_{b}", f"{side}_{c}"]
                if all(n in lay.canonical for n in names):
                    out.append([lay.canonical.index(n) for n in names])
        return torch.tensor(out, dtype=torch.long, device=self.device) if out else None

    def _bend_flip(self, x: torch.Tensor, min_bend: float = 0.25):
        """Each pose with one random knee or elbow bent the other way in the image: the end joint
        reflected across the line of the upper limb. Returns (poses, mask of poses whose chosen
        joint was bent by more than ``min_bend`` (sine of the 2D angle) and so really changed)."""
        B = x.shape[0]
        pick = self._limbs[torch.randint(len(self._limbs), (B,), device=x.device)]   # (B, 3)
        ar = torch.arange(B, device=x.device)
        a, b, c = x[ar, pick[:, 0]], x[ar, pick[:, 1]], x[ar, pick[:, 2]]
        u = b - a
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        v = c - b
        v_ref = 2 * (v * u).sum(-1, keepdim=True) * u - v
        sin = (u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]).abs() / v.norm(dim=-1).clamp_min(1e-6)
        out = x.clone()
        out[ar, pick[:, 2]] = b + v_ref
        return out, sin > min_bend

    def _t_update(self, x, prev, yf, pf) -> dict:
        """One update of the temporal discriminator: real (x_t, x_t-k) against fake pairs."""
        cfg = self.cfg
        B = x.shape[0]
        (x_in, prev_in), r1 = self._real_inputs(x, prev)
        with self._autocast():
            o = self.t_fwd(torch.cat([x_in, self._d_noise(yf)], 0), torch.cat([prev_in, self._d_noise(pf)], 0)).float()
        o_real, o_fake = o[:B], o[B:]
        loss = L.d_loss(cfg.gan_loss, o_real, o_fake, cfg.label_smoothing)
        if r1:
            loss = loss + self._r1_weight() * self._r1_penalty(self.t_fwd, (x_in, prev_in), o_real)
        if cfg.gan_loss == "wgan-gp":
            gp = L.gradient_penalty(self.t_fwd, x, yf, None, prev, extra_fake=(pf,))
            loss = loss + cfg.gp_weight * gp
        acc = L.d_accuracy(cfg.gan_loss, o_real.detach(), o_fake.detach())
        if self._d_may_update(acc):
            self._update("t", loss, self.tdisc, self.opt_t)
        return {"loss_dt": loss.detach(), "dt_acc": acc}

    def supervised_step(self, batch: dict) -> dict:
        """The upper reference: the same lifter regressed onto depth offsets derived from 3D labels."""
        cfg = self.cfg
        batch = self._augment(batch)
        x, conf = batch["keypoints_2d"], batch["confidence"]
        x = torch.where(conf[..., None] > 0, x, torch.zeros_like(x))
        target = supervised_targets(x, batch["keypoints_3d"], cfg.c + cfg.min_depth, self.root)
        target = (target - self.lifter.out_mean) / self.lifter.out_std
        with self._autocast():
            pred = self.g_fwd(x)
        pred = (pred.float() - self.lifter.out_mean) / self.lifter.out_std
        w = (conf > 0).float()
        loss = (((pred - target) ** 2) * w).sum() / w.sum().clamp_min(1)
        self._update("g", loss, self.lifter, self.opt_g, cfg.grad_clip)
        self._update_ema()
        return {"loss_sup": loss.detach(), "loss_g": loss.detach()}

    # ------------------------------------------------------------------------- validation
    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 8192, root_relative: bool = True) -> torch.Tensor:
        """Root-relative 3D poses (N, J, 3) of normalised 2D poses, lifter in eval mode (with
        ``root_relative=False`` the lifts in the camera frame, each joint on its ray)."""
        g = self.eval_lifter
        was = g.training
        g.eval()
        outs = []
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch].to(self.device)
            with self._autocast():
                d = g(xb)
            with self._fp32():
                Y = geo.lift_to_3d(xb, d.float(), c=self.cfg.c, floor=self.cfg.depth_floor, min_depth=self.cfg.min_depth)
            outs.append((Y - Y[:, self.root:self.root + 1] if root_relative else Y).float().cpu())
        g.train(was)
        return torch.cat(outs) if outs else torch.zeros(0, self.J, 3)

    def evaluate(self, ev: EvalSet, groups=None) -> dict:
        """``pose_metrics`` of the lifts of ``ev``; with ``groups`` ((N,) person labels) also
        ``p_mpjpe_refined`` and ``n_mpjpe_refined``: the same lifts with one set of bone
        proportions per person (:func:`fastlift.evaluation.refine.refine_bone_lengths`)."""
        if groups is None:
            return pose_metrics(self.predict(ev.x), ev.target, ev.x, root=self.root)
        from fastlift.evaluation.refine import refine_bone_lengths
        Y = self.predict(ev.x, root_relative=False)
        out = pose_metrics(Y - Y[:, self.root:self.root + 1], ev.target, ev.x, root=self.root)
        R = refine_bone_lengths(Y, groups, self.layout.parents, valid=ev.conf > 0)
        ref = pose_metrics(R - R[:, self.root:self.root + 1], ev.target, ev.x, root=self.root)
        out.update(p_mpjpe_refined=ref["p_mpjpe"], n_mpjpe_refined=ref["n_mpjpe"])
        return out

    def validate(self) -> dict:
        if self.val_set is None or self.rank != 0:
            return {}
        m = self.evaluate(self.val_set)
        self.last_val = {f"val_{k}": v for k, v in m.items()}
        return self.last_val

    # ------------------------------------------------------------------------- the loop
    def fit(self, stop_at: int | None = None) -> dict:
        """Train until ``cfg.steps`` (or ``stop_at``, for tests), the time budget, or a signal.

        Returns a summary dict (also written to ``summary.json``): steps done, wall time, why it
        stopped, the last and best validation metrics and the test metrics.
        """
        cfg = self.cfg
        target = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
        if self.flow is not None and not bool(self.flow.trained):
            self._train_flow()
        self._handlers = self._install() if self._install_signals else None
        csv_path = os.path.join(self.out, "metrics.csv")
        writer, fh = self._open_csv(csv_path) if self.rank == 0 else (None, None)
        tb = self._tensorboard() if self.rank == 0 else None
        bar = None
        if cfg.progress and self.rank == 0:
            from tqdm.auto import tqdm
            bar = tqdm(total=target, initial=self.step, desc=cfg.mode, dynamic_ncols=True, mininterval=1.0,
                       file=sys.stderr)
        t_start = time.perf_counter() - self.elapsed
        t_ckpt = time.perf_counter()
        acc: dict = {}
        n_acc = 0
        t_log, s_log = time.perf_counter(), self.step
        reason = "steps"
        step_fn = self.supervised_step if cfg.mode == "supervised" else self.unsupervised_step
        self.lifter.train()
        self.disc.train()
        self.tdisc.train()
        it = self._iterate()
        if cfg.collapse_guard and self.use_d:
            self._first_snapshot = copy.deepcopy(self.state_dict())
        if self.step == 0 and self.val_set is not None:
            self._log_val(writer, tb, bar)
        try:
            while self.step < target:
                batch = next(it)
                out = step_fn(batch)
                for k, v in out.items():
                    acc[k] = acc.get(k, 0.0) + v
                n_acc += 1
                self.step += 1
                with warnings.catch_warnings():  # the lifter's optimiser has not stepped during d_warmup
                    warnings.simplefilter("ignore", UserWarning)
                    for k in self._active_scheds:
                        self.scheds[k].step()
                if bar is not None:
                    bar.update(1)
                if cfg.collapse_guard and self.use_d and self._guard(out.get("d_acc"), out.get("depth_stretch")):
                    it = self._iterate()           # the loader was rewound with the rest
                    if bar is not None:
                        bar.n = self.step
                        bar.refresh()
                    acc, n_acc, t_log, s_log = {}, 0, time.perf_counter(), self.step
                    continue
                if cfg.sign_check and self.use_d and self.step >= cfg.sign_check_start \
                        and self.step % cfg.sign_check_every == 0:
                    self._sign_check(batch)
                if self.step % cfg.log_every == 0 or self.step == target:
                    now = time.perf_counter()
                    row = {k: float(v) / n_acc for k, v in acc.items()}
                    if self._sign_margin is not None:
                        row.update(sign_margin=self._sign_margin, sign_flips=self.sign_flips)
                        self._sign_margin = None
                    row["samples_per_s"] = (self.step - s_log) * cfg.batch_size * self.world_size / max(now - t_log, 1e-9)
                    self._write_row(writer, fh, tb, row)
                    if bar is not None:
                        bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss_g", "loss_d", "d_acc") if k in row}
                                        | ({"val": f"{self.last_val['val_p_mpjpe']:.1f}"} if self.last_val else {}))
                    acc, n_acc, t_log, s_log = {}, 0, now, self.step
                epoch_end = getattr(self, "_epoch_ended", False)
                self._epoch_ended = False
                if (cfg.val_every and self.step % cfg.val_every == 0) or (not cfg.val_every and epoch_end):
                    self._log_val(writer, tb, bar)
                self.elapsed = time.perf_counter() - t_start
                stop = self._should_stop(t_start)
                if stop:
                    reason = stop
                    break
                due = (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or \
                      (cfg.ckpt_minutes and time.perf_counter() - t_ckpt > 60 * cfg.ckpt_minutes)
                if due and self.step < target:
                    self.save("last")
                    t_ckpt = time.perf_counter()
        finally:
            if bar is not None:
                bar.close()
        self.elapsed = time.perf_counter() - t_start
        self._check_replicas()
        if self.val_set is not None and self._val_step != self.step:
            self._log_val(writer, tb, None)
        self.save("last")
        if fh is not None:
            fh.close()
        if tb is not None:
            tb.close()
        self._restore_signals()
        summary = {"steps": self.step, "train_seconds": round(self.elapsed, 1), "stopped_by": reason, "amp": self.amp,
                   "interrupted": reason.startswith("signal"), "out": self.out,
                   "last_val": {k: v for k, v in self.last_val.items() if not k.startswith("_")}, "best": self.best}
        if reason in ("steps", "time") and self.rank == 0:
            summary["test"] = self.test()
        if self.rank == 0 and cfg.plots:
            summary["plots"] = self.plots(csv_path)
        if self.rank == 0:
            atomic_write(os.path.join(self.out, "summary.json"), lambda f: json.dump(summary, f, indent=1), "w")
        if self.distributed:
            dist.barrier()
        return summary

    def _guard(self, d_acc, stretch=None) -> bool:
        """collapse_guard, after each step: keep the last two healthy snapshots (every
        ``guard_window`` steps, while D's window-mean accuracy is below ``guard_acc``), and when
        that mean exceeds ``guard_acc`` restore the older one (networks, optimisers, schedules,
        data position; not the random state or the clock) with a fresh rotation stream; the run's
        first state instead when there is no snapshot yet or the last rollback to that snapshot
        collapsed again. With ``guard_stretch`` the window-mean depth stretch of the lifts must
        exceed it too. Returns True when it rolled back. Processes decide together (their mean
        accuracy and stretch)."""
        cfg = self.cfg
        if d_acc is None:
            return False
        self._acc_window = (self._acc_window + [self._process_mean(d_acc)])[-cfg.guard_window:]
        full = len(self._acc_window) == cfg.guard_window
        mean = sum(self._acc_window) / len(self._acc_window)
        stretched = True
        if cfg.guard_stretch > 0 and stretch is not None:
            self._stretch_window = (self._stretch_window + [self._process_mean(stretch)])[-cfg.guard_window:]
            stretched = sum(self._stretch_window) / len(self._stretch_window) > cfg.guard_stretch
        collapsed = full and mean > cfg.guard_acc and stretched
        if collapsed and self._first_snapshot is not None and self.rollbacks < cfg.guard_max_rollbacks:
            # the older healthy snapshot; the run's first state when there is none, or when the
            # last rollback went to that same snapshot and collapsed again from it
            target = self._snapshots[0] if self._snapshots else self._first_snapshot
            if target["step"] == self._last_rollback_to:
                target = self._first_snapshot
            snap = copy.deepcopy(target)
            self._last_rollback_to = snap["step"]
            # keep only snapshots older than the state now restored
            self._snapshots = [] if target is self._first_snapshot else self._snapshots[:1]
            from_step = self.step
            snap["rng"], snap["elapsed"], snap["best"] = rng_state(), self.elapsed, dict(self.best)
            snap["rollbacks"] = self.rollbacks + 1        # the count survives the restore
            snap["sign_flips"], snap["mirror_wins"] = self.sign_flips, 0
            self._restore(snap)
            self._acc_window, self._stretch_window = [], []
            self.log(f"collapse guard: D accuracy {mean:.2f} over the last {cfg.guard_window} steps at step "
                     f"{from_step}; rolled back to step {self.step} with a fresh rotation stream "
                     f"(rollback {self.rollbacks} of at most {cfg.guard_max_rollbacks})")
            return True
        # snapshots only while D's accuracy is below the threshold, whatever the stretch: a state
        # with a winning D is not healthy enough to return to, even if it is not yet a collapse
        if self.step % cfg.guard_window == 0 and (not full or mean < cfg.guard_acc):
            self._snapshots = (self._snapshots + [copy.deepcopy(self.state_dict())])[-2:]
        return False

    @torch.no_grad()
    def _sign_check(self, batch: dict) -> bool:
        """sign_check, after a step: D's mean logit for the re-projections of the lifts of
        ``batch`` minus that for their depth mirrors (the depth offsets negated), under one set of
        the step's kind of random rotation. The mirror of a depth-flipped lift is the right-signed
        one, and a D that has learned chirality tells the two apart, so the mirrors winning
        ``sign_check_patience`` checks in a row means the lifter sits in the mirrored basin: the
        depth head (its last layer and output shift; the moving average's too; Adam's first
        moments) is negated, which mirrors every lift at once. Processes decide together. Returns
        True when it negated the head."""
        cfg = self.cfg
        x = batch["keypoints_2d"]
        x = torch.where(batch["confidence"][..., None] > 0, x, torch.zeros_like(x))
        was_training = self.lifter.training
        self.lifter.eval()
        with self._autocast():
            d = self.g_fwd(x).float()
        self.lifter.train(was_training)
        with self._fp32():
            Y = geo.lift_to_3d(x, d, c=cfg.c, floor=cfg.depth_floor, min_depth=cfg.min_depth)
            Y_m = geo.lift_to_3d(x, -d, c=cfg.c, floor=cfg.depth_floor, min_depth=cfg.min_depth)
            R = self._rotations(x.shape[0], Y, level=cfg.adv_level_views)  # the views D judges
            y, _, _ = self._project(Y, R)
            y_m, _, _ = self._project(Y_m, R)
        with self._autocast():
            o = self.d_fwd(torch.cat([y, y_m], 0)).float().reshape(-1)
        B = x.shape[0]
        margin = self._process_mean(o[:B].mean() - o[B:].mean())
        self._sign_margin = margin
        self._mirror_wins = self._mirror_wins + 1 if margin < 0 else 0
        if self._mirror_wins < cfg.sign_check_patience:
            return False
        self._negate_depth_head()
        self.sign_flips += 1
        self._mirror_wins = 0
        # the guard's window and snapshots describe the mirrored lifter: start them afresh
        self._acc_window, self._stretch_window, self._snapshots = [], [], []
        self.log(f"sign check: D preferred the depth mirrors of the lifts {cfg.sign_check_patience} checks in a row "
                 f"(margin {margin:.3f} at step {self.step}); negated the lifter's depth head (flip {self.sign_flips})")
        return True

    @torch.no_grad()
    def _negate_depth_head(self):
        """d -> -d for every input: the head's weight and bias and the output shift change sign
        (the output scale does not); the moving average follows, and so do Adam's first moments
        of the head (its second moments are even in the sign)."""
        heads = [self.lifter.net.head] + ([self.lifter_ema.net.head] if self.lifter_ema is not None else [])
        for head in heads:
            head.weight.neg_()
            head.bias.neg_()
        for m in (self.lifter, self.lifter_ema):
            if m is not None:
                m.out_mean.neg_()
        for p in (self.lifter.net.head.weight, self.lifter.net.head.bias):
            st = self.opt_g.state.get(p, {})
            if "exp_avg" in st:
                st["exp_avg"].neg_()

    def _train_flow(self):
        """Fit the flow prior on the training poses before the lifter's first step; its time counts
        in the run's elapsed time (and so in ``max_minutes``). Every process fits the same flow from
        the same seed; rank 0's is broadcast so the replicas agree bitwise."""
        cfg = self.cfg
        x, conf, _ = normalized_2d(self.data.train, self.root, self.head, cfg.c)
        # conf may be the data set's own read-only array: copied, not shared
        poses = flow_training_poses(torch.from_numpy(x), torch.tensor(conf),
                                    self.layout.flip_index if cfg.flip_augment else None).to(self.device)
        try:
            info = train_pose_flow(self.flow, poses, cfg.flow_steps, cfg.flow_batch_size, cfg.flow_lr, cfg.flow_noise, seed=cfg.seed,
                                   progress=cfg.progress and self.rank == 0, log=self.log)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.distributed:
            for t in list(self.flow.parameters()) + list(self.flow.buffers()):
                dist.broadcast(t.data, src=0)
        self.elapsed += info["seconds"]

    def plots(self, csv_path: str) -> list[str]:
        """Draw ``curves.png`` (every column of metrics.csv against the step) and, with a
        3D-labelled validation set in the h36m17 layout, ``val_samples.png`` (six validation lifts,
        Procrustes-aligned over the ground truth) into the run directory. Pictures are a courtesy:
        without matplotlib (the ``viz`` extra) or on a drawing error the run is still complete, and
        the reason is logged. Returns the paths written."""
        try:
            from fastlift.evaluation import render
            render._plt()
        except Exception as e:  # noqa: BLE001  (ImportError, or matplotlib's own backend errors)
            self.log(f"plots skipped ({e}); pip install 'fastlift[viz]' for curves.png and val_samples.png")
            return []
        written = []
        try:
            written.append(render.plot_training_curves(csv_path, os.path.join(self.out, "curves.png"),
                                                       title=f"{self.cfg.mode} training: {self.out}"))
            ev = self.val_set
            if ev is not None and len(ev) and self.layout.name == "h36m17":
                idx = np.linspace(0, len(ev) - 1, min(6, len(ev))).round().astype(np.int64)
                pred = self.predict(ev.x[idx]).numpy()
                written.append(render.render_validation_sample(
                    pred, ev.target[idx].numpy(), ev.x[idx].numpy(), os.path.join(self.out, "val_samples.png"),
                    indices=range(len(idx)), title=f"validation lifts at step {self.step} (colour) over ground truth (dashed)"))
        except Exception as e:  # noqa: BLE001  (a picture must never cost a finished run)
            self.log(f"plots: drawing failed ({type(e).__name__}: {e}); the run itself is complete")
        for pth in written:
            self.log(f"wrote {pth}")
        return written

    def _iterate(self):
        while True:  # the loader moves itself to the next epoch after its last batch
            for batch in self.loader:
                yield batch
            self.epoch = self.loader.epoch
            self._epoch_ended = True

    def _should_stop(self, t_start) -> str | None:
        reason = None
        if self._signal is not None:
            reason = f"signal {self._signal}"
        elif self.cfg.max_minutes and time.perf_counter() - t_start > 60 * self.cfg.max_minutes:
            reason = "time"
        if self.distributed:  # every process must stop at the same step
            flag = torch.tensor([0 if reason is None else (2 if reason.startswith("signal") else 1)])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            reason = {0: None, 1: "time", 2: reason or "signal (other rank)"}[int(flag)]
        return reason

    def test(self) -> dict:
        """Score the final lifter on the full test set (and the full validation set when no test);
        with ``refine_bones`` and a set that names its people, also the lifts refined to one
        skeleton per person (``p_mpjpe_refined``, ``n_mpjpe_refined``)."""
        from fastlift.evaluation.refine import refine_groups
        res = {}
        groups_of = {}
        for name, ps in (("test", self.data.test), ("val_full", self.data.val if self.data.test is None else None)):
            if ps is None:
                continue
            ev = make_eval_set(ps, self.root, self.head, self.cfg.c, 0, name)
            groups_of[name], how = refine_groups(ps, self.cfg.refine_bones)
            res[name] = self.evaluate(ev, groups_of[name])
            self.log(f"{name} ({len(ev)} poses): " + ", ".join(f"{k} {v:.1f}" for k, v in res[name].items()) + " mm"
                     + (f" (refined: bone lengths {how})" if groups_of[name] is not None else ""))
        if "best.pt" in os.listdir(os.path.join(self.out, "checkpoints")) and self.data.test is not None:
            st = load_checkpoint(os.path.join(self.out, "checkpoints", "best.pt"))
            g = self.eval_lifter
            cur = {k: v.clone() for k, v in g.state_dict().items()}
            g.load_state_dict(st["models"]["lifter_ema" if self.lifter_ema is not None else "lifter"])
            ev = make_eval_set(self.data.test, self.root, self.head, self.cfg.c, 0, "test")
            res["test_best"] = self.evaluate(ev, groups_of.get("test"))
            res["test_best"]["step"] = st["step"]
            g.load_state_dict(cur)
            self.log(f"test, best checkpoint (step {st['step']}): p_mpjpe {res['test_best']['p_mpjpe']:.1f} mm")
        return res

    def _log_val(self, writer, tb, bar):
        """Validate (rank 0) and keep the best checkpoint. A collective call: every process makes it."""
        self._val_step = self.step
        self._average_buffers()
        if self.rank == 0 and self.val_set is not None:
            m = self.validate()
            row = {k: v for k, v in m.items()}
            self._write_row(writer, None, tb, row)
            msg = (f"step {self.step}: val p_mpjpe {m['val_p_mpjpe']:.1f} n_mpjpe {m['val_n_mpjpe']:.1f} "
                   f"mpjpe(scaled) {m['val_mpjpe_scaled']:.1f} flip {m['val_p_mpjpe_flip']:.1f} "
                   f"flat {m['val_p_mpjpe_flat']:.1f} mm")
            (bar.write if bar is not None else self.log)(msg)
            if m["val_p_mpjpe"] < self.best["value"] and self.step > 0:
                self.best = {"metric": "val_p_mpjpe", "value": m["val_p_mpjpe"], "step": self.step}
                self.save("best", sync=False)  # buffers were averaged above; rank 0 alone here
        if self.distributed:
            obj = [self.best]
            dist.broadcast_object_list(obj, src=0)
            self.best = obj[0]

    # ---------------------------------------------------------------------- outputs
    def _open_csv(self, path):
        exists = os.path.isfile(path)
        if exists:  # resumed: drop rows written after the checkpoint we resumed from
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step") and int(float(r["step"])) <= self.step]
        fh = open(path, "w", newline="")
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        if exists:
            w.writerows(rows)
        fh.flush()
        return w, fh

    def _write_row(self, writer, fh, tb, row: dict):
        if writer is None:
            return
        full = {"step": self.step, "epoch": self.epoch, "time_s": round(self.elapsed, 2),
                "lr": self.opt_g.param_groups[0]["lr"]}
        full.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items() if not k.startswith("_")})
        writer.writerow(full)
        if fh is not None:
            fh.flush()
        if tb is not None:
            for k, v in full.items():
                if k not in ("step",) and isinstance(v, (int, float)):
                    tb.add_scalar(k, v, self.step)

    def _tensorboard(self):
        if not self.cfg.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is an optional dependency
            self.log("tensorboard is not installed (pip install tensorboard): metrics go to metrics.csv only")
            return None
        return SummaryWriter(os.path.join(self.out, "tb"))

    # ---------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "config": asdict(self.cfg),
            "step": self.step,
            "epoch": self.epoch,
            "elapsed": self.elapsed,
            "models": {k: m.state_dict() for k, m in self._models().items()},
            "optimizers": {"g": self.opt_g.state_dict(), "d": self.opt_d.state_dict(), "t": self.opt_t.state_dict()},
            "schedulers": {k: s.state_dict() for k, s in self.scheds.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "loader": self.loader.state_dict(),
            "rng": rng_state(),
            "best": dict(self.best),
            "adv_gain": self.adv_gain,
            "rollbacks": self.rollbacks,
            "sign_flips": self.sign_flips,
            "mirror_wins": self._mirror_wins,
            "world_size": self.world_size,
        }

    def save(self, which: str = "last", sync: bool = True) -> str | None:
        """Write ``checkpoints/<which>.pt`` atomically (rank 0). With ``sync`` (a collective call:
        every process must make it) BatchNorm statistics are averaged over processes first."""
        if sync:
            self._average_buffers()
        path = None
        if self.rank == 0:
            path = save_checkpoint(self.state_dict(), os.path.join(self.out, "checkpoints", f"{which}.pt"))
        return path

    def _restore(self, st: dict):
        self._load_models(st["models"])
        self.opt_g.load_state_dict(st["optimizers"]["g"])
        self.opt_d.load_state_dict(st["optimizers"]["d"])
        self.opt_t.load_state_dict(st["optimizers"]["t"])
        for k, s in self.scheds.items():
            s.load_state_dict(st["schedulers"][k])
        for k, s in self.scalers.items():
            s.load_state_dict(st["scalers"][k])
        self.loader.load_state_dict(st["loader"])
        self.step, self.epoch, self.elapsed = st["step"], st["epoch"], st.get("elapsed", 0.0)
        self.best = st.get("best", self.best)
        self.adv_gain = float(st.get("adv_gain", 1.0))
        self.rollbacks = int(st.get("rollbacks", 0))
        self.sign_flips = int(st.get("sign_flips", 0))
        self._mirror_wins = int(st.get("mirror_wins", 0))
        set_rng_state(st["rng"])

    # ---------------------------------------------------------------------- signals
    def _install(self):
        if self.rank != 0 and not self.distributed:
            return None
        try:
            old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

            def handler(signum, frame):
                if self._signal is not None:  # second signal: give up at once
                    raise KeyboardInterrupt
                self._signal = signal.Signals(signum).name
                self.log(f"\n{self._signal}: checkpointing at the end of this step, then stopping "
                         "(send again to abort without a checkpoint)")
            for s in old:
                signal.signal(s, handler)
            return old
        except ValueError:  # not the main thread
            return None

    def _restore_signals(self):
        if getattr(self, "_handlers", None):
            for s, h in self._handlers.items():
                signal.signal(s, h)
            self._handlers = None


def train(cfg: TrainConfig, log=print) -> dict:
    """Build a :class:`Trainer` and run it; returns its summary."""
    return Trainer(cfg, log=log).fit()
