"""Procedural human motion: the embedded default data set (no files needed).

A kinematic h36m17 skeleton with per-subject body proportions (bone lengths around Human3.6M's
means, overall scale sd 5.5 %), joint angles inside anatomical limits, and smooth motion of six
kinds: ``walking``, ``reaching``, ``bending`` (stoop or squat to pick something up), ``sitting``
(stand - sit - stand), ``turning`` (turn on the spot, 90-360 degrees) and ``random`` (smooth
random keyframed poses with one supporting leg). The feet are kept on the ground (the lower ankle
80 mm above it) and the body turns through the full 360 degrees of yaw. Each sequence is filmed by
its own fixed pinhole camera at person height (1.0-2.0 m) looking roughly horizontally at the
person (pitch = the angle to the pelvis + N(0, 2 deg), roll N(0, 2 deg)), 4.5-5.5 m from the
sequence's mean pelvis position, with a 40-60 degree horizontal field of view on a 1000 x 1000 or
1920 x 1080 image. Keypoint noise (Gaussian, pixels) and dropped joints (confidence 0) are
optional.

Everything is vectorised numpy over whole chunks of sequences; about a million poses take a few
seconds. The output is deterministic for given arguments. Splits use disjoint synthetic subjects
(train, val, test) and different random streams. ``keypoints_3d`` (camera frame, mm) is kept so
that a lifter trained on the 2D can be evaluated in 3D.

World frame used internally: x, y horizontal, z up (mm). Body frame: x forward, y the person's
left, z up.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from fastlift.data.errors import PoseDataError
from fastlift.data.layouts import H36M17, HEAD, ROOT
from fastlift.data.poseset import PoseSet

__all__ = ["generate", "default_splits", "MOTIONS", "SPLITS", "BONE_LENGTHS_MM", "JOINT_LIMITS_DEG",
           "subject_bodies"]

MOTIONS = ("walking", "reaching", "bending", "sitting", "turning", "random")
SPLITS = {"train": 0, "val": 1, "test": 2}
#: synthetic subjects per split (disjoint ids: train 0..23, val 24..27, test 28..31).
DEFAULT_SUBJECTS = {"train": 24, "val": 4, "test": 4}

#: Mean bone lengths (mm), close to Human3.6M's training-subject means.
BONE_LENGTHS_MM = {
    "hip": 132.9,        # pelvis -> hip (lateral)
    "thigh": 442.9,      # hip -> knee
    "shin": 454.2,       # knee -> ankle
    "spine": 233.4,      # pelvis -> spine
    "chest": 257.1,      # spine -> thorax
    "neck": 121.1,       # thorax -> neck/nose
    "head": 115.0,       # neck/nose -> head top
    "clavicle": 151.0,   # thorax -> shoulder
    "upper_arm": 278.9,  # shoulder -> elbow
    "forearm": 251.7,    # elbow -> wrist
}
ANKLE_HEIGHT_MM = 80.0

#: Joint angle limits (degrees). Flexion is positive forward (hip, shoulder, trunk), knee and
#: elbow flexion positive; abduction positive away from the body; root_pitch is the forward tilt
#: of the pelvis.
JOINT_LIMITS_DEG = {
    "root_pitch": (-20, 75), "root_roll": (-15, 15),
    "spine_flex": (-20, 50), "spine_lat": (-25, 25), "spine_twist": (-35, 35),
    "chest_flex": (-15, 35), "chest_twist": (-25, 25),
    "neck_flex": (-40, 50), "neck_yaw": (-70, 70), "neck_lat": (-30, 30),
    "hip_flex": (-25, 125), "hip_abd": (-20, 50), "hip_rot": (-35, 40), "knee": (0, 150),
    "sho_flex": (-50, 175), "sho_abd": (-20, 160), "sho_rot": (-70, 70), "elbow": (0, 150),
}
_SIDED = ("hip_flex", "hip_abd", "hip_rot", "knee", "sho_flex", "sho_abd", "sho_rot", "elbow")
_CENTRAL = ("root_pitch", "root_roll", "spine_flex", "spine_lat", "spine_twist", "chest_flex", "chest_twist",
            "neck_flex", "neck_yaw", "neck_lat")
ANGLES = _CENTRAL + tuple(f"{a}_{s}" for a in _SIDED for s in "lr")
_NEUTRAL = {"sho_abd": 7.0, "elbow": 12.0, "knee": 3.0, "hip_flex": 2.0, "hip_abd": 3.0, "root_pitch": 3.0}
_CHUNK_POSES = 120_000


# ---------------------------------------------------------------------------------------------
# bodies
def subject_bodies(seed: int, subject_ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Bone lengths (mm) of the given synthetic subjects: dict bone -> (len(subject_ids),).

    A subject's body depends only on (seed, subject id): an overall scale N(1, 0.055) clipped to
    [0.86, 1.16] times a per-bone ratio N(1, 0.035) clipped to [0.9, 1.1]; left and right equal.
    """
    out = {k: np.empty(len(subject_ids)) for k in BONE_LENGTHS_MM}
    for i, sid in enumerate(subject_ids):
        rng = np.random.default_rng([int(seed), 7919, int(sid)])
        scale = float(np.clip(rng.normal(1.0, 0.055), 0.86, 1.16))
        for k, base in BONE_LENGTHS_MM.items():
            out[k][i] = base * scale * float(np.clip(rng.normal(1.0, 0.035), 0.9, 1.1))
    return out


