"""The 2D domain adapter A (method.md, "2D domain adapter A"; docs/adapter.md).

Extra 2D poses from another source (a detector's COCO-17 or OpenPose output on other footage) are
mapped into the target layout (h36m17) *and* the target distribution by a residual MLP trained
unpaired and adversarially against a target-domain 2D discriminator; the adapted poses then extend
the lifter's training data.

The adapter (:class:`SourceAdapter`, a :class:`fastlift.models.DomainAdapter` whose residual also
sees the source confidences) works on normalised poses::

    x  = source keypoints (J_src, 2), root-centred and scaled with the normalisation of their plain
         layout conversion (pelvis at 0, head-top at distance 1/c), missing joints at 0
    b  = convert_keypoints(x, conf)            # the confidence-aware layout conversion, (17, 2)
    y  = b + r([c x, conf]) / c                # r: residual MLP, output head initialised near 0
    A(x) = normalize(y)                        # re-normalised: root at 0, head-root 1/c

so an untrained adapter *is* the plain conversion. Training (:func:`train_adapter`) alternates

* D: real = normalised target poses, fake = A(x), both with instance noise; by default D sees
  content-light features (:class:`LocalPoseFeatures`: torso/head geometry and bone lengths, no
  limb directions) so that it judges how a skeleton is drawn, not what the few target people do;
* A: ``w_adv * L_adv(D(A(x)))`` + ``w_shared * sum_j conf_j |y_j - x_j|^2 / sum_j conf_j`` over the
  joints both layouts share (the shared-joint regulariser, weighted by the detector's confidence:
  a missing joint (conf 0) is free, a doubtful one is held loosely) + ``w_synth`` times the same
  pull towards the conversion ``b`` for the joints the converter synthesised (pelvis, spine,
  thorax, neck, head top). Distances are in head-root units (coordinates times c).

:func:`adapt_poses` applies a trained adapter to a whole PoseSet (back in the source's pixel
frame, h36m17); :func:`extend_training_data` is the CLI's hook: load, :func:`temporal_smooth`,
train, adapt, keep complete poses, mix with the target (:func:`concat_training_data`).
:func:`mmd2` / :func:`domain_classifier_accuracy` measure how far two 2D pose distributions are
apart (before and after adaptation).

Sequential, not joint: the adapter is trained first, frozen, and the lifter then trains on target
plus adapted poses with the unchanged engine. The two games (A against a target-pose D; the lifter
against a reprojection D) are balanced separately, the adapted set can be inspected and measured
before any lifter step, and the adapter costs a minute against the lifter's many.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from fastlift.data.errors import PoseDataError
from fastlift.data.layouts import H36M17, HEAD, ROOT, Layout, convert_keypoints, get_layout, index_map
from fastlift.data.poseset import PoseSet
from fastlift.models import DomainAdapter, PoseDiscriminator
from fastlift.models.mlp import ResidualMLP
from fastlift.training import losses as L

__all__ = ["AdapterConfig", "SourceAdapter", "LocalPoseFeatures", "SourceData", "prepare_source", "prepare_target",
           "train_adapter", "adapt_arrays", "adapt_poses", "convert_only", "extend_training_data",
           "concat_training_data", "target_repeats", "load_extra", "temporal_smooth", "mmd2", "mmd_bandwidths",
           "domain_classifier_accuracy", "distribution_report", "base_map"]

TARGET_LAYOUT = H36M17


@dataclass
class AdapterConfig:
    """Knobs of the adapter and its training (defaults: about a minute on one CPU thread)."""
    steps: int = 1000                 # adapter (generator) updates
    batch_size: int = 256
    width: int = 128                  # adapter residual MLP
    blocks: int = 2
    d_width: int = 128                # target-domain discriminator
    d_blocks: int = 2
    d_features: str = "local"         # what D sees: "local" (torso-frame geometry and bone lengths) or "pose"
    d_kinematic: bool = True          # "pose" D: bone and chirality features too (as the lifter's D)
    lr: float = 5e-4
    d_lr_ratio: float = 1.0
    betas: tuple = (0.5, 0.9)
    gan_loss: str = "bce"             # bce, lsgan (wgan-gp is not offered here)
    label_smoothing: float = 0.0
    d_instance_noise: float = 0.1     # Gaussian noise (head-root units) on D's real and fake inputs
    w_adv: float = 1.0
    w_shared: float = 30.0            # shared-joint regulariser (head-root units squared)
    w_synth: float = 0.1              # pull of synthesised joints towards the conversion
    out_init_scale: float = 0.01      # the residual head starts near zero: A = conversion
    c: float = 10.0
    seed: int = 0
    threads: int = 0                  # torch CPU threads (0: leave as is)
    device: str = "cpu"
    max_minutes: float = 0.0          # wall-clock budget (0: none)
    eval_samples: int = 2000          # held-out poses per domain for the before/after distances
    classifier_steps: int = 300       # steps of the held-out domain classifier (0: skip it)
    imputed_confidence: float = 0.0   # confidence of joints the adapter imputed (0: they stay missing)
    log_every: int = 250

    def __post_init__(self):
        if self.d_features not in ("local", "pose"):
            raise ValueError(f"AdapterConfig: d_features must be local or pose, got {self.d_features!r}")
        if self.gan_loss not in ("bce", "lsgan"):
            raise ValueError(f"AdapterConfig: gan_loss must be bce or lsgan, got {self.gan_loss!r}")
        for k in ("steps", "batch_size", "width", "d_width"):
            if getattr(self, k) < 1:
                raise ValueError(f"AdapterConfig: {k} must be >= 1, got {getattr(self, k)}")
        for k in ("w_adv", "w_shared", "w_synth", "lr", "c"):
            if getattr(self, k) < 0 or (k in ("lr", "c") and getattr(self, k) == 0):
                raise ValueError(f"AdapterConfig: {k} must be {'> 0' if k in ('lr', 'c') else '>= 0'}")
        if not 0 <= self.imputed_confidence <= 1:
            raise ValueError("AdapterConfig: imputed_confidence must be in [0, 1]")


# ------------------------------------------------------------------------------ the network
def base_map(src_layout: str | Layout, dst_layout: str | Layout = TARGET_LAYOUT) -> torch.Tensor:
    """(J_dst, J_src) linear layout map: the direct copies and the *first* synthesis rule of each
    synthesised joint (what :func:`convert_keypoints` does when every source joint is present)."""
    src, dst = get_layout(src_layout), get_layout(dst_layout)
    M = np.zeros((dst.num_joints, src.num_joints), dtype=np.float32)
    eye = np.eye(src.num_joints, dtype=np.float32)
    # the conversion is linear: convert the identity basis (one joint at a time, all present)
    for s in range(src.num_joints):
        kp = np.zeros((src.num_joints, 2), dtype=np.float32)
        kp[:, 0] = eye[s]
        out, _, _ = convert_keypoints(kp, np.ones(src.num_joints, np.float32), src, dst, allow_missing=True)
        M[:, s] = out[:, 0]
    return torch.from_numpy(M)


class SourceAdapter(DomainAdapter):
    """A :class:`~fastlift.models.DomainAdapter` from ``source_layout`` to h36m17 whose residual
    MLP sees the source keypoints *and their confidences*, added to a confidence-aware conversion.

    ``forward(x, conf=None, base=None)``: ``x`` (B, J_src, 2) normalised source poses (missing
    joints at 0), ``conf`` (B, J_src) (default all 1), ``base`` (B, 17, 2) the confidence-aware
    conversion of ``x`` (default: computed with :func:`convert_keypoints`, not differentiable,
    which it need not be: it depends on data only). Returns the adapted pose *before*
    re-normalisation (B, 17, 2); :meth:`normalized` re-normalises.
    """

    def __init__(self, source_layout: str | Layout = "coco17", width: int = 128, blocks: int = 2,
                 out_init_scale: float = 0.01, c: float = 10.0):
        src = get_layout(source_layout)
        M = base_map(src, TARGET_LAYOUT)
        imap = index_map(src, TARGET_LAYOUT)
        shared = [(d, int(s)) for d, s in enumerate(imap) if s >= 0]
        super().__init__(src.num_joints, TARGET_LAYOUT.num_joints, base_map=M, shared=shared, width=width,
                         blocks=blocks, batch_norm=False, dropout=0.0, out_init_scale=out_init_scale)
        # the residual sees coordinates and confidences: replace DomainAdapter's coordinate-only MLP
        self.residual = ResidualMLP(3 * src.num_joints, 2 * TARGET_LAYOUT.num_joints, width, blocks, False, 0.0,
                                    out_init_scale=out_init_scale)
        self.source_layout = src.name
        self.c = float(c)
        synth = [d for d in range(TARGET_LAYOUT.num_joints) if imap[d] < 0]
        self.register_buffer("synth", torch.tensor(synth, dtype=torch.long))
        self.hparams = dict(source_layout=src.name, width=width, blocks=blocks, out_init_scale=out_init_scale, c=c)

    def conversion(self, x: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
        b, _, _ = convert_keypoints(x.detach().cpu().numpy(), conf.detach().cpu().numpy(), self.source_layout,
                                    TARGET_LAYOUT, allow_missing=True)
        return torch.from_numpy(b).to(x.device, x.dtype)

    def forward(self, x: torch.Tensor, conf: torch.Tensor | None = None, base: torch.Tensor | None = None):
        B = x.shape[0]
        if conf is None:
            conf = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
        x = torch.where(conf[..., None] > 0, x, torch.zeros_like(x))
        if base is None:
            base = self.conversion(x, conf)
        h = torch.cat([x.reshape(B, -1) * self.c, conf], 1)
        return base + self.residual(h).reshape(B, self.dst_joints, 2) / self.c

    def normalized(self, y: torch.Tensor) -> torch.Tensor:
        """Re-normalise adapted poses (root at 0, head-root distance 1/c), differentiably."""
        d = (y[:, HEAD] - y[:, ROOT]).norm(dim=-1).clamp_min(0.05 / self.c)
        return (y - y[:, ROOT:ROOT + 1]) / (self.c * d)[:, None, None]


# ------------------------------------------------------------------------------ data
@dataclass
class SourceData:
    """Normalised source poses ready for the adapter (rows of the source set in ``index``)."""
    x: np.ndarray          # (N, J_src, 2) normalised source keypoints, missing at 0
    conf: np.ndarray       # (N, J_src)
    base: np.ndarray       # (N, 17, 2) confidence-aware conversion (normalised)
    base_conf: np.ndarray  # (N, 17)
    root: np.ndarray       # (N, 2) pixel position of the conversion's root
    scale: np.ndarray      # (N,) normalisation factor (1 / pixels)
    index: np.ndarray      # (N,) row of each pose in the source PoseSet
    dropped: int = 0       # source poses that could not be normalised (no root or head)

    def __len__(self):
        return self.x.shape[0]


def prepare_source(source: PoseSet, source_layout: str | Layout | None = None, c: float = 10.0,
                   min_joint_fraction: float = 0.5) -> SourceData:
    """Normalise source poses with the pelvis and head top of their plain conversion to h36m17.

    Poses whose conversion lacks the root or the head (e.g. a hip missing), or has fewer than
    ``min_joint_fraction`` of its joints, are dropped (``dropped`` says how many).
    """
    lay = get_layout(source_layout or source.layout)
    if lay.num_joints != source.num_joints:
        raise PoseDataError(f"source poses have {source.num_joints} joints, layout {lay.name!r} has {lay.num_joints}")
    kp = np.asarray(source.keypoints_2d, dtype=np.float32)
    conf = np.asarray(source.confidence, dtype=np.float32)
    b, bc, _ = convert_keypoints(kp, conf, lay, TARGET_LAYOUT, allow_missing=True)
    d = np.linalg.norm(b[:, HEAD].astype(np.float64) - b[:, ROOT], axis=-1)
    ok = (bc[:, ROOT] > 0) & (bc[:, HEAD] > 0) & (d > 1e-6) & ((bc > 0).mean(1) >= min_joint_fraction)
    ok &= np.isfinite(kp).all(axis=(1, 2))
    idx = np.flatnonzero(ok)
    root = b[idx, ROOT].copy()
    s = (1.0 / (c * d[idx])).astype(np.float32)
    x = (kp[idx] - root[:, None]) * s[:, None, None]
    x = np.where(conf[idx][..., None] > 0, x, 0).astype(np.float32)
    base = ((b[idx] - root[:, None]) * s[:, None, None])
    base = np.where(bc[idx][..., None] > 0, base, 0).astype(np.float32)
    return SourceData(x, conf[idx], base, bc[idx], root, s, idx, int(len(source) - len(idx)))


def prepare_target(target: PoseSet, c: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised target poses (N, 17, 2) (missing joints at 0) and confidences, usable ones only."""
    if target.layout != TARGET_LAYOUT.name:
        target, _ = target.to_layout(TARGET_LAYOUT)
    from fastlift.training.inputs import normalized_2d, usable_mask
    ok = usable_mask(target, ROOT, HEAD)
    if not ok.any():
        raise PoseDataError(f"{target.source or 'target'}: no usable target poses (root and head present)")
    x, conf, _ = normalized_2d(target, ROOT, HEAD, c, np.flatnonzero(ok))
    return x, conf


