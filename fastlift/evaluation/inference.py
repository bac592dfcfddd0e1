"""Apply a trained lifter to 2D keypoints: :class:`Lifter` (``fastlift.Lifter``).

::

    from fastlift import Lifter
    lifter = Lifter.from_checkpoint("runs/demo/checkpoints/last.pt")   # or the run folder
    Y = lifter.lift(keypoints_px, layout="coco17", confidence=scores)   # (N, 17, 3), h36m17

Input: pixels, (N, J, 2) or (J, 2), numpy or torch, in any registered layout
(:mod:`fastlift.data.layouts`); it is converted to ``h36m17`` (joints COCO / OpenPose lack are
synthesised, see :func:`fastlift.data.layouts.convert_keypoints`).

Output: (N, 17, 3) (or (17, 3) for a single pose) in the ``h36m17`` layout, **root-relative**
(pelvis at the origin), camera frame (x right, y down, z forward, away from the camera), in the
**normalised unit of the method**: the 2D pose is root-centred and scaled so that its head-root
image distance is ``1/c`` (c = 10), and the lift puts the root at depth ``c``; a pose whose
head-root segment lies parallel to the image plane therefore has a 3D head-root distance of 1.
An unsupervised lifter has no metric scale: pass ``height=`` (the skeleton's head-to-ankle chain
length, :func:`skeleton_height`) or ``bone=("l_hip", "l_knee", 450.0)`` to scale each pose to
millimetres (or any unit you give).

The 2D normalisation is the checkpoint's (``per_sample`` by default: each pose's own head-root
distance; a ``dataset`` constant when the run was trained that way and stored it). Joints with
confidence 0 are missing: they enter the network at the root position (normalised 0), exactly as
in training and validation. Poses whose root or head is missing cannot be normalised: their output
is NaN (with a warning). numpy in, numpy out (float32); torch in, torch out on the input's device.
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["Lifter", "CheckpointError", "skeleton_height", "load_lifter_model"]

H36M = "h36m17"
#: h36m17 bones of the head-to-ankle chain used by :func:`skeleton_height`.
_SPINE_CHAIN = ((0, 7), (7, 8), (8, 9), (9, 10))          # pelvis-spine-thorax-neck-head
_LEGS = (((1, 2), (2, 3)), ((4, 5), (5, 6)))              # hip-knee-ankle, right and left


_PRECISIONS = ("fp32", "bf16", "fp16")


class CheckpointError(ValueError):
    """A file that is not a usable fastlift checkpoint (the message names the file)."""


# ---------------------------------------------------------------------------------------- helpers
def skeleton_height(poses) -> torch.Tensor | np.ndarray:
    """Head-to-ankle chain length of h36m17 poses (..., 17, 3): pelvis->spine->thorax->neck->head
    plus the mean of the two legs' hip->knee->ankle lengths. About 0.95 of the standing body height
    (the feet below the ankle and the hip offset are not counted). Same type as the input."""
    is_np = not isinstance(poses, torch.Tensor)
    p = torch.as_tensor(np.asarray(poses)) if is_np else poses

    def seg(a, b):
        return (p[..., a, :] - p[..., b, :]).norm(dim=-1)

    h = sum(seg(a, b) for a, b in _SPINE_CHAIN)
    h = h + 0.5 * sum(seg(a, b) for leg in _LEGS for a, b in leg)
    return h.numpy() if is_np else h


def _device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _fold_linear_bn(lin: nn.Linear, bn: nn.BatchNorm1d | None) -> tuple[torch.Tensor, torch.Tensor]:
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    if bn is not None:
        inv = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)
        w = w * inv[:, None]
        b = (b - bn.running_mean.detach().double()) * inv + bn.bias.detach().double()
    return w, b


class _FoldedMLP(nn.Module):
    """Inference copy of the lifter's residual MLP with BatchNorm, input standardisation and output
    de-standardisation folded into the Linear layers (eval mode only; about 1.5x faster on a CPU)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        net = model.net
        units = []

        def parse(seq) -> list[tuple[nn.Linear, nn.BatchNorm1d | None, nn.Module]]:
            out, mods, i = [], list(seq), 0
            while i < len(mods):
                lin = mods[i]
                if not isinstance(lin, nn.Linear) or type(lin) is not nn.Linear:
                    raise TypeError(f"unexpected layer {type(lin).__name__}")
                i += 1
                bn = None
                if i < len(mods) and isinstance(mods[i], nn.BatchNorm1d):
                    bn, i = mods[i], i + 1
                if i >= len(mods) or isinstance(mods[i], (nn.Linear, nn.BatchNorm1d, nn.Dropout)):
                    raise TypeError("expected an activation after Linear[/BatchNorm]")
                act, i = mods[i], i + 1
                if i < len(mods) and isinstance(mods[i], nn.Dropout):
                    i += 1
                out.append((lin, bn, act))
            return out

        stem = parse(net.stem)
        if len(stem) != 1:
            raise TypeError("unexpected stem")
        blocks = [parse(b.body) for b in net.blocks]
        if type(net.head) is not nn.Linear:
            raise TypeError("unexpected head")
        # stem with the input standardisation (x - mean) / std folded in
        w, b = _fold_linear_bn(stem[0][0], stem[0][1])
        mean, std = model.in_mean.detach().double(), model.in_std.detach().double()
        w_in = w / std[None, :]
        b_in = b - w_in @ mean
        units.append((w_in, b_in))
        self.acts = nn.ModuleList([stem[0][2]])
        self.block_sizes = []
        for blk in blocks:
            self.block_sizes.append(len(blk))
            for lin, bn, act in blk:
                units.append(_fold_linear_bn(lin, bn))
                self.acts.append(act)
        hw, hb = net.head.weight.detach().double(), net.head.bias.detach().double()
        ostd, omean = model.out_std.detach().double(), model.out_mean.detach().double()
        units.append((hw * ostd[:, None], hb * ostd + omean))
        dtype = net.head.weight.dtype
        self.weights = nn.ParameterList([nn.Parameter(w_.to(dtype).t().contiguous(), requires_grad=False) for w_, _ in units])
        self.biases = nn.ParameterList([nn.Parameter(b_.to(dtype), requires_grad=False) for _, b_ in units])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        h = self.acts[0](torch.addmm(self.biases[0], h, self.weights[0]))
        k = 1
        for n in self.block_sizes:
            a = h
            for _ in range(n):
                a = self.acts[k](torch.addmm(self.biases[k], a, self.weights[k]))
                k += 1
            h = h + a
        return torch.addmm(self.biases[k], h, self.weights[k])