# ---------------------------------------------------------------------------------------------
# smooth signals, all (S, T) float64
def _smooth_noise(rng, S, t, amp, fmin=0.15, fmax=0.8, K=2):
    """Sum of K random sinusoids (frequencies in [fmin, fmax] Hz), RMS ``amp``; (S, T)."""
    f = rng.uniform(fmin, fmax, (S, K)).astype(np.float32)
    ph = rng.uniform(0, 2 * np.pi, (S, K)).astype(np.float32)
    w = rng.uniform(0.5, 1.0, (S, K))
    w = (w / np.sqrt((w ** 2).sum(-1, keepdims=True) / 2)).astype(np.float32)  # unit RMS
    tt = (2 * np.pi * t).astype(np.float32)[None, :]
    out = np.zeros((S, len(t)), dtype=np.float32)
    for k in range(K):
        out += w[:, k:k + 1] * np.sin(f[:, k:k + 1] * tt + ph[:, k:k + 1])
    return np.asarray(amp, dtype=np.float32).reshape(-1, 1) * out


def _keyframes(rng, S, t, lo, hi, hold=(0.6, 1.8), values=None, spline=False):
    """Random keyframe track: values uniform in [lo, hi] at random times (gaps uniform in
    ``hold`` seconds), eased between keys (smoothstep: stop at every key) or a Catmull-Rom spline
    (``spline=True``: moves through keys)."""
    dur = float(t[-1]) if len(t) else 0.0
    K = int(math.ceil((dur + 2 * hold[1]) / hold[0])) + 4 if values is None else values.shape[1]
    gaps = rng.uniform(hold[0], hold[1], (S, K))
    times = np.cumsum(gaps, axis=1) - gaps[:, :2].sum(1, keepdims=True) - rng.uniform(0, 1, (S, 1)) * gaps[:, 1:2]
    if values is None:
        lo = np.broadcast_to(np.asarray(lo, dtype=np.float64).reshape(-1, 1), (S, 1))
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64).reshape(-1, 1), (S, 1))
        values = lo + (hi - lo) * rng.uniform(0, 1, (S, K))
    # segment of each frame: searchsorted over the rows laid end to end (no (S, T, K) temporary)
    span = float(times.max() - times.min()) + float(t[-1] if len(t) else 0.0) + 1.0
    offs = np.arange(S)[:, None] * span
    seg = np.searchsorted((times + offs).ravel(), (t[None, :] + offs).ravel(), side="right").reshape(S, -1)
    seg = np.clip(seg - 1 - np.arange(S)[:, None] * K, 1, K - 3) + np.arange(S)[:, None] * K
    tk = lambda a, o: a.ravel()[seg + o]  # noqa: E731
    t0, t1 = tk(times, 0), tk(times, 1)
    u = np.clip((t[None, :] - t0) / (t1 - t0), 0.0, 1.0)
    v0, v1 = tk(values, 0), tk(values, 1)
    if not spline:
        s = u * u * (3 - 2 * u)
        return v0 + (v1 - v0) * s
    vm, vp = tk(values, -1), tk(values, 2)
    tm, tp = tk(times, -1), tk(times, 2)
    m0 = (v1 - vm) / (t1 - tm) * (t1 - t0)
    m1 = (vp - v0) / (tp - t0) * (t1 - t0)
    u2, u3 = u * u, u * u * u
    return (2 * u3 - 3 * u2 + 1) * v0 + (u3 - 2 * u2 + u) * m0 + (-2 * u3 + 3 * u2) * v1 + (u3 - u2) * m1


def _alternating(rng, S, t, lo_a, hi_a, lo_b, hi_b, hold):
    """Keyframe track alternating between two ranges (e.g. stand / sit)."""
    dur = float(t[-1]) if len(t) else 0.0
    K = int(math.ceil((dur + 2 * hold[1]) / hold[0])) + 4
    a = rng.uniform(lo_a, hi_a, (S, K))
    b = rng.uniform(lo_b, hi_b, (S, K))
    parity = (np.arange(K)[None, :] + rng.integers(0, 2, (S, 1))) % 2
    return _keyframes(rng, S, t, 0, 0, hold=hold, values=np.where(parity == 0, a, b))


def _wrapped_gauss(c, mu, sigma):
    d = np.mod(c - mu + 0.5, 1.0) - 0.5
    return np.exp(-0.5 * (d / sigma) ** 2)


def _u(rng, S, lo, hi):
    return rng.uniform(lo, hi, (S, 1))


# ---------------------------------------------------------------------------------------------
# motions: each returns (angles dict of (S, T) degrees, heading (S, T) rad, xy (S, T, 2) mm)
def _base(S, T):
    return {a: np.full((S, T), _NEUTRAL.get(a.rsplit("_", 1)[0] if a.endswith(("_l", "_r")) else a, 0.0))
            for a in ANGLES}


