"""Named skeleton layouts and the index maps between them.

A :class:`Layout` is a named joint list with a kinematic tree (``parents``), left/right pairs and,
for every joint, a *canonical* anatomical name. Two joints of two layouts are the same point when
their canonical names are equal; that is the whole, explicit, index map between layouts (see
:func:`conversion_info`). Joints a destination needs that the source lacks are *synthesised* from
source joints by fixed affine rules (e.g. the pelvis as the midpoint of the hips), listed in
:data:`SYNTHESIS_RULES`, and :func:`convert_keypoints` reports which ones it synthesised.

Layouts (method.md, "Skeleton"):

* ``h36m17``: the working layout. 0 pelvis (root) · 1 r_hip · 2 r_knee · 3 r_ankle · 4 l_hip ·
  5 l_knee · 6 l_ankle · 7 spine · 8 thorax · 9 neck (Human3.6M's "neck/nose") · 10 head (top of
  the head) · 11 l_shoulder · 12 l_elbow · 13 l_wrist · 14 r_shoulder · 15 r_elbow · 16 r_wrist.
* ``coco17``: COCO keypoints (detectors): nose, eyes, ears, shoulders, elbows, wrists, hips, knees,
  ankles. No pelvis, spine, thorax or head top.
* ``openpose25``: OpenPose BODY_25 (adds Neck, MidHip and the feet to COCO's set).
* ``openpose18``: OpenPose COCO-18 (COCO's set plus Neck, in OpenPose's order).
* ``mpi_inf_3dhp17``: the MPI-INF-3DHP test-set 17 joints (head_top, neck, shoulders, ...,
  pelvis, spine, head); its ``neck`` is Human3.6M's thorax and its ``head`` Human3.6M's neck/nose.

Left and right are the *person's* left and right.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from fastlift.data.errors import PoseDataError

__all__ = [
    "Layout",
    "LAYOUTS",
    "H36M17",
    "COCO17",
    "OPENPOSE25",
    "OPENPOSE18",
    "MPI_INF_3DHP17",
    "ROOT",
    "HEAD",
    "SYNTHESIS_RULES",
    "get_layout",
    "convert_keypoints",
    "conversion_info",
    "register_layout",
]

#: h36m17 index of the root joint (pelvis).
ROOT = 0
#: h36m17 index of the head (top of the head): the head-root distance sets the 2D scale.
HEAD = 10


@dataclass(frozen=True)
class Layout:
    """A named skeleton layout.

    Attributes:
        name: registry name, e.g. ``"h36m17"``.
        joint_names: (J,) the layout's own joint names, in index order.
        parents: (J,) parent index of each joint in the kinematic tree, -1 for the root. For
            layouts without a true kinematic root (COCO) the tree is only used to draw bones.
        left: indices of left joints; ``left[i]`` and ``right[i]`` are a mirror pair.
        right: indices of the matching right joints.
        canonical: (J,) anatomical name of each joint; equal canonical names in two layouts mean
            the same body point. This is what the index maps between layouts are built from.
        description: one line saying where the layout comes from.
    """

    name: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    canonical: tuple[str, ...]
    description: str = ""
    _index: Mapping[str, int] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self):
        J = len(self.joint_names)
        if len(self.parents) != J or len(self.canonical) != J:
            raise ValueError(f"layout {self.name!r}: joint_names, parents and canonical must have the same length")
        if len(self.left) != len(self.right):
            raise ValueError(f"layout {self.name!r}: left and right must pair up")
        if sum(1 for p in self.parents if p < 0) != 1:
            raise ValueError(f"layout {self.name!r}: exactly one joint must have parent -1")
        for j, p in enumerate(self.parents):
            if p >= J or p == j:
                raise ValueError(f"layout {self.name!r}: bad parent {p} for joint {j}")
        if len(set(self.canonical)) != J:
            raise ValueError(f"layout {self.name!r}: canonical names must be unique")
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.joint_names)})

    @property
    def num_joints(self) -> int:
        """Number of joints J."""
        return len(self.joint_names)

    @property
    def root(self) -> int:
        """Index of the joint whose parent is -1."""
        return self.parents.index(-1)

    @property
    def bones(self) -> list[tuple[int, int]]:
        """(child, parent) index pairs of the kinematic tree, in index order."""
        return [(j, p) for j, p in enumerate(self.parents) if p >= 0]

    @property
    def flip_index(self) -> np.ndarray:
        """(J,) permutation that swaps every left joint with its right partner (mirroring)."""
        perm = np.arange(self.num_joints)
        perm[list(self.left)] = self.right
        perm[list(self.right)] = self.left
        return perm

    def side(self, j: int) -> str:
        """``"left"``, ``"right"`` or ``"center"`` for joint index ``j``."""
        if j in self.left:
            return "left"
        if j in self.right:
            return "right"
        return "center"

    def index(self, name: str) -> int:
        """Index of the joint called ``name`` (the layout's own name, or a canonical name)."""
        if name in self._index:
            return self._index[name]
        if name in self.canonical:
            return self.canonical.index(name)
        raise KeyError(f"layout {self.name!r} has no joint {name!r}; joints: {', '.join(self.joint_names)}")


def _layout(name, joints, description):
    """Build a Layout from [(joint_name, parent_name or None, canonical)] with sides from the names."""
    names = tuple(j[0] for j in joints)
    idx = {n: i for i, n in enumerate(names)}
    parents = tuple(-1 if p is None else idx[p] for _, p, _ in joints)
    canonical = tuple(c for _, _, c in joints)
    left, right = [], []
    for i, c in enumerate(canonical):
        if c.startswith("l_"):
            left.append(i)
            right.append(canonical.index("r_" + c[2:]))
    return Layout(name, names, parents, tuple(left), tuple(right), canonical, description)


H36M17 = _layout("h36m17", [
    ("pelvis", None, "pelvis"),
    ("r_hip", "pelvis", "r_hip"),
    ("r_knee", "r_hip", "r_knee"),
    ("r_ankle", "r_knee", "r_ankle"),
    ("l_hip", "pelvis", "l_hip"),
    ("l_knee", "l_hip", "l_knee"),
    ("l_ankle", "l_knee", "l_ankle"),
    ("spine", "pelvis", "spine"),
    ("thorax", "spine", "thorax"),
    ("neck", "thorax", "neck_nose"),
    ("head", "neck", "head_top"),
    ("l_shoulder", "thorax", "l_shoulder"),
    ("l_elbow", "l_shoulder", "l_elbow"),
    ("l_wrist", "l_elbow", "l_wrist"),
    ("r_shoulder", "thorax", "r_shoulder"),
    ("r_elbow", "r_shoulder", "r_elbow"),
    ("r_wrist", "r_elbow", "r_wrist"),
], "Human3.6M 17 joints as VideoPose3D selects them from the 32 mocap joints (the working layout)")

COCO17 = _layout("coco17", [
    ("nose", None, "nose"),
    ("l_eye", "nose", "l_eye"),
    ("r_eye", "nose", "r_eye"),
    ("l_ear", "l_eye", "l_ear"),
    ("r_ear", "r_eye", "r_ear"),
    ("l_shoulder", "nose", "l_shoulder"),
    ("r_shoulder", "nose", "r_shoulder"),
    ("l_elbow", "l_shoulder", "l_elbow"),
    ("r_elbow", "r_shoulder", "r_elbow"),
    ("l_wrist", "l_elbow", "l_wrist"),
    ("r_wrist", "r_elbow", "r_wrist"),
    ("l_hip", "l_shoulder", "l_hip"),
    ("r_hip", "r_shoulder", "r_hip"),
    ("l_knee", "l_hip", "l_knee"),
    ("r_knee", "r_hip", "r_knee"),
    ("l_ankle", "l_knee", "l_ankle"),
    ("r_ankle", "r_knee", "r_ankle"),
], "COCO 17 keypoints (person keypoint annotations and most 2D detectors)")

OPENPOSE25 = _layout("openpose25", [
    ("Nose", "Neck", "nose"),
    ("Neck", "MidHip", "thorax"),
    ("RShoulder", "Neck", "r_shoulder"),
    ("RElbow", "RShoulder", "r_elbow"),
    ("RWrist", "RElbow", "r_wrist"),
    ("LShoulder", "Neck", "l_shoulder"),
    ("LElbow", "LShoulder", "l_elbow"),
    ("LWrist", "LElbow", "l_wrist"),
    ("MidHip", None, "pelvis"),
    ("RHip", "MidHip", "r_hip"),
    ("RKnee", "RHip", "r_knee"),
    ("RAnkle", "RKnee", "r_ankle"),
    ("LHip", "MidHip", "l_hip"),
    ("LKnee", "LHip", "l_knee"),
    ("LAnkle", "LKnee", "l_ankle"),
    ("REye", "Nose", "r_eye"),
    ("LEye", "Nose", "l_eye"),
    ("REar", "REye", "r_ear"),
    ("LEar", "LEye", "l_ear"),
    ("LBigToe", "LAnkle", "l_big_toe"),
    ("LSmallToe", "LBigToe", "l_small_toe"),
    ("LHeel", "LAnkle", "l_heel"),
    ("RBigToe", "RAnkle", "r_big_toe"),
    ("RSmallToe", "RBigToe", "r_small_toe"),
    ("RHeel", "RAnkle", "r_heel"),
], "OpenPose BODY_25 (pose_keypoints_2d of 75 numbers)")

OPENPOSE18 = _layout("openpose18", [
    ("Nose", "Neck", "nose"),
    ("Neck", None, "thorax"),
    ("RShoulder", "Neck", "r_shoulder"),
    ("RElbow", "RShoulder", "r_elbow"),
    ("RWrist", "RElbow", "r_wrist"),
    ("LShoulder", "Neck", "l_shoulder"),
    ("LElbow", "LShoulder", "l_elbow"),
    ("LWrist", "LElbow", "l_wrist"),
    ("RHip", "Neck", "r_hip"),
    ("RKnee", "RHip", "r_knee"),
    ("RAnkle", "RKnee", "r_ankle"),
    ("LHip", "Neck", "l_hip"),
    ("LKnee", "LHip", "l_knee"),
    ("LAnkle", "LKnee", "l_ankle"),
    ("REye", "Nose", "r_eye"),
    ("LEye", "Nose", "l_eye"),
    ("REar", "REye", "r_ear"),
    ("LEar", "LEye", "l_ear"),
], "OpenPose COCO-18 (pose_keypoints_2d of 54 numbers)")

MPI_INF_3DHP17 = _layout("mpi_inf_3dhp17", [
    ("head_top", "head", "head_top"),
    ("neck", "spine", "thorax"),
    ("r_shoulder", "neck", "r_shoulder"),
    ("r_elbow", "r_shoulder", "r_elbow"),
    ("r_wrist", "r_elbow", "r_wrist"),
    ("l_shoulder", "neck", "l_shoulder"),
    ("l_elbow", "l_shoulder", "l_elbow"),
    ("l_wrist", "l_elbow", "l_wrist"),
    ("r_hip", "pelvis", "r_hip"),
    ("r_knee", "r_hip", "r_knee"),
    ("r_ankle", "r_knee", "r_ankle"),
    ("l_hip", "pelvis", "l_hip"),
    ("l_knee", "l_hip", "l_knee"),
    ("l_ankle", "l_knee", "l_ankle"),
    ("pelvis", None, "pelvis"),
    ("spine", "pelvis", "spine"),
    ("head", "neck", "neck_nose"),
], "MPI-INF-3DHP test set, 17 joints (annot_data.mat)")

#: All layouts by name.
LAYOUTS: dict[str, Layout] = {
    lay.name: lay for lay in (H36M17, COCO17, OPENPOSE25, OPENPOSE18, MPI_INF_3DHP17)
}

_ALIASES = {
    "h36m": "h36m17", "human36m": "h36m17", "h36m_17": "h36m17",
    "coco": "coco17", "coco_17": "coco17",
    "openpose": "openpose25", "body25": "openpose25", "body_25": "openpose25",
    "coco18": "openpose18", "openpose_coco18": "openpose18",
    "mpi_inf_3dhp": "mpi_inf_3dhp17", "3dhp": "mpi_inf_3dhp17", "mpii3d": "mpi_inf_3dhp17",
}


def register_layout(layout: Layout) -> None:
    """Add a user layout to :data:`LAYOUTS` (its canonical names decide how it maps to others)."""
    if layout.name in LAYOUTS and LAYOUTS[layout.name] != layout:
        raise PoseDataError(f"a different layout called {layout.name!r} is already registered")
    LAYOUTS[layout.name] = layout


def get_layout(name: str | Layout) -> Layout:
    """The :class:`Layout` called ``name`` (a few aliases: ``"h36m"``, ``"coco"``, ``"body25"``)."""
    if isinstance(name, Layout):
        return name
    if isinstance(name, np.ndarray) and name.ndim == 0:
        name = str(name)
    if not isinstance(name, str):
        raise PoseDataError(f"layout must be a layout name (str), got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in LAYOUTS:
        raise PoseDataError(f"unknown layout {name!r}; known layouts: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[key]


#: How a joint a layout lacks is made from joints it has: canonical name -> candidate formulas,
#: tried in order *per sample* (the first whose inputs all have confidence > 0 wins). Each formula
#: is an affine combination (weights sum to 1), so it commutes with translation and works for
#: 2D pixels and 3D millimetres alike. The head-top formulas extend the thorax->ears (or ->nose)
#: direction by 0.8-0.9 of its length; they are approximations of the anatomical point.
SYNTHESIS_RULES: dict[str, list[dict[str, float]]] = {
    "pelvis": [{"l_hip": 0.5, "r_hip": 0.5}],
    "thorax": [{"l_shoulder": 0.5, "r_shoulder": 0.5}],
    "spine": [
        {"pelvis": 0.5, "thorax": 0.5},
        {"l_hip": 0.25, "r_hip": 0.25, "l_shoulder": 0.25, "r_shoulder": 0.25},
    ],
    "neck_nose": [
        {"nose": 0.5, "l_ear": 0.25, "r_ear": 0.25},
        {"nose": 1.0},
        {"l_ear": 0.5, "r_ear": 0.5},
        {"l_eye": 0.5, "r_eye": 0.5},
    ],
    "head_top": [
        {"l_ear": 0.9, "r_ear": 0.9, "thorax": -0.8},
        {"l_ear": 0.9, "r_ear": 0.9, "l_shoulder": -0.4, "r_shoulder": -0.4},
        {"l_eye": 0.9, "r_eye": 0.9, "thorax": -0.8},
        {"l_eye": 0.9, "r_eye": 0.9, "l_shoulder": -0.4, "r_shoulder": -0.4},
        {"nose": 1.9, "thorax": -0.9},
        {"nose": 1.9, "l_shoulder": -0.45, "r_shoulder": -0.45},
        {"neck_nose": 2.0, "thorax": -1.0},
    ],
}


@dataclass(frozen=True)
class _Plan:
    direct: tuple[tuple[int, int], ...]                 # (dst index, src index)
    synth: tuple[tuple[int, tuple[tuple[tuple[int, float], ...], ...]], ...]  # dst -> candidates
    missing: tuple[int, ...]                            # dst indices with no source


_PLANS: dict[tuple[str, str], _Plan] = {}


def _plan(src: Layout, dst: Layout) -> _Plan:
    key = (src.name, dst.name)
    if key in _PLANS:
        return _PLANS[key]
    src_idx = {c: i for i, c in enumerate(src.canonical)}
    direct, synth, missing = [], [], []
    for d, c in enumerate(dst.canonical):
        if c in src_idx:
            direct.append((d, src_idx[c]))
            continue
        cands = []
        for formula in SYNTHESIS_RULES.get(c, []):
            if all(k in src_idx for k in formula):
                cands.append(tuple((src_idx[k], float(w)) for k, w in formula.items()))
        if cands:
            synth.append((d, tuple(cands)))
        else:
            missing.append(d)
    plan = _Plan(tuple(direct), tuple(synth), tuple(missing))
    _PLANS[key] = plan
    return plan


def conversion_info(src_layout: str | Layout, dst_layout: str | Layout) -> dict[str, list[str]]:
    """How ``src_layout`` maps onto ``dst_layout``: the explicit index map.

    Returns a dict with ``"direct"`` (dst joint names copied from a source joint, as
    ``"dst_name<-src_name"``), ``"synthesised"`` (dst joint names made by :data:`SYNTHESIS_RULES`)
    and ``"missing"`` (dst joint names that cannot be produced; they come out with confidence 0).
    """
    src, dst = get_layout(src_layout), get_layout(dst_layout)
    p = _plan(src, dst)
    return {
        "direct": [f"{dst.joint_names[d]}<-{src.joint_names[s]}" for d, s in p.direct],
        "synthesised": [dst.joint_names[d] for d, _ in p.synth],
        "missing": [dst.joint_names[d] for d in p.missing],
    }


def index_map(src_layout: str | Layout, dst_layout: str | Layout) -> np.ndarray:
    """(J_dst,) int array: the source index of each destination joint that exists in the source
    under the same canonical name, -1 where it does not (synthesised or missing)."""
    src, dst = get_layout(src_layout), get_layout(dst_layout)
    out = np.full(dst.num_joints, -1, dtype=np.int64)
    for d, s in _plan(src, dst).direct:
        out[d] = s
    return out


def convert_keypoints(kp: np.ndarray, conf: np.ndarray | None, src_layout: str | Layout,
                      dst_layout: str | Layout, *, allow_missing: bool | None = None,
                      ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Map keypoints from one layout to another.

    Args:
        kp: (..., J_src, D) keypoints, D = 2 (pixels) or 3 (mm); any leading shape. NaN
            coordinates count as missing.
        conf: (..., J_src) confidences (0 = missing) or None (all present unless NaN).
        src_layout, dst_layout: layout names or :class:`Layout` objects.
        allow_missing: whether destination joints that cannot be produced at all are allowed
            (they come out as 0 with confidence 0). Default: False when the destination is
            ``h36m17`` (the lifter needs every joint), True otherwise (e.g. h36m17 -> coco17 has
            no eyes or ears; see :func:`conversion_info`).

    Returns:
        ``(kp_dst, conf_dst, synthesised)``: kp_dst (..., J_dst, D) float32 with missing joints
        set to 0; conf_dst (..., J_dst) float32, the source confidence for copied joints, the
        minimum over the inputs for synthesised joints, 0 where missing; and the names of the
        destination joints that were synthesised (not copied), in index order.

    Raises:
        PoseDataError: unknown layout, wrong shapes, or a destination joint with no mapping when
        ``allow_missing`` is False.
    """
    src, dst = get_layout(src_layout), get_layout(dst_layout)
    kp = np.asarray(kp)
    if kp.ndim < 2 or kp.shape[-2] != src.num_joints or kp.shape[-1] not in (2, 3):
        raise PoseDataError(
            f"convert_keypoints: keypoints must have shape (..., {src.num_joints}, 2 or 3) for layout "
            f"{src.name!r}, got {kp.shape}")
    if not np.issubdtype(kp.dtype, np.number):
        raise PoseDataError(f"convert_keypoints: keypoints must be numeric, got dtype {kp.dtype}")
    kp = kp.astype(np.float32, copy=False)
    finite = np.isfinite(kp).all(axis=-1)
    if conf is None:
        c = finite.astype(np.float32)
    else:
        c = np.asarray(conf, dtype=np.float32)
        if c.shape != kp.shape[:-1]:
            raise PoseDataError(f"convert_keypoints: confidence shape {c.shape} does not match keypoints {kp.shape}")
        c = np.where(finite & np.isfinite(c), c, np.float32(0))
    kp = np.where(finite[..., None], kp, np.float32(0))
    plan = _plan(src, dst)
    if allow_missing is None:
        allow_missing = dst.name != H36M17.name
    if plan.missing and not allow_missing:
        names = [dst.joint_names[d] for d in plan.missing]
        raise PoseDataError(
            f"layout {src.name!r} has no mapping to {dst.name!r} for joint(s) {', '.join(names)}")
    if not plan.direct and not plan.synth:
        raise PoseDataError(f"layout {src.name!r} shares no joints with {dst.name!r}")
    out = np.zeros(kp.shape[:-2] + (dst.num_joints, kp.shape[-1]), dtype=np.float32)
    out_c = np.zeros(kp.shape[:-2] + (dst.num_joints,), dtype=np.float32)
    if plan.direct:
        d_idx = [d for d, _ in plan.direct]
        s_idx = [s for _, s in plan.direct]
        out[..., d_idx, :] = kp[..., s_idx, :]
        out_c[..., d_idx] = c[..., s_idx]
    synthesised = []
    for d, cands in plan.synth:
        synthesised.append(dst.joint_names[d])
        done = np.zeros(kp.shape[:-2], dtype=bool)
        for formula in cands:
            idx = [s for s, _ in formula]
            w = np.array([w for _, w in formula], dtype=np.float32)
            ci = c[..., idx]
            ok = (ci > 0).all(axis=-1) & ~done
            if not ok.any():
                continue
            val = np.einsum("...jd,j->...d", kp[..., idx, :], w)
            out[..., d, :] = np.where(ok[..., None], val, out[..., d, :])
            out_c[..., d] = np.where(ok, ci.min(axis=-1), out_c[..., d])
            done |= ok
    return out, out_c, synthesised


def _check_layouts_consistent() -> None:  # executed at import: a cheap guard against typos
    for lay in LAYOUTS.values():
        for i, j in zip(lay.left, lay.right):
            assert lay.canonical[i][2:] == lay.canonical[j][2:], lay.name


_check_layouts_consistent()


def layout_names() -> Sequence[str]:
    """Names of the registered layouts."""
    return sorted(LAYOUTS)