def _config_dict(state: dict) -> dict:
    cfg = state.get("config")
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
    return dict(cfg)


def load_lifter_model(state: dict, path: str = "checkpoint") -> nn.Module:
    """Rebuild the engine's lifter (:class:`fastlift.models.Lifter`) from a checkpoint dict and load
    its weights (strict: every tensor must match)."""
    from fastlift.models import Lifter as LifterNet

    cfg = _config_dict(state)
    models = state.get("models")
    # the moving average of the weights is what the engine validates, tests and reports
    sd = (models.get("lifter_ema") or models.get("lifter")) if isinstance(models, dict) else None
    if sd is None:
        raise CheckpointError(f"{path}: the checkpoint holds no lifter weights (models['lifter'])")
    try:
        from fastlift.data.layouts import get_layout
        J = get_layout(cfg.get("layout", H36M)).num_joints
    except Exception:  # noqa: BLE001
        J = 17
    builder = None
    try:  # the engine's own constructor, when it has one: exactly the trained model
        from fastlift.training import engine as _engine  # type: ignore
        builder = getattr(_engine, "build_lifter", None)
    except Exception:  # noqa: BLE001
        builder = None
    model = None
    if builder is not None:
        try:
            from fastlift.training.config import TrainConfig
            names = set(TrainConfig.field_names())
            model = builder(TrainConfig(**{k: v for k, v in cfg.items() if k in names}), J)
        except Exception:  # noqa: BLE001 - fall back to the documented constructor
            model = None
    if model is None:
        kw = dict(num_joints=J, width=cfg.get("width", 1024), blocks=cfg.get("blocks", 4),
                  batch_norm=cfg.get("batch_norm", True), dropout=cfg.get("dropout", 0.0),
                  activation=cfg.get("activation", "relu"), out_init_scale=cfg.get("out_init_scale", 0.01),
                  c=cfg.get("c", 10.0), depth_floor=cfg.get("depth_floor", "soft"),
                  min_depth=cfg.get("min_depth", 1.0))
        model = LifterNet(**kw)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the lifter weights do not fit the model its config describes: {exc}") from None
    return model.eval()