def _gait(A, c_l, amp_hip, amp_knee_swing, amp_knee_stance=14.0, amp_arm=None, active=1.0):
    """Sagittal gait angles from the cycle phase of the left leg (c_l, cycles)."""
    c_r = c_l + 0.5
    for side, c in (("l", c_l), ("r", c_r)):
        A[f"hip_flex_{side}"] += active * (6.0 + amp_hip * np.cos(2 * np.pi * (c - 0.95)))
        A[f"knee_{side}"] += active * (amp_knee_stance * _wrapped_gauss(c, 0.13, 0.07)
                                       + amp_knee_swing * _wrapped_gauss(c, 0.72, 0.09))
    if amp_arm is not None:
        for side, c in (("l", c_r), ("r", c_l)):  # each arm swings with the opposite leg
            sw = amp_arm * np.cos(2 * np.pi * (c - 0.95))
            A[f"sho_flex_{side}"] += active * sw
            A[f"elbow_{side}"] += active * (8.0 + 0.45 * np.clip(sw, 0, None))


def _walking(rng, S, t, fps, legs):
    T = len(t)
    A = _base(S, T)
    f = _u(rng, S, 0.8, 1.05)
    c = f * t[None, :] + _u(rng, S, 0, 1)
    _gait(A, c, _u(rng, S, 17, 24), _u(rng, S, 50, 62), amp_arm=_u(rng, S, 8, 22))
    cl = np.mod(c, 1.0)
    twist = _u(rng, S, 3, 7) * np.cos(2 * np.pi * (cl - 0.95))
    A["chest_twist"] -= 0.8 * twist
    A["root_roll"] += _u(rng, S, 1, 4) * np.sin(4 * np.pi * cl)
    A["root_pitch"] += _u(rng, S, 1, 7)
    A["hip_abd_l"] += 2.0 * np.cos(2 * np.pi * (cl - 0.3))
    A["hip_abd_r"] += 2.0 * np.cos(2 * np.pi * (cl + 0.2))
    A["sho_abd_l"] += _u(rng, S, 0, 8)
    A["sho_abd_r"] += _u(rng, S, 0, 8)
    A["neck_yaw"] += _smooth_noise(rng, S, t, 15.0, 0.1, 0.4)
    A["neck_flex"] += _u(rng, S, -5, 15)
    omega = np.where(rng.uniform(size=(S, 1)) < 0.5, -1.0, 1.0) * _u(rng, S, 0.4, 1.0)  # curved paths
    heading = _u(rng, S, -np.pi, np.pi) + omega * t[None, :] + _smooth_noise(rng, S, t, 0.15, 0.05, 0.2)
    speed = f * _u(rng, S, 1.15, 1.5) * legs[:, None] / (BONE_LENGTHS_MM["thigh"] + BONE_LENGTHS_MM["shin"]) * 1000.0
    xy = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], -1) * (speed / fps)[..., None], axis=1)
    return A, heading + np.deg2rad(twist), xy


def _reaching(rng, S, t, fps, legs):
    T = len(t)
    A = _base(S, T)
    side = rng.integers(0, 3, S)  # 0 left arm, 1 right arm, 2 both
    for s_i, s in enumerate("lr"):
        active = ((side == s_i) | (side == 2))[:, None]
        flex = _keyframes(rng, S, t, -20, 170, hold=(0.5, 1.6))
        abd = _keyframes(rng, S, t, 0, 100, hold=(0.5, 1.6))
        rot = _keyframes(rng, S, t, -40, 40, hold=(0.5, 1.6))
        elbow = _keyframes(rng, S, t, 0, 110, hold=(0.5, 1.6)) * (1 - 0.5 * np.clip(flex / 150.0, 0, 1))
        rflex = _keyframes(rng, S, t, -10, 25, hold=(0.8, 2.0))
        rabd = _keyframes(rng, S, t, 0, 15, hold=(0.8, 2.0))
        relb = _keyframes(rng, S, t, 5, 60, hold=(0.8, 2.0))
        A[f"sho_flex_{s}"] = np.where(active, flex, rflex)
        A[f"sho_abd_{s}"] = np.where(active, abd, rabd)
        A[f"sho_rot_{s}"] = np.where(active, rot, 0.0)
        A[f"elbow_{s}"] = np.where(active, elbow, relb)
    squat = _keyframes(rng, S, t, 0, 18, hold=(0.8, 2.0))
    for s in "lr":
        A[f"hip_flex_{s}"] += squat + _keyframes(rng, S, t, -4, 4, hold=(0.8, 2.0))
        A[f"knee_{s}"] += 1.6 * squat
        A[f"hip_abd_{s}"] += _keyframes(rng, S, t, -4, 7, hold=(0.8, 2.0))
    lean = _keyframes(rng, S, t, -3, 25, hold=(0.6, 1.8))
    A["root_pitch"] += lean
    A["hip_flex_l"] += lean
    A["hip_flex_r"] += lean
    A["spine_flex"] += _keyframes(rng, S, t, -10, 25, hold=(0.6, 1.8))
    A["spine_twist"] += _keyframes(rng, S, t, -25, 25, hold=(0.6, 1.8))
    A["spine_lat"] += _keyframes(rng, S, t, -12, 12, hold=(0.6, 1.8))
    A["neck_flex"] += _keyframes(rng, S, t, -30, 35, hold=(0.6, 1.8))
    A["neck_yaw"] += _keyframes(rng, S, t, -50, 50, hold=(0.6, 1.8))
    heading = _u(rng, S, -np.pi, np.pi) + np.deg2rad(_keyframes(rng, S, t, -25, 25, hold=(1.0, 2.5)))
    return A, heading, np.zeros((S, T, 2))


