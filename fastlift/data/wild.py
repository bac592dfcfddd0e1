"""A synthetic "in the wild" 2D source domain for the 2D domain adapter (docs/adapter.md).

The embedded generator (:mod:`fastlift.data.synthetic`) rendered the way a 2D detector would see
other footage, so that the adapter of :mod:`fastlift.training.adapter` has a measurable domain gap
to close, with ground truth to check it against:

* **another layout**: COCO-17 (nose, eyes, ears instead of pelvis, spine, thorax, head top). The
  face keypoints are placed in a head frame recovered from the generator's thorax, neck/nose and
  head-top joints (:data:`FACE_OFFSETS`).
* **another annotation convention**: COCO hip keypoints sit higher and wider than the hip-joint
  centres of motion capture (:data:`COCO_CONVENTION`), so joints both layouts name the same are
  systematically not the same point; the head top, thorax and pelvis a layout converter
  synthesises from them inherit the offsets.
* **other bodies**: per-subject bone-length ratios from a different distribution (shorter legs,
  longer trunk, arms and head, wider hips by default: :data:`WILD_BODY`), applied along the
  kinematic tree to the generated 3D poses before they are projected.
* **other cameras and motions**: cameras 1.2-2.6 m high at 3.5-7 m (the target's: 1-2 m at
  4.5-5.5 m) and a different mix of motions.
* **detector-like noise**: Gaussian jitter proportional to the person's image height (larger at
  wrists and ankles), occasional outliers, occasional left/right swaps of a limb, missing joints
  (single joints and whole occluded arms; confidence 0, coordinates 0) and confidence scores that
  fall with the error.

``synthetic_wild(n, seed)`` returns a :class:`~fastlift.data.PoseSet` in ``coco17`` (or another
layout made from it). With ``return_truth=True`` it also returns the same poses as the *target*
domain would record them: h36m17, mocap convention, no noise, with 3D (never used for training,
only to measure how close an adapted pose comes to it).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from fastlift.data.errors import PoseDataError
from fastlift.data.layouts import COCO17, H36M17, get_layout
from fastlift.data.poseset import PoseSet

__all__ = ["synthetic_wild", "WILD_BODY", "WILD_MOTIONS", "COCO_CONVENTION", "FACE_OFFSETS", "DETECTOR_NOISE",
           "render_coco17_3d", "rescale_bones", "render_wild"]

#: Mean bone-length ratio (against the generator's own subjects) of the wild subjects, per bone
#: group; each subject draws ``mean * exp(N(0, sd))`` per group, clipped to +-2.5 sd.
WILD_BODY = {"mean": {"legs": 0.93, "torso": 1.07, "arms": 1.05, "head": 1.12, "hips": 1.10, "shoulders": 1.04},
             "sd": 0.06}
#: bone group of each h36m17 joint's bone to its parent (the root has none)
_BONE_GROUP = (None, "hips", "legs", "legs", "hips", "legs", "legs", "torso", "torso", "head", "head",
               "shoulders", "arms", "arms", "shoulders", "arms", "arms")
#: Motion mix of the wild footage (the generator's default is uniform).
WILD_MOTIONS = {"walking": 3.0, "random": 2.0, "reaching": 1.0, "bending": 1.0, "sitting": 0.5, "turning": 1.0}
#: COCO hip keypoints relative to the mocap hip-joint centres: the pelvis->hip vector is scaled by
#: ``hip_width`` and the hips are raised by ``hip_raise`` times the pelvis->spine vector; the
#: shoulders are raised by ``shoulder_raise`` times the spine->thorax vector.
COCO_CONVENTION = {"hip_width": 1.25, "hip_raise": 0.25, "shoulder_raise": 0.08}
#: Face keypoints in the head frame (forward, up, left) at the neck/nose joint, in units of the
#: neck/nose -> head-top bone; left/right pairs take +-left.
FACE_OFFSETS = {"nose": (0.85, 0.15, 0.0), "eye": (0.65, 0.45, 0.30), "ear": (0.05, 0.35, 0.62)}
#: Detector noise (fractions of the person's image height) and failure rates, per joint group.
DETECTOR_NOISE = {
    "sigma": {"face": 0.008, "torso": 0.012, "mid": 0.015, "end": 0.022},
    "outlier_prob": 0.02, "outlier_sigma": 0.08,
    "swap_prob": 0.01,                       # per pose and limb pair (arms, legs)
    "missing_prob": {"face": 0.05, "torso": 0.02, "mid": 0.04, "end": 0.08},
    "arm_occlusion_prob": 0.03,              # per pose: one whole arm missing
    "conf_offset": 0.03, "conf_sigma": 0.05,  # confidence = 1 - offset - error / (0.12 height) + N(0, sigma)
}
_COCO_GROUP = ("face",) * 5 + ("torso", "torso", "mid", "mid", "end", "end", "torso", "torso", "mid", "mid",
                               "end", "end")
_SEED_OFFSET = 1_000_003  # the wild streams never coincide with generate(seed) for seeds < 1e6
_SEQ_OFFSET = 5 * 10**9   # sequence ids distinct from the generator's splits (split * 1e9 + k)


def rescale_bones(k3: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """h36m17 3D poses (N, 17, 3) with every bone scaled by ``ratio`` (N, 17) (ratio[:, j] scales
    the bone from joint j's parent to j), keeping the root and the bone directions."""
    out = np.empty_like(k3)
    out[:, 0] = k3[:, 0]
    for j in range(1, 17):  # h36m17 parents always precede their children
        p = H36M17.parents[j]
        out[:, j] = out[:, p] + ratio[:, j, None] * (k3[:, j] - k3[:, p])
    return out


def _unit(v):
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def render_coco17_3d(k3: np.ndarray, convention: Mapping[str, float] | None = None,
                     face: Mapping[str, Sequence[float]] | None = None) -> np.ndarray:
    """COCO-17 keypoints (N, 17, 3) of h36m17 3D poses (N, 17, 3) from the synthetic generator.

    The head frame comes from the generator's neck construction (:func:`fastlift.data.synthetic._fk`:
    ``neck = thorax + L (0.34 f + 0.94 u)``, ``head = neck + L' (-0.10 f + 0.995 u)``), solved for the
    forward ``f`` and up ``u`` axes; left is ``u x f`` (a right-handed frame stays right-handed in
    the camera frame).
    """
    cv = dict(COCO_CONVENTION, **(convention or {}))
    fo = dict(FACE_OFFSETS, **(face or {}))
    pelvis, spine, thorax, neck, head = k3[:, 0], k3[:, 7], k3[:, 8], k3[:, 9], k3[:, 10]
    v, w = _unit(neck - thorax), _unit(head - neck)
    det = 0.34 * 0.995 + 0.94 * 0.10
    fwd = _unit((0.995 * v - 0.94 * w) / det)
    up = (0.10 * v + 0.34 * w) / det
    up = _unit(up - (up * fwd).sum(-1, keepdims=True) * fwd)
    left = np.cross(up, fwd)
    L = np.linalg.norm(head - neck, axis=-1, keepdims=True)

    def at(off, side=0.0):
        a, b, c = off
        return neck + L * (a * fwd + b * up + side * c * left)

    out = np.empty((k3.shape[0], 17, 3), dtype=np.float32)
    idx = {n: i for i, n in enumerate(COCO17.joint_names)}
    out[:, idx["nose"]] = at(fo["nose"])
    out[:, idx["l_eye"]], out[:, idx["r_eye"]] = at(fo["eye"], 1.0), at(fo["eye"], -1.0)
    out[:, idx["l_ear"]], out[:, idx["r_ear"]] = at(fo["ear"], 1.0), at(fo["ear"], -1.0)
    lift_sho = cv["shoulder_raise"] * (thorax - spine)
    lift_hip = cv["hip_raise"] * (spine - pelvis)
    for side, (hip, knee, ank, sho, elb, wri) in (("l", (4, 5, 6, 11, 12, 13)), ("r", (1, 2, 3, 14, 15, 16))):
        out[:, idx[f"{side}_hip"]] = pelvis + cv["hip_width"] * (k3[:, hip] - pelvis) + lift_hip
        out[:, idx[f"{side}_knee"]], out[:, idx[f"{side}_ankle"]] = k3[:, knee], k3[:, ank]
        out[:, idx[f"{side}_shoulder"]] = k3[:, sho] + lift_sho
        out[:, idx[f"{side}_elbow"]], out[:, idx[f"{side}_wrist"]] = k3[:, elb], k3[:, wri]
    return out


def _project(X: np.ndarray, cam: np.ndarray) -> np.ndarray:
    z = np.maximum(X[..., 2], 1.0)
    uv = np.stack([X[..., 0] / z, X[..., 1] / z], -1)
    return (uv * cam[:, None, :2] + cam[:, None, 2:]).astype(np.float32)


def _detector(rng, uv: np.ndarray, sequence: np.ndarray, noise: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Noisy COCO-17 detections (N, 17, 2) and confidences (N, 17) from clean projections."""
    N = uv.shape[0]
    # person height in pixels, per sequence (median over its frames): the detector's scale
    h_pose = uv[..., 1].max(1) - uv[..., 1].min(1)
    _, inv = np.unique(sequence, return_inverse=True)
    h_seq = np.zeros(inv.max() + 1)
    order = np.argsort(inv, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0, True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        h_seq[inv[order[a]]] = np.median(h_pose[order[a:b]])
    h = np.maximum(h_seq[inv], 1.0)[:, None]                                     # (N, 1)
    groups = np.array(_COCO_GROUP)
    sigma = np.array([noise["sigma"][g] for g in groups])[None, :] * h          # (N, 17)
    err = rng.normal(0, 1, (N, 17, 2)) * sigma[..., None]
    out_mask = rng.uniform(size=(N, 17)) < noise["outlier_prob"]
    err += out_mask[..., None] * rng.normal(0, noise["outlier_sigma"], (N, 17, 2)) * h[..., None]
    det = uv + err.astype(np.float32)
    # left/right swaps of a whole limb (elbow+wrist, knee+ankle)
    for l_idx, r_idx in (((7, 9), (8, 10)), ((13, 15), (14, 16))):
        sw = rng.uniform(size=N) < noise["swap_prob"]
        if sw.any():
            a, b = det[sw][:, list(l_idx)].copy(), det[sw][:, list(r_idx)].copy()
            rows = np.flatnonzero(sw)
            det[np.ix_(rows, list(l_idx))] = b
            det[np.ix_(rows, list(r_idx))] = a
    rel = np.linalg.norm(det - uv, axis=-1) / h                                  # error / height
    conf = 1.0 - noise["conf_offset"] - rel / 0.12 + rng.normal(0, 1, (N, 17)) * noise["conf_sigma"]
    conf = np.clip(conf, 0.05, 1.0).astype(np.float32)
    miss = rng.uniform(size=(N, 17)) < np.array([noise["missing_prob"][g] for g in groups])[None, :]
    arm = rng.uniform(size=N) < noise["arm_occlusion_prob"]
    side = rng.integers(0, 2, N)
    for s, joints in ((0, (7, 9)), (1, (8, 10))):
        miss[np.ix_(np.flatnonzero(arm & (side == s)), list(joints))] = True
    conf[miss] = 0.0
    det[miss] = 0.0
    return det, conf


def synthetic_wild(n_poses: int, seed: int = 0, *, layout: str = "coco17", split: str = "train",
                   n_subjects: int = 64, seq_len: int = 250, motions: Mapping[str, float] | None = None,
                   body: Mapping | None = None, convention: Mapping[str, float] | None = None,
                   noise: Mapping | None = None, noise_scale: float = 1.0,
                   distance_mm: tuple[float, float] = (3500.0, 7000.0),
                   camera_height_mm: tuple[float, float] = (1200.0, 2600.0), return_truth: bool = False,
                   truth_body: str = "wild"):
    """Synthetic 2D poses "in the wild": another layout, convention, bodies, cameras and detector noise.

    Args:
        n_poses: number of poses (sequences of ``seq_len`` frames, the last one cut).
        seed: everything is a deterministic function of the arguments. The wild random streams are
            disjoint from those of :func:`fastlift.data.synthetic.generate` with the same seed.
        layout: ``"coco17"`` (default) or another layout made from it by
            :func:`~fastlift.data.layouts.convert_keypoints` (joints it cannot make are missing).
        split: which synthetic subject pool the motions come from (bodies are re-drawn anyway).
        n_subjects: number of wild subjects (each with its own body proportions).
        motions: motion weights (default :data:`WILD_MOTIONS`).
        body, convention, noise, noise_scale: see :func:`render_wild`.
        distance_mm, camera_height_mm: the wild camera distribution.
        return_truth: also return the target-domain view of the same poses.
        truth_body: ``"wild"``: the truth has the wild subjects' bodies (what a perfect layout and
            noise fix would give); ``"target"``: the bodies before the wild rescaling, drawn from
            the target's body distribution (what a perfect fix of proportions too would give).

    Returns:
        PoseSet in ``layout`` (keypoints_2d px, confidence, sequence, frame, subject ``wildNNN``,
        action, camera; no 3D), or ``(poses, truth)`` with ``truth`` the same poses in h36m17,
        mocap convention, noise-free 2D, with 3D, row for row.
    """
    from fastlift.data import synthetic

    if int(n_poses) < 1:
        raise PoseDataError(f"synthetic_wild: n_poses must be >= 1, got {n_poses}")
    gseed = int(seed) + _SEED_OFFSET
    base = synthetic.generate(int(n_poses), seed=gseed, split=split, seq_len=seq_len,
                              motions=dict(WILD_MOTIONS if motions is None else motions), n_subjects=n_subjects,
                              distance_mm=distance_mm, camera_height_mm=camera_height_mm,
                              min_depth_mm=min(3500.0, 0.8 * distance_mm[0]), with_3d=True)
    if truth_body not in ("wild", "target"):
        raise PoseDataError(f"synthetic_wild: truth_body must be 'wild' or 'target', got {truth_body!r}")
    out = render_wild(base, gseed, layout=layout, body=body, convention=convention, noise=noise,
                      noise_scale=noise_scale, return_truth=return_truth)
    src = f"synthetic_wild(seed={seed}, split={split})"
    if return_truth and truth_body == "target":
        t = out[1]
        k3 = np.asarray(base.keypoints_3d)
        out = (out[0], PoseSet(keypoints_2d=_project(k3, t.camera), keypoints_3d=k3, sequence=t.sequence,
                               frame=t.frame, subject=t.subject, action=t.action, camera=t.camera,
                               layout=H36M17.name))
    if return_truth:
        out[0].source, out[1].source = src, src + " truth"
    else:
        out.source = src
    return out


def render_wild(poses: PoseSet, seed: int = 0, *, layout: str = "coco17", body: Mapping | None = None,
                convention: Mapping[str, float] | None = None, noise: Mapping | None = None,
                noise_scale: float = 1.0, return_truth: bool = False):
    """Render h36m17 poses with 3D and cameras (e.g. from :func:`fastlift.data.synthetic.generate`)
    the way a 2D detector on other footage would see them.

    Args:
        poses: h36m17 PoseSet with ``keypoints_3d`` (camera frame, mm) and ``camera``.
        seed: seed of the bodies and the detector noise.
        layout: ``"coco17"`` or a layout made from it (see :func:`synthetic_wild`).
        body: ``{"mean": {group: ratio}, "sd": float}`` bone-length ratios per subject (default
            :data:`WILD_BODY`); ``{"mean": {}, "sd": 0}`` keeps the bodies as they are.
        convention: overrides of :data:`COCO_CONVENTION` (``hip_width=1, hip_raise=0,
            shoulder_raise=0`` renders the mocap joints themselves).
        noise: overrides of :data:`DETECTOR_NOISE` (top-level keys); ``noise_scale`` multiplies
            every noise level and rate (0: clean, complete detections with confidence 1).
        return_truth: also return the target-domain view (h36m17, noise-free, rescaled 3D).
    """
    if poses.layout != H36M17.name or poses.keypoints_3d is None or poses.camera is None:
        raise PoseDataError("render_wild: needs h36m17 poses with keypoints_3d and camera")
    if noise_scale < 0:
        raise PoseDataError(f"render_wild: noise_scale must be >= 0, got {noise_scale}")
    rng = np.random.default_rng([int(seed), 271828])
    N = len(poses)
    # bodies: one set of bone-group ratios per subject
    bd = {"mean": dict(WILD_BODY["mean"]), "sd": WILD_BODY["sd"]}
    if body is not None:
        bd["mean"] = dict(body.get("mean", bd["mean"]))
        bd["sd"] = float(body.get("sd", bd["sd"]))
    subj_names = poses.subject if poses.subject is not None else np.zeros(N, dtype=np.int64)
    subj, sinv = np.unique(subj_names, return_inverse=True)
    groups = sorted({g for g in _BONE_GROUP if g})
    z = np.clip(rng.normal(0, 1, (len(subj), len(groups))), -2.5, 2.5)
    gratio = {g: np.full(len(subj), bd["mean"].get(g, 1.0)) * np.exp(bd["sd"] * z[:, i])
              for i, g in enumerate(groups)}
    ratio = np.ones((N, 17), dtype=np.float32)
    for j, g in enumerate(_BONE_GROUP):
        if g:
            ratio[:, j] = gratio[g][sinv]
    k3 = rescale_bones(np.asarray(poses.keypoints_3d, dtype=np.float32), ratio)
    if (k3[..., 2] < 300).any():
        raise PoseDataError("render_wild: a joint came closer than 0.3 m to the camera")
    cam = np.asarray(poses.camera_rows(), dtype=np.float32)
    uv = _project(render_coco17_3d(k3, convention), cam)
    nz = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DETECTOR_NOISE.items()}
    if noise:
        for k, v in noise.items():
            if k not in nz:
                raise PoseDataError(f"render_wild: unknown noise key {k!r}; keys: {', '.join(nz)}")
            nz[k] = dict(nz[k], **v) if isinstance(nz[k], dict) else v
    if noise_scale != 1.0:
        for k, v in nz.items():
            nz[k] = {g: x * noise_scale for g, x in v.items()} if isinstance(v, dict) else v * noise_scale
    det, conf = _detector(rng, uv, poses.sequence, nz)
    seq = poses.sequence + _SEQ_OFFSET
    subject = np.array([f"wild{i:03d}" for i in range(len(subj))])[sinv]
    src = f"render_wild({poses.source or 'poses'})"
    out = PoseSet(keypoints_2d=det, confidence=conf, sequence=seq, frame=poses.frame, subject=subject,
                  action=poses.action, camera=cam.copy(), layout=COCO17.name, source=src)
    lay = get_layout(layout)
    if lay.name != COCO17.name:
        out, _ = out.to_layout(lay, allow_missing=True)
    if not return_truth:
        return out
    truth = PoseSet(keypoints_2d=_project(k3, cam), keypoints_3d=k3, sequence=seq, frame=poses.frame,
                    subject=subject, action=poses.action, camera=cam.copy(), layout=H36M17.name,
                    source=src + " truth")
    return out, truth
