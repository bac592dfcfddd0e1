"""Data preparation for the engine: load the training / validation / test pose sets, reject
unusable input with a clear message before any training starts, and compute the statistics the
networks are standardised with.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from fastlift.data.errors import PoseDataError
from fastlift.data.layouts import get_layout
from fastlift.training.config import ConfigError, TrainConfig

__all__ = ["Prepared", "prepare_data", "usable_mask", "check_pose_set", "normalized_2d", "input_stats",
           "supervised_targets", "EvalSet", "make_eval_set", "HEAD_NAMES"]

#: canonical names of the joint whose distance to the root sets the 2D scale, by preference
HEAD_NAMES = ("head_top", "head", "neck_nose", "nose")


def head_index(layout) -> int:
    lay = get_layout(layout)
    for name in HEAD_NAMES:
        if name in lay.canonical:
            return lay.canonical.index(name)
    raise PoseDataError(f"layout {lay.name!r} has no head joint ({', '.join(HEAD_NAMES)}) to normalise 2D poses with")


@dataclass
class Prepared:
    train: object                     # PoseSet (usable poses only)
    val: object | None
    test: object | None
    synthetic: bool
    root: int
    head: int
    notes: list = field(default_factory=list)


def _load(path: str, layout: str):
    from fastlift.data import load_poses
    ps = load_poses(path)
    notes = []
    if ps.layout != layout:
        ps, synth = ps.to_layout(layout)
        notes.append(f"{path}: converted to layout {layout}" + (f" (synthesised: {', '.join(synth)})" if synth else ""))
    return ps, notes


def usable_mask(ps, root: int, head: int, min_joint_fraction: float = 0.5) -> np.ndarray:
    """(N,) bool: poses with root and head present, a non-degenerate head-root distance and at least
    ``min_joint_fraction`` of the joints present (confidence > 0)."""
    conf = np.asarray(ps.confidence)
    k = np.asarray(ps.keypoints_2d)
    d = np.linalg.norm(k[:, head].astype(np.float64) - k[:, root], axis=-1)
    ok = (conf[:, root] > 0) & (conf[:, head] > 0) & (d > 1e-6)
    ok &= (conf > 0).mean(1) >= min_joint_fraction
    ok &= np.isfinite(k).all(axis=(1, 2))
    return ok


def check_pose_set(ps, cfg: TrainConfig, what: str, root: int, head: int, need_3d: bool = False,
                   min_poses: int | None = None):
    """The usable poses of ``ps`` (:func:`usable_mask`); :class:`PoseDataError` when too few remain."""
    src = ps.source or what
    n = len(ps)
    min_poses = cfg.min_poses if min_poses is None else min_poses
    if need_3d and not ps.has_3d:
        raise PoseDataError(f"{what} {src}: has no keypoints_3d; {'supervised training' if what == 'training data' else 'validation'} needs 3D labels")
    if n == 0:
        raise PoseDataError(f"{what} {src}: holds no poses")
    conf = np.asarray(ps.confidence)
    if not (conf > 0).any():
        raise PoseDataError(f"{what} {src}: all joints of all {n} poses are missing (confidence 0, or NaN coordinates)")
    ok = usable_mask(ps, root, head)
    m = int(ok.sum())
    if m < min_poses:
        raise PoseDataError(
            f"{what} {src}: only {m} of {n} poses are usable (root and head present, at least half the joints, "
            f"finite); at least {min_poses} are needed (min_poses)")
    if m < n:
        ps = ps.subset(ok)
    return ps


def prepare_data(cfg: TrainConfig, log=print, extra_cache: str | None = None) -> Prepared:
    """Load and check every pose set the run needs. Raises before training on unusable input.

    With ``cfg.extra_2d`` the extra 2D poses are adapted (:func:`fastlift.training.adapter.extend_training_data`)
    and appended to the training set; ``extra_cache`` (an ``.npz`` path) keeps the adapted poses so
    that a resumed run trains on exactly the same data without retraining the adapter.
    """
    lay = get_layout(cfg.layout)
    root, head = lay.root, head_index(lay)
    notes: list[str] = []
    synthetic = cfg.data is None
    if synthetic:
        from fastlift.data.synthetic import default_splits
        splits = default_splits(cfg.synthetic_seed)
        train, val, test = splits["train"], splits.get("val"), splits.get("test")
        if train.layout != lay.name:
            train = train.to_layout(lay.name)[0]
            val = val.to_layout(lay.name)[0] if val is not None else None
            test = test.to_layout(lay.name)[0] if test is not None else None
        notes.append(f"data: embedded synthetic splits (seed {cfg.synthetic_seed}): train {len(train)}, "
                     f"val {len(val) if val is not None else 0}, test {len(test) if test is not None else 0} poses")
    else:
        train, n = _load(cfg.data, lay.name)
        notes += n
        val = test = None
    if cfg.val is not None:
        val, n = _load(cfg.val, lay.name)
        notes += n
    if cfg.test is not None:
        test, n = _load(cfg.test, lay.name)
        notes += n
    before = len(train)
    train = check_pose_set(train, cfg, "training data", root, head, need_3d=cfg.mode == "supervised")
    if len(train) < before:
        notes.append(f"training data: dropped {before - len(train)} of {before} unusable poses (missing root/head or most joints)")
    if cfg.extra_2d is not None:
        train = _extend(train, cfg, lay, root, head, log, extra_cache, notes)
    if val is not None:
        val = check_pose_set(val, cfg, "validation data", root, head, need_3d=True, min_poses=1)
    if test is not None:
        test = check_pose_set(test, cfg, "test data", root, head, need_3d=True, min_poses=1)
    for nt in notes:
        log(nt)
    return Prepared(train, val, test, synthetic, root, head, notes)


def _extend(train, cfg: TrainConfig, lay, root: int, head: int, log, cache, notes):
    """Training poses plus the adapted extra 2D poses (``--extra-2d``)."""
    from fastlift.training.adapter import TARGET_LAYOUT, extend_training_data
    if cfg.mode == "supervised":
        raise ConfigError("config: extra_2d adds 2D poses without 3D labels; it needs mode = unsupervised")
    if lay.name != TARGET_LAYOUT.name:
        raise ConfigError(f"config: extra_2d needs layout = {TARGET_LAYOUT.name} (the adapter's target layout), "
                          f"got {lay.name!r}")
    for nt in notes:  # the target data's notes first, then the adapter's progress
        log(nt)
    notes.clear()
    t = time.perf_counter()
    out = extend_training_data(train, cfg.extra_2d, cfg.extra_layout, seed=cfg.seed, adapt=cfg.extra_adapt,
                               target_fraction=cfg.extra_target_fraction, log=log, cache=cache,
                               steps=cfg.adapter_steps, threads=cfg.threads)
    notes.append(f"extra 2D data ready in {time.perf_counter() - t:.0f} s")
    return check_pose_set(out, cfg, "training data + extra_2d", root, head, need_3d=False)


def normalized_2d(ps, root: int, head: int, c: float, idx=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample normalised 2D ``(x (N,J,2), confidence (N,J), scale (N,))``, missing joints at 0."""
    from fastlift.data.normalize import normalize_2d_np
    k = np.asarray(ps.keypoints_2d if idx is None else ps.keypoints_2d[idx])
    conf = np.asarray(ps.confidence if idx is None else ps.confidence[idx], dtype=np.float32)
    x, s = normalize_2d_np(k, root=root, head=head, c=c)
    x = np.where(conf[..., None] > 0, x, 0).astype(np.float32)
    return x, conf, s