def _bending(rng, S, t, fps, legs):
    T = len(t)
    A = _base(S, T)
    b = _alternating(rng, S, t, 0.0, 0.12, 0.5, 1.0, hold=(0.9, 2.2))
    q = _u(rng, S, 0, 1)  # 0 stoop (bend at the hips), 1 squat
    pitch = b * (55 * (1 - q) + 25 * q)
    A["root_pitch"] += pitch
    A["spine_flex"] += b * (30 * (1 - q) + 15 * q)
    A["chest_flex"] += b * (18 * (1 - q) + 10 * q)
    trunk = pitch + A["spine_flex"] + A["chest_flex"]
    for s in "lr":
        A[f"hip_flex_{s}"] += pitch + b * (5 * (1 - q) + 95 * q) + _keyframes(rng, S, t, -5, 5, hold=(0.8, 2.0))
        A[f"knee_{s}"] += b * (12 * (1 - q) + 115 * q)
        A[f"hip_abd_{s}"] += b * q * _u(rng, S, 0, 20)
        A[f"sho_flex_{s}"] += trunk * _u(rng, S, 0.7, 1.05) + _keyframes(rng, S, t, -10, 20, hold=(0.6, 1.5))
        A[f"elbow_{s}"] += _keyframes(rng, S, t, 0, 40, hold=(0.6, 1.5))
        A[f"sho_abd_{s}"] += _keyframes(rng, S, t, 0, 20, hold=(0.6, 1.5))
    A["neck_flex"] += -trunk * _u(rng, S, -0.1, 0.45)
    heading = _u(rng, S, -np.pi, np.pi) + np.deg2rad(_keyframes(rng, S, t, -15, 15, hold=(1.0, 2.5)))
    return A, heading, np.zeros((S, T, 2))


def _sitting(rng, S, t, fps, legs):
    T = len(t)
    A = _base(S, T)
    s = _alternating(rng, S, t, 0.0, 0.0, 1.0, 1.0, hold=(1.2, 3.0))
    trans = 4 * s * (1 - s)
    hip_seat, knee_seat = _u(rng, S, 75, 100), _u(rng, S, 70, 110)
    pitch = s * _u(rng, S, -15, 8) + 35 * trans
    A["root_pitch"] += pitch
    A["spine_flex"] += s * _keyframes(rng, S, t, -5, 20, hold=(0.8, 2.0))
    for side in "lr":
        A[f"hip_flex_{side}"] += pitch + s * (hip_seat + _u(rng, S, -8, 8))
        A[f"knee_{side}"] += s * (knee_seat + _u(rng, S, -10, 10))
        A[f"hip_abd_{side}"] += s * _u(rng, S, 0, 15)
        A[f"sho_flex_{side}"] += _keyframes(rng, S, t, -5, 50, hold=(0.8, 2.2))
        A[f"sho_abd_{side}"] += _keyframes(rng, S, t, 0, 25, hold=(0.8, 2.2))
        A[f"elbow_{side}"] += _keyframes(rng, S, t, 10, 100, hold=(0.8, 2.2))
        A[f"sho_rot_{side}"] += _keyframes(rng, S, t, -20, 30, hold=(0.8, 2.2))
    A["neck_flex"] += _keyframes(rng, S, t, -20, 35, hold=(0.8, 2.0))
    A["neck_yaw"] += _keyframes(rng, S, t, -45, 45, hold=(0.8, 2.0))
    heading = _u(rng, S, -np.pi, np.pi) + np.deg2rad(_keyframes(rng, S, t, -10, 10, hold=(1.0, 2.5)))
    return A, heading, np.zeros((S, T, 2))


def _turning(rng, S, t, fps, legs):
    T = len(t)
    A = _base(S, T)
    dur_total = max(float(t[-1]), 1e-3)
    sign = np.where(rng.uniform(size=(S, 1)) < 0.5, -1.0, 1.0)
    delta = sign * np.deg2rad(_u(rng, S, 90, 360))
    dur = np.minimum(_u(rng, S, 1.2, 2.8), 0.9 * dur_total)
    t0 = _u(rng, S, 0, 1) * (dur_total - dur)
    u = np.clip((t[None, :] - t0) / dur, 0, 1)
    heading = _u(rng, S, -np.pi, np.pi) + delta * u * u * (3 - 2 * u)
    active = np.sin(np.pi * u)
    c = _u(rng, S, 1.0, 1.4) * t[None, :] + _u(rng, S, 0, 1)
    _gait(A, c, _u(rng, S, 8, 14), _u(rng, S, 20, 35), amp_knee_stance=6.0, amp_arm=_u(rng, S, 3, 10),
          active=active)
    A["neck_yaw"] += sign * 25 * active
    A["spine_twist"] += sign * 8 * active
    for s in "lr":
        A[f"sho_abd_{s}"] += _u(rng, S, 0, 10)
        A[f"elbow_{s}"] += _keyframes(rng, S, t, 0, 40, hold=(0.8, 2.0))
    return A, heading, np.zeros((S, T, 2))