# ---------------------------------------------------------------------------------------- Lifter
class Lifter:
    """A trained lifter ready to apply to pixel keypoints (see the module docstring).

    Args:
        model: a :class:`fastlift.models.Lifter` (normalised 2D -> depth offsets).
        c, root, head: the method's depth constant and the root / head joints of the 2D
            normalisation (h36m17: 0 pelvis, 10 head).
        normalization: ``"per_sample"`` or ``"dataset"``; ``dataset_distance`` is then the mean
            head-root distance in pixels the run was normalised with.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``, ...
        precision: ``"fp32"`` (default, exact), ``"bf16"`` or ``"fp16"`` (autocast of the MLP, as the
            engine's ``amp``; bf16 is about 2x faster on CPUs with AVX512-BF16 / AMX).
        fold: fold BatchNorm and the input/output standardisation into the Linear layers
            (inference only; checked against the eager model when built).
        source: where the model came from (error messages).
        config: the training config (dict) the model was trained with.
    """

    layout = H36M

    def __init__(self, model: nn.Module, *, c: float | None = None, root: int = 0, head: int = 10,
                 normalization: str = "per_sample", dataset_distance: float | None = None,
                 device="auto", precision: str = "fp32", fold: bool = True, source: str | None = None,
                 config: dict | None = None, flip_test: bool = False):
        if normalization not in ("per_sample", "dataset"):
            raise ValueError(f"normalization must be 'per_sample' or 'dataset', got {normalization!r}")
        if normalization == "dataset" and not (dataset_distance and dataset_distance > 0):
            raise ValueError("normalization='dataset' needs dataset_distance (mean head-root distance, pixels)")
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}")
        self.device = _device(device)
        self.model = model.eval().to(self.device)
        self.c = float(getattr(model, "c", 10.0) if c is None else c)
        self.depth_floor = getattr(model, "depth_floor", "soft")
        self.min_depth = float(getattr(model, "min_depth", 1.0))
        self.root, self.head = int(root), int(head)
        self.normalization = normalization
        self.dataset_distance = None if dataset_distance is None else float(dataset_distance)
        self.precision = precision
        self.source = source
        self.config = dict(config or {})
        self.num_joints = int(getattr(model, "num_joints", 17))
        self.flip_test = bool(flip_test)
        self._fast = None
        if fold:
            self._fast = self._build_folded()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, path: str, device="auto", precision: str = "auto", fold: bool = True,
                        flip_test: bool = False) -> "Lifter":
        """The lifter of a training checkpoint (a ``.pt`` file or a run folder, whose
        ``checkpoints/last.pt`` is used), set up exactly as the training engine validates it: the
        network the config describes with its saved weights and input standardisation, per-sample 2D
        normalisation with the config's ``c``, the config's depth floor, and (``precision="auto"``)
        the run's ``amp`` precision. :class:`CheckpointError` naming the file when it is not a
        fastlift checkpoint, is truncated, or its weights do not fit its config."""
        path = os.fspath(path)
        state = _read_checkpoint(path)
        where = state.get("path", path)
        cfg = _config_dict(state)
        layout = cfg.get("layout", H36M)
        if layout != H36M:
            raise CheckpointError(f"{where}: the lifter works in layout {layout!r}; fastlift.Lifter lifts to "
                                  f"{H36M!r} only")
        model = load_lifter_model(state, where)
        # The engine validates and tests with per-sample normalisation whatever the training data used
        # (training.inputs.make_eval_set); so do we, to reproduce its numbers.
        norm, dist = "per_sample", None
        if precision == "auto":
            precision = {"bf16": "bf16", "fp16": "fp16"}.get(cfg.get("amp", "none"), "fp32")
        try:
            from fastlift.training.inputs import head_index
            head = head_index(layout)
        except Exception:  # noqa: BLE001
            head = 10
        return cls(model, c=cfg.get("c", getattr(model, "c", 10.0)), root=0, head=head, normalization=norm,
                   dataset_distance=dist, device=device, precision=precision,
                   fold=fold, source=where, config=cfg, flip_test=flip_test)

    def _build_folded(self):
        try:
            fast = _FoldedMLP(self.model).to(self.device).eval()
            g = torch.Generator().manual_seed(0)
            x = (torch.rand(64, self.num_joints, 2, generator=g) - 0.5) * 0.3
            x = x.to(self.device)
            with torch.inference_mode():
                ref, got = self.model(x), fast(x)
            tol = 1e-4 * (1.0 + float(ref.abs().max()))
            if not torch.allclose(ref, got, rtol=1e-4, atol=tol):
                raise ValueError(f"folded model differs from the eager one by {float((ref - got).abs().max()):.3g}")
            return fast
        except Exception as exc:  # noqa: BLE001 - an architecture the folding does not know: stay eager
            warnings.warn(f"fastlift.Lifter: using the eager model ({exc})", RuntimeWarning, stacklevel=3)
            return None

    def to(self, device) -> "Lifter":
        """Move to ``device`` (returns self)."""
        self.device = _device(device)
        self.model.to(self.device)
        if self._fast is not None:
            self._fast.to(self.device)
        return self

    def __repr__(self) -> str:
        return (f"Lifter(source={self.source!r}, c={self.c}, normalization={self.normalization!r}, "
                f"device={str(self.device)!r}, precision={self.precision!r})")

    # ------------------------------------------------------------------ the network
    def depth_offsets(self, x2d: torch.Tensor) -> torch.Tensor:
        """Depth offsets (B, J) of normalised 2D poses (B, J, 2) (no grad, this lifter's precision)."""
        net = self._fast if self._fast is not None else self.model
        with torch.inference_mode():
            if self.precision != "fp32":
                dt = torch.bfloat16 if self.precision == "bf16" else torch.float16
                with torch.autocast(device_type=x2d.device.type, dtype=dt):
                    d = net(x2d)
                return d.float()
            return net(x2d)

    def lift_normalized(self, x2d: torch.Tensor, batch_size: int = 65536, root_relative: bool = True) -> torch.Tensor:
        """Root-relative 3D (B, J, 3) of normalised 2D poses (B, J, 2) (missing joints already 0);
        with ``root_relative=False`` the lift as it comes, in the camera frame (the root at depth
        about ``c``, each joint on its ray ``(x z, y z, z)``), which
        :func:`fastlift.evaluation.refine.refine_bone_lengths` needs.

        With ``flip_test`` each pose is also lifted mirrored (x -> -x, left and right joints
        swapped), the lift mirrored back, and the two averaged (test-time flip augmentation: twice
        the network work; both lifts reproject onto the input, so their mean does too)."""
        from fastlift.ops import lift_to_3d
        x2d = x2d.to(self.device, torch.float32)
        outs = []
        if self.flip_test:
            from fastlift.data.layouts import get_layout
            perm = torch.as_tensor(get_layout(H36M).flip_index, device=self.device)
            if perm.numel() != self.num_joints:
                raise ValueError(f"flip_test: the lifter has {self.num_joints} joints, the {H36M} layout "
                                 f"{perm.numel()}")
            m2 = torch.tensor([-1.0, 1.0], device=self.device)
            m3 = torch.tensor([-1.0, 1.0, 1.0], device=self.device)

        def lift(x):
            Y = lift_to_3d(x, self.depth_offsets(x), c=self.c, floor=self.depth_floor, min_depth=self.min_depth)
            return Y - Y[:, self.root:self.root + 1] if root_relative else Y

        with torch.inference_mode():
            for s in range(0, x2d.shape[0], batch_size):
                x = x2d[s:s + batch_size]
                Y = lift(x)
                if self.flip_test:
                    Y = 0.5 * (Y + lift(x[:, perm] * m2)[:, perm] * m3)
                outs.append(Y)
        if not outs:
            return torch.zeros(0, self.num_joints, 3, device=self.device)
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    # ------------------------------------------------------------------ pixels -> normalised
    def normalize(self, keypoints: torch.Tensor, confidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h36m17 pixel keypoints (N, 17, 2) and confidence (N, 17) -> ``(normalised (N, 17, 2),
        valid (N,) bool)``, as training and validation normalise them (missing joints at 0)."""
        k = keypoints.float()
        conf = confidence.float()
        d = (k[:, self.head] - k[:, self.root]).norm(dim=-1)
        valid = (conf[:, self.root] > 0) & (conf[:, self.head] > 0) & torch.isfinite(k).all(-1).all(-1)
        if self.normalization == "per_sample":
            valid &= d > 1e-6
            # the formula of fastlift.ops.normalize_2d (and of the engine's numpy normalisation), as
            # plain torch: the custom op's first call imports torch._dynamo (seconds) for nothing here
            s = 1.0 / (self.c * d.clamp_min(1e-6))
            x = (k - k[:, self.root:self.root + 1]) * s[:, None, None]
        else:
            x = (k - k[:, self.root:self.root + 1]) / (self.c * self.dataset_distance)
        x = torch.where((conf > 0)[..., None] & valid[:, None, None], x, torch.zeros_like(x))
        return x, valid

    # ------------------------------------------------------------------ public API
    def lift(self, keypoints_2d, layout: str = H36M, confidence=None, *, height: float | None = None,
             bone: Sequence | None = None, batch_size: int = 65536, groups=None):
        """3D poses in the h36m17 layout from 2D keypoints in pixels.

        Args:
            keypoints_2d: (N, J, 2) or (J, 2) pixels (x right, y down), numpy or torch.
            layout: the keypoints' layout (``"h36m17"``, ``"coco17"``, ``"openpose25"``, ...).
            confidence: (N, J) or (J,) per-joint confidence, 0 = missing (default: all present;
                NaN coordinates count as missing).
            height: scale each pose so that its :func:`skeleton_height` equals this (e.g. 1700 for
                millimetres). Mutually exclusive with ``bone``.
            bone: ``(joint_a, joint_b, length)`` with h36m17 joint names: scale each pose so that
                this bone has this length.
            batch_size: poses per forward pass.
            groups: (N,) person label of each pose (subject names, sequence ids): each person's
                lifts get one set of bone proportions, their depths moved along the camera rays
                (:func:`fastlift.evaluation.refine.refine_bone_lengths`). None: each pose alone.

        Returns:
            (N, 17, 3) (or (17, 3)) root-relative camera-frame 3D, in the method's normalised unit
            unless ``height`` / ``bone`` is given; float32; numpy for numpy input, torch on the
            input's device for torch input. Poses that cannot be normalised (root or head missing)
            are NaN.
        """
        from fastlift.data.errors import PoseDataError
        from fastlift.data.layouts import convert_keypoints, get_layout

        is_torch = isinstance(keypoints_2d, torch.Tensor)
        out_device = keypoints_2d.device if is_torch else None
        lay = get_layout(layout)
        kp = keypoints_2d if is_torch else np.asarray(keypoints_2d)
        single = kp.ndim == 2
        if single:
            kp = kp[None]
        if kp.ndim != 3 or kp.shape[-1] != 2:
            raise PoseDataError(f"Lifter.lift: keypoints_2d must have shape (N, J, 2) or (J, 2), got {tuple(keypoints_2d.shape)}")
        if kp.shape[1] != lay.num_joints:
            from fastlift.data.layouts import LAYOUTS
            same = [n for n, l in LAYOUTS.items() if l.num_joints == kp.shape[1]]
            hint = f" (layouts with {kp.shape[1]} joints: {', '.join(same)})" if same else ""
            raise PoseDataError(f"Lifter.lift: keypoints have {kp.shape[1]} joints but layout {lay.name!r} has "
                                f"{lay.num_joints}; pass layout=...{hint}")
        conf = confidence
        if conf is not None:
            conf = conf if isinstance(conf, torch.Tensor) else np.asarray(conf)
            if single and conf.ndim == 1:
                conf = conf[None]
            if tuple(conf.shape) != tuple(kp.shape[:2]):
                raise PoseDataError(f"Lifter.lift: confidence must have shape {tuple(kp.shape[:2])}, got {tuple(conf.shape)}")
        if lay.name != H36M:
            k_np = kp.detach().cpu().numpy() if is_torch else kp
            c_np = None if conf is None else (conf.detach().cpu().numpy() if isinstance(conf, torch.Tensor) else conf)
            k_np, c_np, _ = convert_keypoints(k_np, c_np, lay, H36M)
            k = torch.from_numpy(k_np)
            c = torch.from_numpy(c_np)
        else:
            k = kp if is_torch else torch.from_numpy(np.ascontiguousarray(kp, dtype=np.float32))
            k = k.float()
            if conf is None:
                c = torch.isfinite(k).all(-1).float()
            else:
                c = conf.float() if isinstance(conf, torch.Tensor) else torch.from_numpy(np.asarray(conf, dtype=np.float32))
                c = torch.where(torch.isfinite(k).all(-1).to(c.device) & torch.isfinite(c), c, torch.zeros_like(c))
            k = torch.nan_to_num(k, nan=0.0, posinf=0.0, neginf=0.0)
        k, c = k.to(self.device), c.to(self.device)
        x, valid = self.normalize(k, c)
        if groups is None:
            Y = self.lift_normalized(x, batch_size=batch_size)
        else:
            from fastlift.evaluation.refine import refine_bone_lengths
            labels = np.asarray(groups)
            if single and labels.ndim == 0:
                labels = labels[None]
            if labels.shape != (x.shape[0],):
                raise ValueError(f"Lifter.lift: groups must have shape ({x.shape[0]},), got {labels.shape}")
            Y = self.lift_normalized(x, batch_size=batch_size, root_relative=False).clone()
            keep = valid.cpu().numpy()  # poses that cannot be normalised join no group
            Y[valid] = refine_bone_lengths(Y[valid], labels[keep], get_layout(H36M).parents, valid=(c > 0)[valid])
            Y = Y - Y[:, self.root:self.root + 1]
        n_bad = int((~valid).sum())
        if n_bad:
            warnings.warn(f"Lifter.lift: {n_bad} of {len(valid)} poses have no root or head joint (or a zero "
                          f"head-root distance) and cannot be normalised; their output is NaN", RuntimeWarning, stacklevel=2)
            Y = torch.where(valid[:, None, None], Y, torch.full_like(Y, float("nan")))
        if height is not None and bone is not None:
            raise ValueError("Lifter.lift: give height or bone, not both")
        if height is not None:
            Y = Y * (float(height) / skeleton_height(Y).clamp_min(1e-12))[:, None, None]
        elif bone is not None:
            Y = Y * _bone_scale(Y, bone)[:, None, None]
        if single:
            Y = Y[0]
        if is_torch:
            return Y.to(out_device)
        return Y.cpu().numpy()

    __call__ = lift


def _bone_scale(Y: torch.Tensor, bone) -> torch.Tensor:
    from fastlift.data.layouts import get_layout
    try:
        a, b, length = bone
    except (TypeError, ValueError):
        raise ValueError(f"bone must be (joint_a, joint_b, length), got {bone!r}") from None
    lay = get_layout(H36M)
    ia, ib = lay.index(a), lay.index(b)
    if lay.parents[ia] != ib and lay.parents[ib] != ia:
        raise ValueError(f"bone: {a!r} and {b!r} are not connected in {H36M}")
    return float(length) / (Y[:, ia] - Y[:, ib]).norm(dim=-1).clamp_min(1e-12)


def _read_checkpoint(path: str) -> dict:
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    if os.path.isdir(path):
        cands = [os.path.join(path, "checkpoints", "last.pt"), os.path.join(path, "last.pt")]
        found = [p for p in cands if os.path.isfile(p)]
        if not found:
            raise CheckpointError(f"{path}: a folder without checkpoints/last.pt; pass a checkpoint file")
        path = found[0]
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: empty file, not a fastlift checkpoint")
    try:
        from fastlift.training.checkpoint import load_checkpoint
    except ImportError:
        load_checkpoint = None
    if load_checkpoint is not None:
        try:
            return load_checkpoint(path, map_location="cpu")
        except ValueError as exc:
            msg = str(exc)
            raise CheckpointError(msg if path in msg else f"{path}: {msg}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot be read as a fastlift checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "models" not in state:
        raise CheckpointError(f"{path}: not a fastlift training checkpoint")
    state["path"] = path
    return state