# ------------------------------------------------------------------------------ distances
def mmd_bandwidths(ref: np.ndarray, max_n: int = 1000, seed: int = 0) -> list[float]:
    """Gaussian-kernel bandwidths {0.5, 1, 2} x the median pairwise distance of ``ref`` (N, D)."""
    rng = np.random.default_rng(seed)
    r = ref[rng.permutation(len(ref))[:max_n]].astype(np.float64)
    d = np.sqrt(np.maximum(((r[:, None] - r[None]) ** 2).sum(-1), 0))
    med = float(np.median(d[np.triu_indices(len(r), 1)]))
    return [0.5 * med, med, 2 * med]


def mmd2(a: np.ndarray, b: np.ndarray, bandwidths: list[float] | None = None, max_n: int = 2000,
         seed: int = 0) -> float:
    """Unbiased squared MMD between samples ``a`` (N, ...) and ``b`` (M, ...), flattened, with the
    sum of Gaussian kernels ``exp(-|u - v|^2 / (2 h^2))`` over ``bandwidths`` (default: from ``a``).
    0 in expectation when the distributions agree (it can come out slightly negative)."""
    rng = np.random.default_rng(seed)
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    a = a[rng.permutation(len(a))[:max_n]]
    b = b[rng.permutation(len(b))[:max_n]]
    hs = bandwidths or mmd_bandwidths(a, seed=seed)
    A, B = torch.from_numpy(a), torch.from_numpy(b)

    def k(u, v):
        d2 = torch.cdist(u, v).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in hs)
    n, m = len(a), len(b)
    kaa, kbb, kab = k(A, A), k(B, B), k(A, B)
    t_aa = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
    t_bb = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return float(t_aa + t_bb - 2 * kab.mean())