_RANDOM_RANGES = {
    "sho_flex": (-40, 150), "sho_abd": (-5, 100), "sho_rot": (-45, 45), "elbow": (0, 130),
    "spine_flex": (-15, 35), "spine_lat": (-15, 15), "spine_twist": (-25, 25), "chest_flex": (-10, 20),
    "chest_twist": (-15, 15), "neck_flex": (-25, 35), "neck_yaw": (-50, 50), "neck_lat": (-15, 15),
    "root_pitch": (-5, 25), "root_roll": (-8, 8),
}


def _random(rng, S, t, fps, legs):
    T = len(t)
    A = _base(S, T)
    hold = (0.7, 2.0)
    for name, (lo, hi) in _RANDOM_RANGES.items():
        names = [f"{name}_l", f"{name}_r"] if name in _SIDED else [name]
        for n in names:
            A[n] = _keyframes(rng, S, t, lo, hi, hold=hold, spline=True)
    support = rng.integers(0, 2, S)[:, None]  # which leg carries the weight
    for i, s in enumerate("lr"):
        sup = support == i
        A[f"hip_flex_{s}"] = A["root_pitch"] + np.where(
            sup, _keyframes(rng, S, t, -10, 25, hold=hold, spline=True),
            _keyframes(rng, S, t, -15, 85, hold=hold, spline=True))
        A[f"knee_{s}"] = np.where(sup, _keyframes(rng, S, t, 0, 35, hold=hold, spline=True),
                                  _keyframes(rng, S, t, 0, 100, hold=hold, spline=True))
        A[f"hip_abd_{s}"] = np.where(sup, _keyframes(rng, S, t, -5, 12, hold=hold, spline=True),
                                     _keyframes(rng, S, t, -8, 35, hold=hold, spline=True))
        A[f"hip_rot_{s}"] = _keyframes(rng, S, t, -25, 25, hold=hold, spline=True)
    heading = _keyframes(rng, S, t, -np.pi, np.pi, hold=(1.0, 3.0), spline=True) + _u(rng, S, -np.pi, np.pi)
    return A, heading, np.zeros((S, T, 2))


_MOTION_FUNCS = {"walking": _walking, "reaching": _reaching, "bending": _bending, "sitting": _sitting,
                 "turning": _turning, "random": _random}


# ---------------------------------------------------------------------------------------------
# kinematics
# A rotation frame is kept as its three columns (x, y, z), each (N, 3): right-multiplying by an
# elementary rotation only mixes two columns, which is far cheaper than (N, 3, 3) matmuls.
_AXES = ((1, 2), (2, 0), (0, 1))  # rotation about x mixes (y, z), about y (z, x), about z (x, y)


def _rotate(G, axis: int, a: np.ndarray):
    """Frame G (tuple of 3 columns) times the elementary rotation about local ``axis`` by ``a``."""
    i, j = _AXES[axis]
    c, s = np.cos(a)[:, None], np.sin(a)[:, None]
    out = list(G)
    out[i] = c * G[i] + s * G[j]
    out[j] = c * G[j] - s * G[i]
    return tuple(out)