def input_stats(ps, root: int, head: int, c: float, max_samples: int = 200_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (2J,) of the normalised 2D training poses (strided subsample)."""
    idx = np.arange(0, len(ps), max(1, len(ps) // max_samples))
    x, conf, _ = normalized_2d(ps, root, head, c, idx)
    flat = x.reshape(len(x), -1).astype(np.float64)
    w = np.repeat(conf > 0, 2, axis=1).astype(np.float64)
    n = np.maximum(w.sum(0), 1)
    mean = (flat * w).sum(0) / n
    var = (((flat - mean) ** 2) * w).sum(0) / n
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(np.sqrt(var), dtype=torch.float32)


def supervised_targets(x: torch.Tensor, p3d: torch.Tensor, c_eff: float, root: int = 0) -> torch.Tensor:
    """Depth offsets (N, J) whose lift best matches the 3D labels up to scale.

    With ``z_j = c_eff + k (Z_j - Z_root)`` the lift ``(x_j z_j, y_j z_j)`` should equal
    ``k (X_j - X_root, Y_j - Y_root)``; ``k`` per pose is the least-squares solution of that
    linear condition (exact for a perspective projection of the pose with its root on the optical
    axis). Returns ``d_j = k (Z_j - Z_root)``. ``c_eff`` is the lift's depth at ``d = 0``.
    """
    x = x.double()
    P = (p3d - p3d[:, root:root + 1]).double()
    a = x * P[..., 2:3] - P[..., :2]                  # (N, J, 2)
    b = c_eff * x
    k = -(a * b).sum((1, 2)) / (a * a).sum((1, 2)).clamp_min(1e-12)
    return (k[:, None] * P[..., 2]).float()


@dataclass
class EvalSet:
    """A 3D-labelled set ready for scoring: normalised 2D, confidence, root-relative 3D in mm."""
    x: torch.Tensor
    conf: torch.Tensor
    target: torch.Tensor
    name: str = ""

    def __len__(self):
        return self.x.shape[0]


def make_eval_set(ps, root: int, head: int, c: float, max_samples: int = 0, name: str = "") -> EvalSet:
    """The first ``max_samples`` poses of an evenly strided subsample (all when 0)."""
    n = len(ps)
    idx = np.arange(n) if not max_samples or max_samples >= n else np.linspace(0, n - 1, max_samples).round().astype(np.int64)
    x, conf, _ = normalized_2d(ps, root, head, c, idx)
    k3 = np.asarray(ps.keypoints_3d[idx], dtype=np.float32)
    k3 = k3 - k3[:, root:root + 1]
    return EvalSet(torch.from_numpy(x), torch.from_numpy(conf), torch.from_numpy(k3), name)