def domain_classifier_accuracy(a: np.ndarray, b: np.ndarray, steps: int = 300, seed: int = 0,
                               test_fraction: float = 0.3, width: int = 128, max_n: int = 4000) -> float:
    """Held-out accuracy of a fresh classifier trained to tell normalised poses ``a`` from ``b``
    (both (N, 17, 2), balanced to the same count): 0.5 means indistinguishable. A small
    :class:`PoseDiscriminator` (raw coordinates plus bone/chirality features), Adam, full batches
    of 512; the held-out ``test_fraction`` of each set is never trained on."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b), max_n)
    a = torch.from_numpy(np.asarray(a, dtype=np.float32)[rng.permutation(len(a))[:n]])
    b = torch.from_numpy(np.asarray(b, dtype=np.float32)[rng.permutation(len(b))[:n]])
    nt = max(1, int(round(n * test_fraction)))
    tr_x, te_x = torch.cat([a[nt:], b[nt:]]), torch.cat([a[:nt], b[:nt]])
    tr_y = torch.cat([torch.ones(n - nt), torch.zeros(n - nt)])
    te_y = torch.cat([torch.ones(nt), torch.zeros(nt)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = _make_disc(width, 1, True)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    for _ in range(steps):
        i = torch.randint(0, len(tr_x), (min(512, len(tr_x)),), generator=g)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(clf(tr_x[i]), tr_y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = ((clf(te_x) > 0).float() == te_y).float().mean()
    return float(acc)


def distribution_report(target: np.ndarray, source: np.ndarray, bandwidths=None, classifier_steps: int = 300,
                        seed: int = 0) -> dict:
    """``{"mmd2": ..., "classifier_acc": ...}`` between normalised pose arrays (coordinates x c)."""
    out = {"mmd2": mmd2(target * 10.0, source * 10.0, bandwidths, seed=seed)}
    if classifier_steps:
        out["classifier_acc"] = domain_classifier_accuracy(target, source, classifier_steps, seed=seed)
    return out


class LocalPoseFeatures(torch.nn.Module):
    """Content-light features of normalised h36m17 poses (B, 17, 2) for the adapter's discriminator.

    A small target set holds few motions; a discriminator on whole poses learns *what* they do
    (their arm and leg angles) and drives the adapter to redraw the source's limbs as the target's.
    These features keep *how a skeleton is drawn*: the torso and head joints (pelvis, hips, spine,
    thorax, neck, head top, shoulders) in a torso frame (origin the hip midpoint, axis to the
    shoulder midpoint, unit its length), and every bone's length over the torso length.
    Limb directions are left out.
    """

    TORSO = (0, 1, 4, 7, 8, 9, 10, 11, 14)

    def __init__(self, layout=TARGET_LAYOUT):
        super().__init__()
        lay = get_layout(layout)
        bones = lay.bones
        self.register_buffer("child", torch.tensor([c for c, _ in bones]), persistent=False)
        self.register_buffer("parent", torch.tensor([p for _, p in bones]), persistent=False)
        self.register_buffer("torso", torch.tensor(self.TORSO), persistent=False)
        self.hips = (lay.canonical.index("l_hip"), lay.canonical.index("r_hip"))
        self.shoulders = (lay.canonical.index("l_shoulder"), lay.canonical.index("r_shoulder"))

    @property
    def dim(self) -> int:
        return 2 * len(self.TORSO) + int(self.child.numel()) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mh = 0.5 * (x[:, self.hips[0]] + x[:, self.hips[1]])
        ms = 0.5 * (x[:, self.shoulders[0]] + x[:, self.shoulders[1]])
        up = ms - mh
        n = up.norm(dim=-1, keepdim=True).clamp_min(1e-4)
        e1 = up / n
        e2 = torch.stack([-e1[:, 1], e1[:, 0]], -1)
        rel = (x[:, self.torso] - mh[:, None]) / n[:, None]
        local = torch.stack([(rel * e1[:, None]).sum(-1), (rel * e2[:, None]).sum(-1)], -1)
        bl = (x[:, self.child] - x[:, self.parent]).norm(dim=-1) / n
        return torch.cat([local.flatten(1), bl, 10.0 * n], 1)


class _LocalDiscriminator(torch.nn.Module):
    def __init__(self, width: int, blocks: int):
        super().__init__()
        self.features = LocalPoseFeatures()
        self.net = ResidualMLP(self.features.dim, 1, width, blocks, False, 0.0, "leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(x)).squeeze(-1)


def _chirality_axes(layout) -> list[tuple[int, int]]:
    axes = []
    for a, b in (("r_hip", "l_hip"), ("r_shoulder", "l_shoulder")):
        if a in layout.canonical and b in layout.canonical:
            axes.append((layout.canonical.index(a), layout.canonical.index(b)))
    return axes


def _make_disc(width: int, blocks: int, kinematic: bool) -> PoseDiscriminator:
    return PoseDiscriminator(TARGET_LAYOUT.num_joints, width, blocks, batch_norm=False, dropout=0.0,
                             activation="leaky_relu", kinematic=kinematic, parents=TARGET_LAYOUT.parents,
                             axes=_chirality_axes(TARGET_LAYOUT))


# ------------------------------------------------------------------------------ training
def _split(n: int, n_eval: int, rng) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    k = min(n_eval, n // 5)
    return perm[k:], perm[:k]


@torch.no_grad()
def _adapt_normalized(adapter: SourceAdapter, sd: SourceData, rows: np.ndarray | None = None,
                      batch: int = 8192) -> np.ndarray:
    rows = np.arange(len(sd)) if rows is None else rows
    was = adapter.training
    adapter.eval()
    dev = next(adapter.parameters()).device
    out = []
    for i in range(0, len(rows), batch):
        r = rows[i:i + batch]
        y = adapter(torch.from_numpy(sd.x[r]).to(dev), torch.from_numpy(sd.conf[r]).to(dev),
                    torch.from_numpy(sd.base[r]).to(dev))
        out.append(adapter.normalized(y).cpu().numpy())
    adapter.train(was)
    return np.concatenate(out) if out else np.zeros((0, 17, 2), np.float32)


def train_adapter(target: PoseSet, source: PoseSet, source_layout: str | Layout | None = None,
                  config: AdapterConfig | None = None, log=print, **overrides) -> tuple[SourceAdapter, dict]:
    """Train the domain adapter from ``source`` poses (any layout) to the ``target`` poses' domain.

    Args:
        target: target-domain 2D poses (h36m17, or converted to it); only their 2D is used.
        source: source-domain 2D poses; ``source_layout`` overrides ``source.layout``.
        config: :class:`AdapterConfig`; keyword ``overrides`` replace its fields.
        log: progress lines (``None``: silent).

    Returns:
        ``(adapter, report)``: the trained :class:`SourceAdapter` (eval mode, CPU) and a dict with the
        counts, the time, the loss history and the distances between the held-out target poses and
        the held-out source poses before (plain conversion) and after adaptation
        (``before``/``after``: ``mmd2``, ``classifier_acc``; ``reference``: the same distances
        between two halves of the held-out target, the floor).
    """
    cfg = replace(config or AdapterConfig(), **overrides)
    log = log or (lambda *a, **k: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    dev = torch.device(cfg.device)
    xt, ct = prepare_target(target, cfg.c)
    sd = prepare_source(source, source_layout, cfg.c)
    if len(sd) < 10 or len(xt) < 10:
        raise PoseDataError(f"train_adapter: too few usable poses (target {len(xt)}, source {len(sd)}; "
                            f"{sd.dropped} source poses lacked the root or head)")
    rng = np.random.default_rng([cfg.seed, 4242])
    t_tr, t_ev = _split(len(xt), cfg.eval_samples, rng)
    s_tr, s_ev = _split(len(sd), cfg.eval_samples, rng)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        adapter = SourceAdapter(sd_layout(source, source_layout), cfg.width, cfg.blocks, cfg.out_init_scale,
                                cfg.c).to(dev)
        disc = (_LocalDiscriminator(cfg.d_width, cfg.d_blocks) if cfg.d_features == "local"
                else _make_disc(cfg.d_width, cfg.d_blocks, cfg.d_kinematic)).to(dev)
    opt_a = torch.optim.Adam(adapter.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr * cfg.d_lr_ratio, betas=tuple(cfg.betas))
    g = torch.Generator().manual_seed(cfg.seed)
    XT = torch.from_numpy(xt[t_tr])
    XS, CS = torch.from_numpy(sd.x[s_tr]), torch.from_numpy(sd.conf[s_tr])
    BS, BC = torch.from_numpy(sd.base[s_tr]), torch.from_numpy(sd.base_conf[s_tr])
    shared = adapter.shared.cpu()
    sh_d, sh_s = shared[:, 0], shared[:, 1]
    synth = adapter.synth.cpu()
    c = cfg.c
    hist, acc = [], {}
    n_acc = 0
    log(f"adapter: {len(s_tr)} source poses ({sd_layout(source, source_layout)}; {sd.dropped} dropped: no root/head) "
        f"-> h36m17 against {len(t_tr)} target poses; held out {len(s_ev)} / {len(t_ev)}")
    sig = cfg.d_instance_noise / c

    def noise(t):  # instance noise: D judges coarse structure, not the source's detector jitter
        return t + sig * torch.randn(t.shape, generator=g).to(dev) if sig > 0 else t
    steps_done = 0
    stopped = "steps"
    for step in range(cfg.steps):
        it = torch.randint(0, len(XT), (cfg.batch_size,), generator=g)
        is_ = torch.randint(0, len(XS), (cfg.batch_size,), generator=g)
        xt_b = XT[it].to(dev)
        xs_b, cs_b, bs_b, bc_b = XS[is_].to(dev), CS[is_].to(dev), BS[is_].to(dev), BC[is_].to(dev)
        y = adapter(xs_b, cs_b, bs_b)
        yn = adapter.normalized(y)
        # D update: target real, adapted fake
        B = xt_b.shape[0]
        o = disc(noise(torch.cat([xt_b, yn.detach()], 0)))
        ld = L.d_loss(cfg.gan_loss, o[:B], o[B:], cfg.label_smoothing)
        opt_d.zero_grad(set_to_none=True)
        ld.backward()
        opt_d.step()
        d_acc = float(L.d_accuracy(cfg.gan_loss, o[:B].detach(), o[B:].detach()))
        # A update
        for p in disc.parameters():
            p.requires_grad_(False)
        ladv = L.g_loss(cfg.gan_loss, disc(noise(yn)))
        for p in disc.parameters():
            p.requires_grad_(True)
        w = cs_b[:, sh_s]                                                   # detector confidence
        e_sh = ((y[:, sh_d] - xs_b[:, sh_s]) * c).pow(2).sum(-1)
        l_sh = (w * e_sh).sum() / w.sum().clamp_min(1e-6)
        ws = bc_b[:, synth]
        e_sy = ((y[:, synth] - bs_b[:, synth]) * c).pow(2).sum(-1)
        l_sy = (ws * e_sy).sum() / ws.sum().clamp_min(1e-6)
        la = cfg.w_adv * ladv + cfg.w_shared * l_sh + cfg.w_synth * l_sy
        opt_a.zero_grad(set_to_none=True)
        la.backward()
        opt_a.step()
        steps_done = step + 1
        for k, v in (("loss_d", float(ld.detach())), ("loss_adv", float(ladv.detach())),
                     ("loss_shared", float(l_sh.detach())), ("loss_synth", float(l_sy.detach())), ("d_acc", d_acc)):
            acc[k] = acc.get(k, 0.0) + v
        n_acc += 1
        if steps_done % cfg.log_every == 0 or steps_done == cfg.steps:
            row = {"step": steps_done, **{k: round(v / n_acc, 5) for k, v in acc.items()}}
            hist.append(row)
            log("adapter step {step}: d_acc {d_acc:.3f} adv {loss_adv:.3f} shared {loss_shared:.4f} "
                "synth {loss_synth:.4f}".format(**row))
            acc, n_acc = {}, 0
        if cfg.max_minutes and time.perf_counter() - t0 > 60 * cfg.max_minutes:
            stopped = "time"
            break
    adapter.eval().cpu()
    train_s = time.perf_counter() - t0
    # before / after distances on held-out poses (never trained on)
    ref = xt[t_ev]
    half = len(ref) // 2
    hs = mmd_bandwidths(ref.reshape(len(ref), -1) * c, seed=cfg.seed)
    before = sd.base[s_ev]  # the conversion is the normalisation reference: root 0, head-root 1/c
    after = _adapt_normalized(adapter, sd, s_ev)
    complete = (sd.base_conf[s_ev] > 0).all(1)
    report = {
        "source_layout": sd_layout(source, source_layout), "source_poses": len(source), "source_used": len(sd),
        "source_dropped": sd.dropped, "target_poses": int(len(xt)), "steps": steps_done, "stopped_by": stopped,
        "train_seconds": round(train_s, 1), "history": hist, "config": asdict(cfg),
        "reference": distribution_report(ref[:half], ref[half:], hs, cfg.classifier_steps, cfg.seed),
        "before": distribution_report(ref, before, hs, cfg.classifier_steps, cfg.seed),
        "after": distribution_report(ref, after, hs, cfg.classifier_steps, cfg.seed),
        "mean_shift": float(np.linalg.norm((after - before) * c, axis=-1).mean()),
    }
    if complete.sum() >= 20 and not complete.all():  # the gap without the missing joints' zeros
        report["before_complete"] = distribution_report(ref, before[complete], hs, cfg.classifier_steps, cfg.seed)
        report["after_complete"] = distribution_report(ref, after[complete], hs, cfg.classifier_steps, cfg.seed)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    log(_distance_line(report))
    return adapter, report


def sd_layout(source: PoseSet, source_layout) -> str:
    return get_layout(source_layout or source.layout).name


def _distance_line(rep: dict) -> str:
    def f(d):
        s = f"MMD^2 {d['mmd2']:.4f}"
        if "classifier_acc" in d:
            s += f", domain-classifier accuracy {d['classifier_acc']:.3f}"
        return s
    return (f"adapter: distance to the target (held out): before {f(rep['before'])}; after {f(rep['after'])}; "
            f"target vs target {f(rep['reference'])}; mean joint shift {rep['mean_shift']:.3f} head-root units")


# ------------------------------------------------------------------------------ applying it
def adapt_arrays(adapter: SourceAdapter, source: PoseSet, source_layout=None, batch: int = 8192):
    """``(y, sd)``: normalised adapted poses (N_used, 17, 2) and the :class:`SourceData` they came
    from (``sd.index`` maps them to rows of ``source``)."""
    sd = prepare_source(source, source_layout or adapter.source_layout, adapter.c)
    return _adapt_normalized(adapter, sd, batch=batch), sd


def adapt_poses(adapter: SourceAdapter, source: PoseSet, source_layout=None, imputed_confidence: float = 0.0,
                complete_only: bool = False, batch: int = 8192) -> PoseSet:
    """The source poses adapted into h36m17, in the source's pixel frame (the adapted normalised
    pose mapped back with the source pose's own root and scale).

    Confidence: the conversion's (the detector's) confidence where the joint, or every input of a
    synthesised joint, was present; ``imputed_confidence`` where the adapter imputed it (default 0:
    imputed joints stay missing, the adapter's imputations are measured to be poor). Poses that
    could not be normalised (no root or head) are dropped, and with ``complete_only`` also those
    with any joint the conversion could not produce (the lifter is tested on complete poses).
    Sequence, frame, subject, action and camera are kept; 3D is not (the adapted 2D no longer
    projects from it).
    """
    y, sd = adapt_arrays(adapter, source, source_layout, batch)
    if complete_only:
        keep = (sd.base_conf > 0).all(1)
        y = y[keep]
        sd = SourceData(sd.x[keep], sd.conf[keep], sd.base[keep], sd.base_conf[keep], sd.root[keep],
                        sd.scale[keep], sd.index[keep], sd.dropped + int((~keep).sum()))
    kp = y / sd.scale[:, None, None] + sd.root[:, None]
    conf = np.where(sd.base_conf > 0, sd.base_conf, np.float32(imputed_confidence)).astype(np.float32)
    kp = np.where(conf[..., None] > 0, kp, 0)  # missing joints: confidence 0, coordinates 0
    sub = source.subset(sd.index)
    return PoseSet(keypoints_2d=kp.astype(np.float32), confidence=conf, sequence=sub.sequence, frame=sub.frame,
                   subject=sub.subject, action=sub.action, camera=sub.camera, layout=TARGET_LAYOUT.name,
                   source=f"adapted({source.source or 'source'})")


def convert_only(source: PoseSet, source_layout=None) -> PoseSet:
    """The unadapted baseline: the source in h36m17 by :func:`convert_keypoints` alone, usable
    poses only (root and head present), no 3D."""
    if source_layout is not None and get_layout(source_layout).name != source.layout:
        source = replace(source, layout=get_layout(source_layout).name)
    ps, _ = source.to_layout(TARGET_LAYOUT, allow_missing=True)
    from fastlift.training.inputs import usable_mask
    ps = ps.subset(usable_mask(ps, ROOT, HEAD))
    return replace(ps, keypoints_3d=None, source=f"converted({source.source or 'source'})")


# ------------------------------------------------------------------------------ temporal smoothing
def temporal_smooth(poses: PoseSet, sigma: float = 1.5) -> PoseSet:
    """Confidence-weighted Gaussian smoothing of the 2D keypoints along each sequence.

    Detector jitter is independent from frame to frame while motion at video rates is smooth, so a
    Gaussian of ``sigma`` frames (radius 3 sigma) over the neighbours of the same sequence (matched
    on sequence id and frame number, so gaps are respected) removes most of it. Missing joints
    (confidence 0) take no part and stay missing; confidences are unchanged. Single images (no
    neighbours) pass through unchanged. ``sigma <= 0`` returns ``poses``.
    """
    if sigma <= 0 or len(poses) == 0:
        return poses
    R = max(1, int(math.ceil(3 * sigma)))
    order = np.lexsort((poses.frame, poses.sequence))
    seq, fr = poses.sequence[order], poses.frame[order]
    kp = np.asarray(poses.keypoints_2d, dtype=np.float64)[order]
    w0 = (np.asarray(poses.confidence)[order] > 0).astype(np.float64)
    num = kp * w0[..., None]
    den = w0.copy()
    N = len(order)
    for o in range(1, R + 1):
        g = math.exp(-0.5 * (o / sigma) ** 2)
        for sgn in (1, -1):
            # neighbour at sorted position i + sgn*o, valid when it is frame + sgn*o of the same sequence
            a = np.arange(max(0, -sgn * o), min(N, N - sgn * o))
            b = a + sgn * o
            ok = (seq[a] == seq[b]) & (fr[b] - fr[a] == sgn * o)
            a, b = a[ok], b[ok]
            wb = g * w0[b] * w0[a]
            num[a] += kp[b] * wb[..., None]
            den[a] += wb
    out = np.where(den[..., None] > 0, num / np.maximum(den, 1e-12)[..., None], kp).astype(np.float32)
    res = np.empty_like(out)
    res[order] = out
    res = np.where(np.asarray(poses.confidence)[..., None] > 0, res, 0).astype(np.float32)
    return replace(poses, keypoints_2d=res)


# ------------------------------------------------------------------------------ the CLI hook
def _harmonise(a: PoseSet, b: PoseSet) -> tuple[PoseSet, PoseSet]:
    """Make two sets concatenable: 3D and camera kept only when both have them; subject / action
    filled with a placeholder where one side lacks them."""
    a, b = replace(a), replace(b)
    for name in ("keypoints_3d", "camera"):
        if (getattr(a, name) is None) != (getattr(b, name) is None):
            a, b = replace(a, **{name: None}), replace(b, **{name: None})
    if a.camera is not None and (a.camera.ndim != b.camera.ndim):
        a, b = replace(a, camera=a.camera_rows().copy()), replace(b, camera=b.camera_rows().copy())
    for name, fill in (("subject", "unknown"), ("action", "unknown")):
        va, vb = getattr(a, name), getattr(b, name)
        if va is None and vb is None:
            continue
        va = np.full(len(a), fill) if va is None else np.asarray(va).astype(str)
        vb = np.full(len(b), fill) if vb is None else np.asarray(vb).astype(str)
        a, b = replace(a, **{name: va}), replace(b, **{name: vb})
    return a, b


def target_repeats(n_target: int, n_extra: int, target_fraction: float) -> int:
    """How many copies of the target make it at least ``target_fraction`` of target + extra (>= 1)."""
    if not 0 <= target_fraction < 1:
        raise ValueError(f"target_fraction must be in [0, 1), got {target_fraction}")
    if target_fraction == 0 or n_target == 0:
        return 1
    return max(1, math.ceil(target_fraction * n_extra / ((1 - target_fraction) * n_target) - 1e-9))


def concat_training_data(target: PoseSet, extra: PoseSet, target_fraction: float = 0.0) -> PoseSet:
    """``target`` then ``extra`` (both h36m17) in one PoseSet: sequence ids renumbered to stay
    distinct, 3D and camera kept only when both have them, subject / action filled in. With
    ``target_fraction`` > 0 the target rows are repeated (whole copies, each its own sequences) until
    they are at least that fraction of the poses: the loader then draws target poses that often."""
    a, b = _harmonise(target, extra)
    k = target_repeats(len(a), len(b), target_fraction)
    out = PoseSet.concatenate([a] * k + [b], renumber_sequences=True)
    out.source = target.source
    return out


def load_extra(extra, extra_layout: str | None = None) -> PoseSet:
    """A PoseSet from a path (any format :func:`fastlift.data.load_poses` reads) or a PoseSet.

    ``extra_layout`` names the layout of the extra poses when the file cannot say it (a fastlift
    ``.npz`` without a ``layout`` key reads as h36m17): a set of the same joint count is relabelled,
    a different count is an error.
    """
    if isinstance(extra, PoseSet):
        ps = extra
    else:
        from fastlift.data import load_poses
        if not os.path.exists(os.fspath(extra)):
            raise PoseDataError(f"extra 2D data {extra!r} does not exist")
        ps = load_poses(os.fspath(extra))
    if extra_layout is not None:
        lay = get_layout(extra_layout)
        if ps.layout != lay.name:
            if ps.num_joints != lay.num_joints:
                raise PoseDataError(f"extra 2D data {ps.source or ''}: layout {ps.layout!r} with {ps.num_joints} "
                                    f"joints cannot be read as {lay.name!r} ({lay.num_joints} joints)")
            ps = replace(ps, layout=lay.name)
    return ps


def extend_training_data(target: PoseSet, extra, extra_layout: str | None = None, seed: int = 0, *,
                         adapt: bool = True, smooth_sigma: float = 1.5, complete_only: bool = True,
                         target_fraction: float = 0.5, config: AdapterConfig | None = None,
                         log=print, cache: str | None = None, return_report: bool = False, **overrides):
    """Target poses plus the extra 2D poses, adapted: what ``--extra-2d`` trains the lifter on.

    Args:
        target: the lifter's training poses (h36m17).
        extra: path of the extra 2D poses (any format :func:`fastlift.data.load_poses` reads) or a
            PoseSet.
        extra_layout: their layout when the file does not say it (see :func:`load_extra`).
        seed: seed of the adapter's initialisation and batches.
        adapt: False skips the adapter (and the smoothing): the extra poses are only converted
            (:func:`convert_only`).
        smooth_sigma: temporal smoothing of the extra poses before adapting (frames; see
            :func:`temporal_smooth`; 0: off; no effect on single images).
        complete_only: keep only adapted poses with every joint present (see :func:`adapt_poses`).
        target_fraction: the target poses are repeated until they make at least this fraction of
            the result (0: each pose once; see :func:`concat_training_data`).
        config, overrides: :class:`AdapterConfig` and field overrides (``steps=...``).
        log: progress lines; the adapter's before/after distribution distances are logged.
        cache: optional ``.npz`` path: if it exists the adapted poses are read from it instead of
            retraining the adapter (an exact resume), else they are written to it.
        return_report: also return the adapter's report.

    Returns:
        One PoseSet (h36m17, sequence ids renumbered to stay distinct, 3D dropped unless both
        sides have it), the target rows first; ``(poses, report)`` with ``return_report``.
    """
    log = log or (lambda *a, **k: None)
    if target.layout != TARGET_LAYOUT.name:
        target, _ = target.to_layout(TARGET_LAYOUT)
    report: dict = {}
    if cache and os.path.isfile(cache):
        extra_ps = PoseSet.load(cache, mmap=False)
        log(f"extra 2D data: {len(extra_ps)} adapted poses read from {cache}")
    else:
        src = load_extra(extra, extra_layout)
        if adapt:
            cfg = replace(config or AdapterConfig(), seed=seed, **overrides)
            src = temporal_smooth(src, smooth_sigma)
            adapter, report = train_adapter(target, src, config=cfg, log=log)
            extra_ps = adapt_poses(adapter, src, imputed_confidence=cfg.imputed_confidence,
                                   complete_only=complete_only)
        else:
            extra_ps = convert_only(src)
            log(f"extra 2D data: {len(extra_ps)} of {len(src)} poses converted {src.layout} -> h36m17 "
                f"(not adapted)")
        if cache:
            extra_ps.save(cache)
    out = concat_training_data(target, extra_ps, target_fraction)
    k = target_repeats(len(target), len(extra_ps), target_fraction)
    log(f"training data: {len(target)} target" + (f" x {k}" if k > 1 else "") +
        f" + {len(extra_ps)} {'adapted' if adapt else 'converted'} extra poses = {len(out)}")
    return (out, report) if return_report else out