def _fk(ang: Mapping[str, np.ndarray], heading: np.ndarray, body: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, 17, 3) joint positions relative to the pelvis, world axes (z up), mm.

    ``ang`` holds (N,) radians, ``heading`` (N,) radians (body x axis = (cos, sin, 0)), ``body``
    (N,) bone lengths in mm. Rotations: x = forward, y = the person's left, z = up in the parent
    frame; a positive rotation about y tilts up towards forward.
    """
    N = heading.shape[0]
    dt = heading.dtype
    J = np.zeros((N, 17, 3), dtype=dt)
    ch, sh = np.cos(heading), np.sin(heading)
    zero, one = np.zeros(N, dt), np.ones(N, dt)
    G0 = (np.stack([ch, sh, zero], 1), np.stack([-sh, ch, zero], 1), np.stack([zero, zero, one], 1))
    G0 = _rotate(_rotate(G0, 1, ang["root_pitch"]), 0, ang["root_roll"])
    L = {k: v[:, None] for k, v in body.items()}
    for side, sgn, hip_j, knee_j, ankle_j in (("l", 1.0, 4, 5, 6), ("r", -1.0, 1, 2, 3)):
        hip = sgn * L["hip"] * G0[1]
        Gt = _rotate(_rotate(_rotate(G0, 1, -ang[f"hip_flex_{side}"]), 0, sgn * ang[f"hip_abd_{side}"]),
                     2, sgn * ang[f"hip_rot_{side}"])
        knee = hip - L["thigh"] * Gt[2]
        Gs = _rotate(Gt, 1, ang[f"knee_{side}"])
        J[:, hip_j], J[:, knee_j], J[:, ankle_j] = hip, knee, knee - L["shin"] * Gs[2]
    Gsp = _rotate(_rotate(_rotate(G0, 1, ang["spine_flex"]), 0, ang["spine_lat"]), 2, ang["spine_twist"])
    spine = L["spine"] * Gsp[2]
    Gch = _rotate(_rotate(Gsp, 1, ang["chest_flex"]), 2, ang["chest_twist"])
    thorax = spine + L["chest"] * Gch[2]
    Gnk = _rotate(_rotate(_rotate(Gch, 1, ang["neck_flex"]), 2, ang["neck_yaw"]), 0, ang["neck_lat"])
    neck = thorax + L["neck"] * (0.34 * Gnk[0] + 0.94 * Gnk[2])
    head = neck + L["head"] * (-0.10 * Gnk[0] + 0.995 * Gnk[2])
    J[:, 7], J[:, 8], J[:, 9], J[:, 10] = spine, thorax, neck, head
    for side, sgn, sho_j, elb_j, wri_j in (("l", 1.0, 11, 12, 13), ("r", -1.0, 14, 15, 16)):
        sho = thorax + L["clavicle"] * (-0.08 * Gch[0] + sgn * 0.985 * Gch[1] - 0.15 * Gch[2])
        Gua = _rotate(_rotate(_rotate(Gch, 1, -ang[f"sho_flex_{side}"]), 0, sgn * ang[f"sho_abd_{side}"]),
                      2, sgn * ang[f"sho_rot_{side}"])
        elbow = sho - L["upper_arm"] * Gua[2]
        Gfa = _rotate(Gua, 1, -ang[f"elbow_{side}"])
        J[:, sho_j], J[:, elb_j], J[:, wri_j] = sho, elbow, elbow - L["forearm"] * Gfa[2]
    return J


def _look_at(cam_pos, target, roll):
    """(S, 3, 3) world -> camera rotation (rows: right, down, forward) looking from cam_pos at target."""
    f = target - cam_pos
    f /= np.linalg.norm(f, axis=-1, keepdims=True)
    up = np.array([0.0, 0.0, 1.0])
    r = np.cross(f, up)
    r /= np.linalg.norm(r, axis=-1, keepdims=True)
    d = np.cross(f, r)
    c, s = np.cos(roll)[:, None], np.sin(roll)[:, None]
    r2, d2 = c * r + s * d, -s * r + c * d
    return np.stack([r2, d2, f], axis=1)


# ---------------------------------------------------------------------------------------------
def _generate_chunk(rng, S, T, fps, motion_names, motion_p, bodies_all, subj_of_seq, cfg):
    t = np.arange(T) / float(fps)
    mot = rng.choice(len(motion_names), size=S, p=motion_p)
    legs_all = bodies_all["thigh"] + bodies_all["shin"]
    A = {a: np.empty((S, T), dtype=np.float32) for a in ANGLES}
    heading = np.empty((S, T))
    xy = np.empty((S, T, 2))
    for m, name in enumerate(motion_names):
        sel = np.flatnonzero(mot == m)
        if len(sel) == 0:
            continue
        a, h, p = _MOTION_FUNCS[name](rng, len(sel), t, fps, legs_all[subj_of_seq[sel]])
        for k in ANGLES:
            A[k][sel] = a[k]
        heading[sel], xy[sel] = h, p
    # idle variation on every joint, then the anatomical limits
    for k in ANGLES:
        base = k.rsplit("_", 1)[0] if k.endswith(("_l", "_r")) else k
        amp = 3.0 if base.startswith(("sho", "elbow")) else 2.0 if base in _CENTRAL else 1.5
        lo, hi = JOINT_LIMITS_DEG[base]
        A[k] = np.clip(A[k] + _smooth_noise(rng, S, t, amp, 0.2, 1.0), lo, hi)
    N = S * T
    f32 = np.float32
    ang = {k: np.deg2rad(v).reshape(N) for k, v in A.items()}
    body = {k: np.repeat(v[subj_of_seq], T).astype(f32) for k, v in bodies_all.items()}
    J = _fk(ang, heading.reshape(N).astype(f32), body).reshape(S, T, 17, 3)
    # feet on the ground: the lower ankle ANKLE_HEIGHT_MM above z = 0
    world = J
    world[..., 2] += ANKLE_HEIGHT_MM - np.minimum(J[:, :, 3, 2], J[:, :, 6, 2])[:, :, None]
    world[..., :2] += xy[:, :, None, :].astype(f32)
    # one camera per sequence, looking at the mean pelvis position from 4.5-5.5 m (pushed back if
    # the path comes closer than min_depth)
    target = world[:, :, ROOT].mean(axis=1, dtype=np.float64)
    az = rng.uniform(-np.pi, np.pi, S)
    dist = rng.uniform(*cfg["distance_mm"], S)
    height = rng.uniform(*cfg["camera_height_mm"], S)
    look = np.stack([np.cos(az), np.sin(az)], -1)
    along = ((world[:, :, ROOT, :2] - target[:, None, :2]) * look[:, None, :]).sum(-1).min(axis=1)
    dist = np.maximum(dist, cfg["min_depth_mm"] - along)
    cam_pos = np.concatenate([target[:, :2] - dist[:, None] * look, height[:, None]], -1)
    aim = target.copy()
    aim[:, 2] += np.tan(np.deg2rad(rng.normal(0, cfg["pitch_jitter_deg"], S))) * dist
    R = _look_at(cam_pos, aim, np.deg2rad(rng.normal(0, cfg["roll_deg"], S)))
    world -= cam_pos[:, None, None, :].astype(f32)
    X = np.matmul(world.reshape(S, T * 17, 3), R.transpose(0, 2, 1).astype(f32)).reshape(S, T, 17, 3)
    sizes = np.asarray(cfg["image_sizes"], dtype=np.float64)
    size = sizes[rng.integers(0, len(sizes), S)]
    hfov = np.deg2rad(rng.uniform(*cfg["hfov_deg"], S))
    fx = size[:, 0] / 2 / np.tan(hfov / 2)
    fy = fx * (1 + rng.normal(0, 0.002, S))
    cx = size[:, 0] / 2 + rng.normal(0, 8, S)
    cy = size[:, 1] / 2 + rng.normal(0, 8, S)
    cam = np.stack([fx, fy, cx, cy], -1)
    z = X[..., 2]
    if (z < 500).any():
        raise PoseDataError("synthetic: a joint came closer than 0.5 m to the camera; raise distance_mm")
    uv = np.empty((S, T, 17, 2), dtype=f32)
    np.divide(X[..., 0], z, out=uv[..., 0])
    np.divide(X[..., 1], z, out=uv[..., 1])
    uv *= cam[:, None, None, :2].astype(f32)
    uv += cam[:, None, None, 2:].astype(f32)
    conf = np.ones((S, T, 17), dtype=np.float32)
    if cfg["noise_px"] > 0:
        uv += rng.normal(0, cfg["noise_px"], uv.shape).astype(f32)
    if cfg["drop_prob"] > 0:
        drop = rng.uniform(size=conf.shape) < cfg["drop_prob"]
        drop[..., list(cfg["keep_joints"])] = False
        conf[drop] = 0
        uv[drop] = 0
    return (uv.reshape(N, 17, 2).astype(np.float32), X.reshape(N, 17, 3).astype(np.float32), conf.reshape(N, 17),
            np.repeat(cam, T, axis=0).astype(np.float32), mot)


def generate(n_poses: int | None = None, *, n_sequences: int | None = None, seed: int = 0, split: str = "train",
             seq_len: int = 250, fps: float = 50.0, motions: Sequence[str] | Mapping[str, float] | None = None,
             n_subjects: int | None = None, noise_px: float = 0.0, drop_prob: float = 0.0,
             keep_joints: Sequence[int] = (ROOT, HEAD), distance_mm: tuple[float, float] = (4500.0, 5500.0),
             camera_height_mm: tuple[float, float] = (1000.0, 2000.0), hfov_deg: tuple[float, float] = (40.0, 60.0),
             image_sizes: Sequence[tuple[int, int]] = ((1000, 1000), (1920, 1080)), pitch_jitter_deg: float = 2.0,
             roll_deg: float = 2.0, min_depth_mm: float = 3500.0, with_3d: bool = True) -> PoseSet:
    """Generate synthetic h36m17 poses.

    Args:
        n_poses: number of poses; sequences of ``seq_len`` frames are made and the last one is cut.
        n_sequences: alternatively, the number of whole sequences.
        seed: everything is a deterministic function of the arguments.
        split: ``"train"``, ``"val"`` or ``"test"``: which disjoint synthetic subjects to use.
        seq_len: frames per sequence; fps: frames per second (motion speed in frames).
        motions: subset of :data:`MOTIONS`, or a dict motion -> weight (default: all, equal weight).
        n_subjects: subjects in the split (default 24 / 4 / 4 for train / val / test).
        noise_px: standard deviation of Gaussian 2D keypoint noise, pixels (default 0).
        drop_prob: probability that a joint is dropped (confidence 0, 2D set to 0; the 3D keeps it),
            except the joints in ``keep_joints`` (default root and head, which normalisation needs).
        distance_mm, camera_height_mm, hfov_deg, image_sizes, pitch_jitter_deg, roll_deg: the
            camera distribution (see the module docstring).
        min_depth_mm: the camera is moved back along its axis where a walking path would bring
            the pelvis closer than this.
        with_3d: keep ``keypoints_3d`` (camera frame, mm).

    Returns:
        PoseSet (layout h36m17): keypoints_2d (N, 17, 2) px, keypoints_3d (N, 17, 3) mm, confidence,
        sequence (split * 10**9 + sequence number), frame, subject (``"synNNN"``), action (the
        motion name), camera (N, 4).
    """
    if split not in SPLITS:
        raise PoseDataError(f"synthetic: split must be one of {', '.join(SPLITS)}, got {split!r}")
    if (n_poses is None) == (n_sequences is None):
        raise PoseDataError("synthetic: give exactly one of n_poses and n_sequences")
    if int(seq_len) < 2:
        raise PoseDataError(f"synthetic: seq_len must be >= 2, got {seq_len}")
    if not fps > 0:
        raise PoseDataError(f"synthetic: fps must be positive, got {fps}")
    T = int(seq_len)
    if n_poses is not None:
        if int(n_poses) < 1:
            raise PoseDataError(f"synthetic: n_poses must be >= 1, got {n_poses}")
        n_seq = -(-int(n_poses) // T)
        total = int(n_poses)
    else:
        if int(n_sequences) < 1:
            raise PoseDataError(f"synthetic: n_sequences must be >= 1, got {n_sequences}")
        n_seq = int(n_sequences)
        total = n_seq * T
    if motions is None:
        weights = {m: 1.0 for m in MOTIONS}
    elif isinstance(motions, Mapping):
        weights = {m: float(w) for m, w in motions.items() if float(w) > 0}
    else:
        weights = {m: 1.0 for m in motions}
    bad = [m for m in weights if m not in MOTIONS]
    if bad or not weights:
        raise PoseDataError(f"synthetic: unknown or no motions {bad}; choose from {', '.join(MOTIONS)}")
    names = list(weights)
    p = np.array([weights[m] for m in names])
    p = p / p.sum()
    if not 0 <= drop_prob < 1:
        raise PoseDataError(f"synthetic: drop_prob must be in [0, 1), got {drop_prob}")
    if noise_px < 0:
        raise PoseDataError(f"synthetic: noise_px must be >= 0, got {noise_px}")
    if not 0 < distance_mm[0] <= distance_mm[1]:
        raise PoseDataError(f"synthetic: bad distance_mm {distance_mm}")
    n_subj = DEFAULT_SUBJECTS[split] if n_subjects is None else int(n_subjects)
    if n_subj < 1:
        raise PoseDataError(f"synthetic: n_subjects must be >= 1, got {n_subjects}")
    first = {"train": 0, "val": 10_000, "test": 20_000}[split] if n_subjects is not None else \
        sum(DEFAULT_SUBJECTS[s] for s in list(SPLITS)[: SPLITS[split]])
    subject_ids = np.arange(first, first + n_subj)
    bodies = subject_bodies(seed, subject_ids)
    cfg = dict(noise_px=float(noise_px), drop_prob=float(drop_prob), keep_joints=tuple(keep_joints),
               distance_mm=distance_mm, camera_height_mm=camera_height_mm, hfov_deg=hfov_deg,
               image_sizes=image_sizes, pitch_jitter_deg=pitch_jitter_deg, roll_deg=roll_deg,
               min_depth_mm=float(min_depth_mm))
    chunk_seq = max(1, _CHUNK_POSES // T)
    k2 = np.empty((n_seq * T, 17, 2), dtype=np.float32)
    k3 = np.empty((n_seq * T, 17, 3), dtype=np.float32) if with_3d else None
    conf = np.empty((n_seq * T, 17), dtype=np.float32)
    cam = np.empty((n_seq * T, 4), dtype=np.float32)
    motion_idx = np.empty(n_seq, dtype=np.int64)
    subj_of_seq = np.arange(n_seq) % n_subj
    for ci, s0 in enumerate(range(0, n_seq, chunk_seq)):
        s1 = min(n_seq, s0 + chunk_seq)
        rng = np.random.default_rng([int(seed), SPLITS[split], ci, 104729])
        uv, X, c, cm, mot = _generate_chunk(rng, s1 - s0, T, fps, names, p, bodies, subj_of_seq[s0:s1], cfg)
        k2[s0 * T:s1 * T] = uv
        if with_3d:
            k3[s0 * T:s1 * T] = X
        conf[s0 * T:s1 * T] = c
        cam[s0 * T:s1 * T] = cm
        motion_idx[s0:s1] = mot
    seq = SPLITS[split] * 10**9 + np.repeat(np.arange(n_seq, dtype=np.int64), T)
    frame = np.tile(np.arange(T, dtype=np.int64), n_seq)
    subject = np.repeat(np.array([f"syn{i:03d}" for i in subject_ids])[subj_of_seq], T)
    action = np.repeat(np.array(names)[motion_idx], T)
    sl = slice(0, total)
    return PoseSet(keypoints_2d=k2[sl], keypoints_3d=None if k3 is None else k3[sl], confidence=conf[sl],
                   sequence=seq[sl], frame=frame[sl], subject=subject[sl], action=action[sl], camera=cam[sl],
                   layout=H36M17.name, source=f"synthetic(seed={seed}, split={split})")


def default_splits(seed: int = 0, n_train: int = 200_000, n_val: int = 20_000, n_test: int = 20_000,
                   **kwargs) -> dict[str, PoseSet]:
    """Train / val / test synthetic sets (disjoint subjects), made in a few seconds.

    ``kwargs`` go to :func:`generate` (e.g. ``noise_px``, ``seq_len``).
    """
    return {split: generate(n, seed=seed, split=split, **kwargs)
            for split, n in (("train", n_train), ("val", n_val), ("test", n_test))}
