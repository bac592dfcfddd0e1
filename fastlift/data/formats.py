"""Readers and writers for the pose formats users already have.

=================  =====================================  =================================================
format             files                                  reader / writer
=================  =====================================  =================================================
``fastlift``       pose file ``*.npz`` (poseset.py)       :meth:`PoseSet.load` / :meth:`PoseSet.save`
``videopose3d``    ``data_2d_*.npz`` and/or               :func:`read_videopose3d` /
                   ``data_3d_h36m.npz``                   :func:`write_videopose3d_2d`, :func:`write_videopose3d_3d`
``mpi_inf_3dhp``   ``TS*/annot_data.mat`` (HDF5)          :func:`read_mpi_inf_3dhp` / :func:`write_mpi_inf_3dhp`
``coco``           COCO keypoint JSON (dataset or results) :func:`read_coco` / :func:`write_coco`
``openpose``       folder of OpenPose per-frame JSON      :func:`read_openpose` / :func:`write_openpose`
=================  =====================================  =================================================

:func:`load_poses` detects the format from the path (folder: OpenPose; ``.json``: COCO; ``.mat`` /
``.h5``: MPI-INF-3DHP; ``.npz``: by its keys) and :func:`save_poses` writes any of them. Every
problem with a file is a :class:`PoseDataError` whose message starts with the path. See
docs/data.md for the exact fields, shapes and units of every format.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from typing import Any

import numpy as np

from fastlift._atomic import atomic_write, atomic_write_path
from fastlift.data.errors import PoseDataError
from fastlift.data.h36m import (H36M32_KEEP, H36M32_PARENTS, H36M_EXTRINSICS, H36M_INTRINSICS, camera_to_world,
                                h36m_camera, project, world_to_camera)
from fastlift.data.layouts import COCO17, H36M17, MPI_INF_3DHP17, OPENPOSE18, OPENPOSE25, get_layout
from fastlift.data.npzmap import npz_member_names, open_npz
from fastlift.data.poseset import PoseSet

__all__ = [
    "FORMATS",
    "detect_format",
    "load_poses",
    "save_poses",
    "read_videopose3d",
    "write_videopose3d_2d",
    "write_videopose3d_3d",
    "read_mpi_inf_3dhp",
    "write_mpi_inf_3dhp",
    "MPI_INF_3DHP_CAMERAS",
    "MPI_INF_3DHP_ACTIVITIES",
    "read_coco",
    "write_coco",
    "read_openpose",
    "write_openpose",
]

FORMATS = ("fastlift", "videopose3d", "mpi_inf_3dhp", "coco", "openpose")


# ---------------------------------------------------------------------------------------------
# helpers
def _subject_key(s: str):
    m = re.search(r"\d+", str(s))
    return (int(m.group()) if m else math.inf, str(s))


def _as_float(a, path: str, what: str, shape_tail: tuple) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise PoseDataError(f"{path}: {what} is not a numeric array") from None
    if arr.ndim != len(shape_tail) + 1 or any(t is not None and arr.shape[i + 1] != t
                                                 for i, t in enumerate(shape_tail)):
        want = "(T, " + ", ".join("?" if t is None else str(t) for t in shape_tail) + ")"
        raise PoseDataError(f"{path}: {what} has shape {arr.shape}, expected {want}")
    return arr


def _group_sequences(poses: PoseSet) -> list[np.ndarray]:
    """Row indices of each sequence, sequences in increasing id, rows in increasing frame."""
    order = np.lexsort((poses.frame, poses.sequence))
    seq = poses.sequence[order]
    cuts = np.flatnonzero(np.diff(seq)) + 1
    return np.split(order, cuts)


# ---------------------------------------------------------------------------------------------
# VideoPose3D
_VP3D_LAYOUTS = {"h36m": "h36m17", "coco": "coco17"}
_VP3D_NAMES = {"h36m17": "h36m", "coco17": "coco"}


def _load_pickled_dict(path: str, key: str) -> tuple[dict, dict | None]:
    with open_npz(path) as zf:
        names = npz_member_names(zf)
    if key not in names:
        raise PoseDataError(f"{path}: not a VideoPose3D file: no {key!r} array (arrays: {', '.join(names)})")
    try:
        with np.load(path, allow_pickle=True) as npz:
            data = npz[key]
            meta = npz["metadata"] if "metadata" in npz.files else None
            data = data.item() if data.dtype == object and data.shape == () else data
            meta = meta.item() if meta is not None and meta.dtype == object and meta.shape == () else meta
    except PoseDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - unpickling errors of any kind
        raise PoseDataError(f"{path}: cannot read {key!r} ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise PoseDataError(f"{path}: {key!r} must be a pickled dict subject -> action -> arrays, "
                            f"got {type(data).__name__}")
    if meta is not None and not isinstance(meta, dict):
        meta = None
    return data, meta


def _vp3d_layout(path: str, meta: dict | None, n_joints: int) -> str:
    if meta:
        name = meta.get("layout_name")
        if name is not None:
            name = _VP3D_LAYOUTS.get(str(name), str(name))
            try:
                lay = get_layout(name)
            except PoseDataError:
                raise PoseDataError(f"{path}: metadata layout_name {meta.get('layout_name')!r} is not a layout "
                                    f"fastlift knows (h36m, coco, ...)") from None
            if lay.num_joints != n_joints:
                raise PoseDataError(f"{path}: layout {lay.name!r} has {lay.num_joints} joints but the "
                                    f"arrays have {n_joints}")
            return lay.name
        sym = meta.get("keypoints_symmetry")
        if sym is not None:
            sym = [list(map(int, s)) for s in sym]
            for lay in (H36M17, COCO17):
                if lay.num_joints == n_joints and sym == [list(lay.left), list(lay.right)]:
                    return lay.name
    if n_joints == 17:
        return H36M17.name
    raise PoseDataError(f"{path}: cannot tell the layout of {n_joints}-joint keypoints (no metadata layout_name)")


def _vp3d_3d_camera_frame(path3d: str, pos: Any, subject: str, action: str, cam: int) -> np.ndarray:
    """(T, 17, 3) mm in camera ``cam``'s frame from a (T, 32 or 17, 3) metre world array."""
    p = _as_float(pos, path3d, f"positions_3d[{subject!r}][{action!r}]", (None, 3))
    if p.shape[1] == 32:
        p = p[:, list(H36M32_KEEP)]
    elif p.shape[1] != 17:
        raise PoseDataError(f"{path3d}: positions_3d[{subject!r}][{action!r}] has {p.shape[1]} joints; "
                            f"expected 32 (Human3.6M mocap) or 17")
    c = h36m_camera(subject, cam)
    return world_to_camera(p * 1000.0, c["R"], c["t"])


def read_videopose3d(path_2d: str | None = None, path_3d: str | None = None, subjects=None) -> PoseSet:
    """Read VideoPose3D's Human3.6M files.

    Args:
        path_2d: ``data_2d_h36m_*.npz``: ``positions_2d`` = pickled dict subject -> action -> list
            of 4 camera arrays (T, J, 2) in pixels (a third channel, if present, is read as the
            confidence); ``metadata`` with ``layout_name`` (``"h36m"`` or ``"coco"``) and
            ``keypoints_symmetry``.
        path_3d: ``data_3d_h36m.npz``: ``positions_3d`` = dict subject -> action -> (T, 32, 3) in
            metres, world frame. The 17 joints VideoPose3D keeps are selected and brought into each
            camera's frame (mm) with the embedded Human3.6M calibration (fastlift.data.h36m).
        subjects: optional list of subjects to keep (e.g. ``["S9", "S11"]``).

    One sequence per (subject, action, camera), numbered in that (sorted) order; ``frame`` is the
    frame index; ``camera`` the pinhole intrinsics of the H36M camera when there are 4 cameras.
    With both files the 2D of each camera is cut to the 3D length (as VideoPose3D does), and a
    ``coco`` 2D layout is converted to h36m17 (synthesised joints are reported in a warning). With
    only ``path_3d`` the 2D keypoints are the pinhole projections of the 3D ones (no distortion).
    """
    if path_2d is None and path_3d is None:
        raise PoseDataError("read_videopose3d: give path_2d and/or path_3d")
    pos2d = meta = pos3d = None
    if path_2d is not None:
        pos2d, meta = _load_pickled_dict(path_2d, "positions_2d")
    if path_3d is not None:
        pos3d, _ = _load_pickled_dict(path_3d, "positions_3d")
    src = path_2d if path_2d is not None else path_3d
    keep = None if subjects is None else set(subjects)
    k2s, k3s, cfs, seqs, frs, subs, acts, cams = [], [], [], [], [], [], [], []
    seq_id = 0
    layout = None
    converted = []
    if pos2d is not None:
        for subject in sorted(pos2d, key=_subject_key):
            if keep is not None and subject not in keep:
                continue
            actions = pos2d[subject]
            if not isinstance(actions, dict):
                raise PoseDataError(f"{path_2d}: positions_2d[{subject!r}] must be a dict action -> list of cameras")
            for action in sorted(actions):
                views = actions[action]
                if isinstance(views, np.ndarray) and views.dtype != object:
                    views = [views]
                views = list(views)
                world3d = None
                if pos3d is not None:
                    if subject not in pos3d or action not in pos3d[subject]:
                        raise PoseDataError(f"{path_3d}: has no 3D poses for {subject!r} / {action!r} "
                                            f"that {path_2d} has")
                    world3d = pos3d[subject][action]
                for cam, arr in enumerate(views):
                    a = _as_float(arr, path_2d, f"positions_2d[{subject!r}][{action!r}][{cam}]", (None, None))
                    if a.shape[2] not in (2, 3):
                        raise PoseDataError(f"{path_2d}: positions_2d[{subject!r}][{action!r}][{cam}] has shape "
                                            f"{a.shape}, expected (T, J, 2)")
                    if layout is None:
                        layout = _vp3d_layout(path_2d, meta, a.shape[1])
                    if a.shape[1] != get_layout(layout).num_joints:
                        raise PoseDataError(f"{path_2d}: positions_2d[{subject!r}][{action!r}][{cam}] has "
                                            f"{a.shape[1]} joints, other arrays {get_layout(layout).num_joints}")
                    conf = a[:, :, 2] if a.shape[2] == 3 else np.ones(a.shape[:2])
                    k2 = a[:, :, :2]
                    k3 = None
                    if world3d is not None:
                        if len(views) > 4:
                            raise PoseDataError(f"{path_2d}: {subject!r} / {action!r} has {len(views)} cameras; "
                                                f"Human3.6M has 4")
                        k3 = _vp3d_3d_camera_frame(path_3d, world3d, subject, action, cam)
                        T = min(len(k2), len(k3))
                        k2, conf, k3 = k2[:T], conf[:T], k3[:T]
                        if layout != H36M17.name:
                            k2c, conf, synth = _convert(k2, conf, layout)
                            k2 = k2c
                            converted = synth
                    T = len(k2)
                    k2s.append(k2)
                    cfs.append(conf)
                    if k3 is not None:
                        k3s.append(k3)
                    seqs.append(np.full(T, seq_id))
                    frs.append(np.arange(T))
                    subs.append(np.full(T, subject))
                    acts.append(np.full(T, action))
                    if len(views) == 4:
                        intr = H36M_INTRINSICS[cam]
                        cams.append(np.tile(np.array(intr["focal_length"] + intr["center"]), (T, 1)))
                    seq_id += 1
        if converted:
            warnings.warn(f"{path_2d}: converted {layout} keypoints to h36m17 to pair them with the 3D poses; "
                          f"synthesised joints: {', '.join(converted)}", RuntimeWarning, stacklevel=2)
            layout = H36M17.name
    else:
        layout = H36M17.name
        for subject in sorted(pos3d, key=_subject_key):
            if keep is not None and subject not in keep:
                continue
            if subject not in H36M_EXTRINSICS:
                raise PoseDataError(f"{path_3d}: no camera calibration for subject {subject!r} (known: "
                                    f"{', '.join(H36M_EXTRINSICS)})")
            actions = pos3d[subject]
            if not isinstance(actions, dict):
                raise PoseDataError(f"{path_3d}: positions_3d[{subject!r}] must be a dict action -> (T, 32, 3)")
            for action in sorted(actions):
                for cam in range(4):
                    k3 = _vp3d_3d_camera_frame(path_3d, actions[action], subject, action, cam)
                    intr = np.array(H36M_INTRINSICS[cam]["focal_length"] + H36M_INTRINSICS[cam]["center"])
                    T = len(k3)
                    k2s.append(project(k3, intr))
                    k3s.append(k3)
                    cfs.append(np.ones(k3.shape[:2]))
                    seqs.append(np.full(T, seq_id))
                    frs.append(np.arange(T))
                    subs.append(np.full(T, subject))
                    acts.append(np.full(T, action))
                    cams.append(np.tile(intr, (T, 1)))
                    seq_id += 1
    if not k2s:
        raise PoseDataError(f"{src}: no poses (empty file, or none of subjects {subjects})")
    if cams and len(cams) != len(k2s):
        cams = []
    return PoseSet(
        keypoints_2d=np.concatenate(k2s).astype(np.float32),
        keypoints_3d=np.concatenate(k3s).astype(np.float32) if k3s else None,
        confidence=np.concatenate(cfs).astype(np.float32),
        sequence=np.concatenate(seqs), frame=np.concatenate(frs),
        subject=np.concatenate(subs), action=np.concatenate(acts),
        camera=np.concatenate(cams).astype(np.float32) if cams else None,
        layout=layout, source=src)


def _convert(k2, conf, layout):
    from fastlift.data.layouts import convert_keypoints
    k, c, synth = convert_keypoints(k2, conf, layout, H36M17)
    return k.astype(np.float64), c, synth


def _need(poses: PoseSet, path: str, *names: str) -> None:
    for n in names:
        if getattr(poses, n) is None:
            raise PoseDataError(f"{path}: writing this format needs the pose set's {n!r} field")


def write_videopose3d_2d(path: str, poses: PoseSet) -> str:
    """Write ``data_2d_*.npz`` (VideoPose3D): positions_2d[subject][action] = list of (T, J, 2).

    The cameras of one (subject, action) are its sequences in increasing sequence id (the order
    :func:`read_videopose3d` assigns); frames are stacked in frame order. Confidence is not
    representable and is dropped (missing joints stay at their stored coordinates, 0).
    """
    _need(poses, path, "subject", "action")
    lay = poses.layout_obj
    out: dict = {}
    for rows in _group_sequences(poses):
        s, a = str(poses.subject[rows[0]]), str(poses.action[rows[0]])
        out.setdefault(s, {}).setdefault(a, []).append(np.asarray(poses.keypoints_2d[rows], dtype=np.float32))
    meta = {"layout_name": _VP3D_NAMES.get(lay.name, lay.name), "num_joints": lay.num_joints,
            "keypoints_symmetry": [list(lay.left), list(lay.right)]}
    atomic_write(path, lambda fh: np.savez_compressed(fh, positions_2d=out, metadata=meta))
    return path


def write_videopose3d_3d(path: str, poses: PoseSet) -> str:
    """Write ``data_3d_h36m.npz`` (VideoPose3D): positions_3d[subject][action] = (T, 32, 3) metres.

    The world-frame poses are taken from the first camera sequence of each (subject, action)
    (camera index 0 in the reader's order) through the Human3.6M calibration. The 15 joints
    VideoPose3D drops are filled with their nearest kept ancestor's position.
    """
    _need(poses, path, "subject", "action", "keypoints_3d")
    if poses.layout != H36M17.name:
        raise PoseDataError(f"{path}: VideoPose3D 3D files are h36m17, the pose set is {poses.layout!r}")
    src_of = np.zeros(32, dtype=np.int64)
    kept = {j: i for i, j in enumerate(H36M32_KEEP)}
    for j in range(32):
        a = j
        while a not in kept:
            a = H36M32_PARENTS[a]
        src_of[j] = kept[a]
    out: dict = {}
    for rows in _group_sequences(poses):
        s, a = str(poses.subject[rows[0]]), str(poses.action[rows[0]])
        if a in out.get(s, {}):
            continue
        c = h36m_camera(s, 0)
        world = camera_to_world(np.asarray(poses.keypoints_3d[rows], dtype=np.float64), c["R"], c["t"]) / 1000.0
        out.setdefault(s, {})[a] = world[:, src_of].astype(np.float32)
    atomic_write(path, lambda fh: np.savez_compressed(fh, positions_3d=out))
    return path


# ---------------------------------------------------------------------------------------------
# MPI-INF-3DHP
#: Pinhole intrinsics (fx, fy, cx, cy) px of the test sequences: TS1-TS4 studio camera (2048 x 2048),
#: TS5-TS6 outdoor camera (1920 x 1080).
MPI_INF_3DHP_CAMERAS = {
    **{f"TS{i}": (1500.172288, 1500.172288, 1017.387, 1043.032) for i in (1, 2, 3, 4)},
    **{f"TS{i}": (1683.98345952, 1672.59370772, 939.85754016, 560.140743168) for i in (5, 6)},
}
#: activity_annotation codes of the test set.
MPI_INF_3DHP_ACTIVITIES = {1: "Standing/Walking", 2: "Exercising", 3: "Sitting", 4: "Reaching/Crouching",
                           5: "On the Floor", 6: "Sports", 7: "Miscellaneous"}


def _h5py(path):
    try:
        import h5py
    except ImportError:
        raise PoseDataError(f"{path}: reading MPI-INF-3DHP .mat files needs h5py (pip install h5py)") from None
    return h5py


def _fit_intrinsics(k2: np.ndarray, k3: np.ndarray) -> np.ndarray:
    """Least-squares fx, fy, cx, cy from u = fx X/Z + cx, v = fy Y/Z + cy."""
    z = k3[..., 2]
    ok = z > 1e-3
    out = []
    for d in (0, 1):
        a = (k3[..., d][ok] / z[ok])
        A = np.stack([a, np.ones_like(a)], axis=1)
        sol, *_ = np.linalg.lstsq(A, k2[..., d][ok], rcond=None)
        out.append(sol)
    return np.array([out[0][0], out[1][0], out[0][1], out[1][1]])


def read_mpi_inf_3dhp(path: str, valid_only: bool = True, universal: bool = False,
                      camera=None) -> PoseSet:
    """Read an MPI-INF-3DHP test-set ``annot_data.mat`` (MATLAB v7.3 = HDF5, read with h5py).

    Datasets (h5py shapes): ``annot2`` (N, 1, 17, 2) pixels; ``annot3`` (N, 1, 17, 3) mm in the
    camera frame (x right, y down, z forward); ``univ_annot3`` (N, 1, 17, 3) the same scaled to a
    universal skeleton; ``valid_frame`` (N, 1); ``activity_annotation`` (N, 1) codes 1..7.

    Args:
        valid_only: keep only frames with valid_frame = 1 (default; frame numbers keep the original
            index, so temporal pairs never span a dropped frame).
        universal: take the 3D from ``univ_annot3`` instead of ``annot3``.
        camera: (4,) fx, fy, cx, cy to use; default: the known camera of the TS folder the file is
            in (``MPI_INF_3DHP_CAMERAS``), else fitted by least squares to annot2/annot3.

    Layout mpi_inf_3dhp17; subject = the folder name (``TS1``); sequence = its number; action =
    the activity name.
    """
    h5py = _h5py(path)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise PoseDataError(f"{path}: no such file") from None
    except OSError as exc:
        with open(path, "rb") as fh:
            head = fh.read(128)
        if head.startswith(b"MATLAB 5.0"):
            raise PoseDataError(f"{path}: a MATLAB v5 .mat file; only the MPI-INF-3DHP test-set annot_data.mat "
                                f"(MATLAB v7.3 / HDF5) is supported") from None
        raise PoseDataError(f"{path}: not an HDF5 / MATLAB v7.3 file, or truncated ({exc})") from None
    with f:
        keys = list(f.keys())
        for k in ("annot2", "annot3"):
            if k not in keys:
                raise PoseDataError(f"{path}: not an MPI-INF-3DHP annot_data.mat: no {k!r} (keys: {', '.join(keys)})")

        def get(name, tail):
            try:
                a = np.asarray(f[name][()], dtype=np.float64)
            except Exception as exc:  # noqa: BLE001 - h5py read errors on truncated files
                raise PoseDataError(f"{path}: cannot read {name!r} ({exc})") from None
            if a.ndim == len(tail) + 2 and a.shape[1] == 1:
                a = a[:, 0]
            if a.shape[1:] != tail:
                raise PoseDataError(f"{path}: {name!r} has shape {f[name].shape}, expected (N, 1) + {tail}")
            return a

        k2 = get("annot2", (17, 2))
        k3 = get("univ_annot3" if universal else "annot3", (17, 3))
        N = len(k2)
        if len(k3) != N:
            raise PoseDataError(f"{path}: annot2 has {N} frames but annot3 has {len(k3)}")
        valid = np.ones(N, dtype=bool)
        if "valid_frame" in keys:
            v = np.asarray(f["valid_frame"][()]).reshape(-1)
            if len(v) != N:
                raise PoseDataError(f"{path}: valid_frame has {len(v)} entries for {N} frames")
            valid = v > 0
        act = np.zeros(N, dtype=np.int64)
        if "activity_annotation" in keys:
            a = np.asarray(f["activity_annotation"][()]).reshape(-1)
            if len(a) != N:
                raise PoseDataError(f"{path}: activity_annotation has {len(a)} entries for {N} frames")
            act = np.nan_to_num(a).astype(np.int64)
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    m = re.fullmatch(r"TS(\d+)", folder)
    seq = int(m.group(1)) if m else 0
    frame = np.arange(N)
    keep = valid if valid_only else np.ones(N, dtype=bool)
    if not keep.any():
        raise PoseDataError(f"{path}: no valid frames")
    if camera is None:
        camera = MPI_INF_3DHP_CAMERAS.get(folder)
    if camera is None:
        camera = _fit_intrinsics(k2[valid], k3[valid])
    conf = np.ones((N, 17), dtype=np.float32)
    if not valid_only:
        conf[~valid] = 0.0
    actions = np.array([MPI_INF_3DHP_ACTIVITIES.get(int(c), str(int(c))) for c in act])
    return PoseSet(keypoints_2d=k2[keep].astype(np.float32), keypoints_3d=k3[keep].astype(np.float32),
                   confidence=conf[keep], sequence=np.full(int(keep.sum()), seq), frame=frame[keep],
                   subject=np.full(int(keep.sum()), folder or "mpi_inf_3dhp"), action=actions[keep],
                   camera=np.asarray(camera, dtype=np.float32), layout=MPI_INF_3DHP17.name, source=path)


def _matlab_userblock(fh) -> None:
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 1970 HDF5 schema 1.00 ."
    fh.seek(0)
    fh.write(text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def write_mpi_inf_3dhp(path: str, poses: PoseSet) -> str:
    """Write an MPI-INF-3DHP-style ``annot_data.mat`` (HDF5 with a MATLAB v7.3 header).

    One sequence per file. Rows 0..max(frame) are written; frames the pose set lacks get
    ``valid_frame = 0`` and zeros. ``univ_annot3`` is a copy of ``annot3`` (the universal
    skeleton is not representable). Needs 3D; other layouts are converted to mpi_inf_3dhp17
    (every joint must map).
    """
    h5py = _h5py(path)
    _need(poses, path, "keypoints_3d")
    if len(np.unique(poses.sequence)) > 1:
        raise PoseDataError(f"{path}: an annot_data.mat holds one sequence; the pose set has "
                            f"{len(np.unique(poses.sequence))}")
    if poses.layout != MPI_INF_3DHP17.name:
        poses, _ = poses.to_layout(MPI_INF_3DHP17, allow_missing=False)
    fr = np.asarray(poses.frame)
    if fr.min() < 0:
        raise PoseDataError(f"{path}: negative frame numbers cannot be written")
    n = int(fr.max()) + 1
    a2 = np.zeros((n, 1, 17, 2))
    a3 = np.zeros((n, 1, 17, 3))
    valid = np.zeros((n, 1))
    act = np.zeros((n, 1))
    a2[fr, 0] = poses.keypoints_2d
    a3[fr, 0] = poses.keypoints_3d
    valid[fr, 0] = (np.asarray(poses.confidence) > 0).any(axis=1)
    if poses.action is not None:
        codes = {v: k for k, v in MPI_INF_3DHP_ACTIVITIES.items()}
        act[fr, 0] = [codes.get(str(a), int(a) if str(a).isdigit() else 0) for a in poses.action]

    def write(tmp):
        with h5py.File(tmp, "w", userblock_size=512) as f:
            for name, arr in (("annot2", a2), ("annot3", a3), ("univ_annot3", a3), ("valid_frame", valid),
                              ("activity_annotation", act)):
                d = f.create_dataset(name, data=arr)
                d.attrs["MATLAB_class"] = np.bytes_(b"double")
        with open(tmp, "r+b") as raw:
            _matlab_userblock(raw)

    atomic_write_path(path, write)
    return path


# ---------------------------------------------------------------------------------------------
# COCO keypoint JSON
def _read_json(path: str):
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise PoseDataError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise PoseDataError(f"{path}: invalid or truncated JSON ({exc.msg} at line {exc.lineno}, "
                            f"column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise PoseDataError(f"{path}: not a UTF-8 JSON text file ({exc})") from None


def _flat_kp(vals, path, what, n_joints_options):
    if not isinstance(vals, (list, tuple)):
        raise PoseDataError(f"{path}: {what} must be a list of numbers, got {type(vals).__name__}")
    if len(vals) % 3 or len(vals) // 3 not in n_joints_options:
        want = " or ".join(str(3 * j) for j in n_joints_options)
        raise PoseDataError(f"{path}: {what} has {len(vals)} numbers, expected {want} ([x, y, v] per joint)")
    try:
        return np.asarray(vals, dtype=np.float64).reshape(-1, 3)
    except (TypeError, ValueError):
        raise PoseDataError(f"{path}: {what} contains non-numbers") from None


def read_coco(path: str, min_keypoints: int = 1, include_crowd: bool = False) -> PoseSet:
    """Read COCO person keypoints: a dataset file or a results list.

    Dataset (``{"images": [...], "annotations": [...], "categories": [...]}``): each annotation's
    ``keypoints`` = [x, y, v] * 17 in pixels with v = 0 not labelled, 1 labelled but occluded,
    2 visible; confidence = 0, 0.5, 1 respectively. Annotations of non-person categories, crowd
    annotations and those with fewer than ``min_keypoints`` labelled joints are skipped.
    Results (``[{"image_id", "category_id", "keypoints", "score"}, ...]``): the third number is
    the detector's confidence, kept as is.

    One pose per annotation, layout coco17; sequence = image id (frame 0), subject = the
    annotation id as a string (results: its position), action = the image file name if known.
    """
    data = _read_json(path)
    if isinstance(data, dict):
        if "annotations" not in data:
            raise PoseDataError(f"{path}: not a COCO keypoint file: no 'annotations' (keys: {', '.join(data)})")
        anns = data["annotations"]
        results = False
        images = {}
        for im in data.get("images", []) or []:
            if isinstance(im, dict) and "id" in im:
                images[im["id"]] = im.get("file_name", "")
        person_ids = None
        cats = data.get("categories")
        if cats:
            person_ids = {c.get("id") for c in cats if isinstance(c, dict) and c.get("name") == "person"} or None
    elif isinstance(data, list):
        anns, results, images, person_ids = data, True, {}, None
    else:
        raise PoseDataError(f"{path}: not a COCO keypoint file (top level is {type(data).__name__})")
    if not isinstance(anns, list):
        raise PoseDataError(f"{path}: 'annotations' must be a list")
    kps, confs, seqs, subs, acts = [], [], [], [], []
    image_index: dict = {}
    for i, ann in enumerate(anns):
        what = f"annotation {i}" + (f" (id {ann.get('id')})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict) or "keypoints" not in ann:
            raise PoseDataError(f"{path}: {what} has no 'keypoints'")
        if person_ids is not None and ann.get("category_id", 1) not in person_ids:
            continue
        if ann.get("iscrowd", 0) and not include_crowd:
            continue
        kp = _flat_kp(ann["keypoints"], path, f"{what} keypoints", (17,))
        if results:
            c = np.clip(np.nan_to_num(kp[:, 2]), 0, None)
        else:
            v = kp[:, 2]
            if not np.isin(v, (0, 1, 2)).all():
                raise PoseDataError(f"{path}: {what} has visibility flags {sorted(set(v.tolist()))}; COCO uses 0, 1, 2")
            if int((v > 0).sum()) < min_keypoints:
                continue
            c = np.where(v == 2, 1.0, np.where(v == 1, 0.5, 0.0))
        if "image_id" not in ann:
            raise PoseDataError(f"{path}: {what} has no 'image_id'")
        img = ann["image_id"]
        if isinstance(img, (int, np.integer)) and not isinstance(img, bool):
            sid = int(img)
        else:
            sid = image_index.setdefault(img, len(image_index))
        xy = np.where(c[:, None] > 0, kp[:, :2], 0.0)
        kps.append(xy)
        confs.append(c)
        seqs.append(sid)
        subs.append(str(ann["id"]) if (not results and "id" in ann) else str(i))
        acts.append(str(images.get(img, img if not isinstance(img, (int, np.integer)) else "")))
    if not kps:
        raise PoseDataError(f"{path}: no person keypoint annotations")
    n = len(kps)
    return PoseSet(keypoints_2d=np.stack(kps).astype(np.float32), confidence=np.stack(confs).astype(np.float32),
                   sequence=np.asarray(seqs, dtype=np.int64), frame=np.zeros(n, dtype=np.int64),
                   subject=np.asarray(subs), action=np.asarray(acts), layout=COCO17.name, source=path)


def write_coco(path: str, poses: PoseSet, style: str = "dataset") -> str:
    """Write COCO keypoint JSON.

    ``style="dataset"``: images (id = sequence id, file_name = action or ``<id>.jpg``),
    annotations with v = 2 for confidence >= 0.75, 1 for 0 < confidence < 0.75, 0 for missing (so
    0 / 0.5 / 1 round-trip exactly), bbox and area from the labelled joints, and the person
    category with the coco17 keypoint names and skeleton. ``style="results"``: a list of
    detections with the confidences as third numbers and score = mean confidence. Other layouts
    are converted to coco17 first (joints COCO has and the set lacks get v = 0).
    """
    if style not in ("dataset", "results"):
        raise PoseDataError(f"write_coco: style must be 'dataset' or 'results', got {style!r}")
    if poses.layout != COCO17.name:
        poses, _ = poses.to_layout(COCO17, allow_missing=True)
    k = np.asarray(poses.keypoints_2d, dtype=np.float64)
    c = np.asarray(poses.confidence, dtype=np.float64)
    seq = np.asarray(poses.sequence)
    subj = None if poses.subject is None else np.asarray(poses.subject)
    act = None if poses.action is None else np.asarray(poses.action)
    if style == "results":
        out: Any = []
        for i in range(len(poses)):
            flat = np.concatenate([k[i], c[i][:, None]], axis=1).reshape(-1).tolist()
            out.append({"image_id": int(seq[i]), "category_id": 1, "keypoints": flat,
                        "score": float(c[i].mean())})
    else:
        images, anns, used = {}, [], set()
        for i in range(len(poses)):
            sid = int(seq[i])
            if sid not in images:
                name = str(act[i]) if act is not None and str(act[i]) else f"{sid:012d}.jpg"
                images[sid] = {"id": sid, "file_name": name}
            v = np.where(c[i] >= 0.75, 2, np.where(c[i] > 0, 1, 0))
            xy = np.where(v[:, None] > 0, k[i], 0.0)
            flat = np.concatenate([xy, v[:, None]], axis=1).reshape(-1).tolist()
            flat = [int(x) if j % 3 == 2 else x for j, x in enumerate(flat)]
            lab = xy[v > 0]
            if len(lab):
                x0, y0 = lab.min(axis=0)
                w, h = lab.max(axis=0) - lab.min(axis=0)
            else:
                x0 = y0 = w = h = 0.0
            aid = int(subj[i]) if subj is not None and str(subj[i]).isdigit() else None
            if aid is None or aid in used:
                aid = max(used, default=0) + 1
            used.add(aid)
            anns.append({"id": aid, "image_id": sid, "category_id": 1, "keypoints": flat,
                         "num_keypoints": int((v > 0).sum()), "bbox": [float(x0), float(y0), float(w), float(h)],
                         "area": float(w * h), "iscrowd": 0})
        lay = COCO17
        out = {"images": list(images.values()), "annotations": anns,
               "categories": [{"id": 1, "name": "person", "supercategory": "person",
                               "keypoints": list(lay.joint_names),
                               "skeleton": [[a + 1, b + 1] for a, b in lay.bones]}]}
    text = json.dumps(out)
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
    return path


# ---------------------------------------------------------------------------------------------
# OpenPose per-frame JSON
_OP_FRAME = re.compile(r"(\d+)(?!.*\d)")


def _openpose_files(folder: str) -> list[tuple[int, str]]:
    files = [f for f in os.listdir(folder) if f.lower().endswith(".json")]
    out = []
    for i, f in enumerate(sorted(files)):
        stem = f[:-5]
        if stem.endswith("_keypoints"):
            stem = stem[: -len("_keypoints")]
        m = _OP_FRAME.search(stem)
        out.append((int(m.group(1)) if m else i, os.path.join(folder, f)))
    frames = [fr for fr, _ in out]
    if len(set(frames)) != len(frames):  # numbers do not identify frames: use the sorted order
        out = [(i, p) for i, (_, p) in enumerate(out)]
    return sorted(out)


def _pick_track(people: list[np.ndarray], prev: np.ndarray | None) -> int:
    """Index of the person continuing the track: the nearest to ``prev`` on joints both have,
    else (no previous pose) the one with the largest summed confidence."""
    if prev is None:
        return int(np.argmax([p[:, 2].sum() for p in people]))
    best, best_d = 0, np.inf
    for i, p in enumerate(people):
        both = (p[:, 2] > 0) & (prev[:, 2] > 0)
        d = np.linalg.norm(p[both, :2] - prev[both, :2], axis=1).mean() if both.any() else np.inf
        if d < best_d:
            best, best_d = i, d
    if not np.isfinite(best_d):
        return int(np.argmax([p[:, 2].sum() for p in people]))
    return best


def _read_openpose_folder(folder: str, seq_id: int, layout_box: list) -> tuple[list, list, list]:
    kps, confs, frames = [], [], []
    prev = None
    for fr, p in _openpose_files(folder):
        data = _read_json(p)
        if not isinstance(data, dict) or "people" not in data:
            raise PoseDataError(f"{p}: not an OpenPose keypoint file: no 'people'")
        people = []
        for j, person in enumerate(data["people"] or []):
            if not isinstance(person, dict) or "pose_keypoints_2d" not in person:
                raise PoseDataError(f"{p}: person {j} has no 'pose_keypoints_2d'")
            flat = person["pose_keypoints_2d"]
            if not flat:
                continue
            kp = _flat_kp(flat, p, f"person {j} pose_keypoints_2d", (25, 18))
            lay = OPENPOSE25.name if len(kp) == 25 else OPENPOSE18.name
            if layout_box[0] is None:
                layout_box[0] = lay
            elif layout_box[0] != lay:
                raise PoseDataError(f"{p}: person {j} has {len(kp)} keypoints ({lay}) but earlier frames are "
                                    f"{layout_box[0]}")
            kp[:, 2] = np.clip(np.nan_to_num(kp[:, 2]), 0, None)
            people.append(kp)
        if not people:
            continue
        person = people[_pick_track(people, prev)]
        prev = person
        kps.append(np.where(person[:, 2:3] > 0, person[:, :2], 0.0))
        confs.append(person[:, 2])
        frames.append(fr)
    return kps, confs, frames


def read_openpose(folder: str) -> PoseSet:
    """Read a folder of OpenPose ``*_keypoints.json`` frames (``--write_json`` output).

    Each file is one frame: ``{"people": [{"pose_keypoints_2d": [x, y, c] * 25 (BODY_25) or * 18
    (COCO-18), ...}, ...]}`` in pixels; c = 0 marks a missing joint. The frame number is the last
    number in the file name (``video_000000000042_keypoints.json`` -> 42). One person track per
    sequence: the most confident person of the first frame with people, then in each frame the
    person nearest to the previous pick. Frames without people are skipped (their frame numbers are
    absent). A folder whose JSON files sit in subfolders gives one sequence per subfolder (sorted by
    name; action = subfolder name); otherwise one sequence, action = the folder name.
    """
    if not os.path.isdir(folder):
        raise PoseDataError(f"{folder}: not a folder of OpenPose JSON files")
    entries = sorted(os.listdir(folder))
    has_json = any(e.lower().endswith(".json") for e in entries)
    subdirs = [e for e in entries if os.path.isdir(os.path.join(folder, e))]
    seq_dirs = [(folder, os.path.basename(os.path.abspath(folder)))] if has_json else \
        [(os.path.join(folder, d), d) for d in subdirs]
    layout_box: list = [None]
    k_all, c_all, f_all, s_all, a_all = [], [], [], [], []
    for sid, (d, name) in enumerate(seq_dirs):
        kps, confs, frames = _read_openpose_folder(d, sid, layout_box)
        k_all += kps
        c_all += confs
        f_all += frames
        s_all += [sid] * len(kps)
        a_all += [name] * len(kps)
    if not k_all:
        raise PoseDataError(f"{folder}: no OpenPose JSON files with people")
    return PoseSet(keypoints_2d=np.stack(k_all).astype(np.float32), confidence=np.stack(c_all).astype(np.float32),
                   sequence=np.asarray(s_all, dtype=np.int64), frame=np.asarray(f_all, dtype=np.int64),
                   action=np.asarray(a_all), layout=layout_box[0], source=folder)


def write_openpose(folder: str, poses: PoseSet) -> str:
    """Write OpenPose per-frame JSON: ``<name>_<frame:012d>_keypoints.json`` with one person.

    One sequence: the files go into ``folder``; several: one subfolder per sequence, named by the
    sequence's action when those are distinct, else ``seq_<id>``. Layouts other than
    openpose25/openpose18 are converted to openpose25 (joints the set lacks get c = 0).
    """
    if poses.layout not in (OPENPOSE25.name, OPENPOSE18.name):
        poses, _ = poses.to_layout(OPENPOSE25, allow_missing=True)
    groups = _group_sequences(poses)
    names = [str(poses.action[g[0]]) if poses.action is not None else "" for g in groups]
    distinct = len(set(names)) == len(names) and all(n and "/" not in n and n not in (".", "..") for n in names)
    os.makedirs(folder, exist_ok=True)
    for g, name in zip(groups, names):
        sub = folder if len(groups) == 1 else os.path.join(folder, name if distinct else f"seq_{int(poses.sequence[g[0]])}")
        os.makedirs(sub, exist_ok=True)
        prefix = re.sub(r"[^A-Za-z_\-]", "_", name) or "frame"
        for i in g:
            flat = np.concatenate([np.asarray(poses.keypoints_2d[i], dtype=np.float64),
                                   np.asarray(poses.confidence[i], dtype=np.float64)[:, None]], axis=1)
            doc = {"version": 1.3, "people": [{
                "person_id": [-1], "pose_keypoints_2d": flat.reshape(-1).tolist(), "face_keypoints_2d": [],
                "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [], "pose_keypoints_3d": [],
                "face_keypoints_3d": [], "hand_left_keypoints_3d": [], "hand_right_keypoints_3d": []}]}
            text = json.dumps(doc)
            p = os.path.join(sub, f"{prefix}_{int(poses.frame[i]):012d}_keypoints.json")
            atomic_write(p, lambda fh, t=text: fh.write(t.encode("utf-8")))
    return folder


# ---------------------------------------------------------------------------------------------
# dispatch
def detect_format(path: str) -> str:
    """The format of ``path``: one of :data:`FORMATS` (PoseDataError if it cannot be told)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return "openpose"
    if not os.path.exists(path):
        raise PoseDataError(f"{path}: no such file or folder")
    low = path.lower()
    if low.endswith(".json"):
        return "coco"
    if low.endswith((".mat", ".h5", ".hdf5")):
        return "mpi_inf_3dhp"
    if low.endswith(".npz"):
        with open_npz(path) as zf:
            names = npz_member_names(zf)
        if "keypoints_2d" in names:
            return "fastlift"
        if "positions_2d" in names or "positions_3d" in names:
            return "videopose3d"
        raise PoseDataError(f"{path}: an .npz that is neither a fastlift pose file (keypoints_2d) nor a "
                            f"VideoPose3D file (positions_2d / positions_3d); arrays: {', '.join(names)}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK"):
        return detect_format_npz_like(path)
    if head.startswith(b"\x89HDF") or head.startswith(b"MATLAB"):
        return "mpi_inf_3dhp"
    raise PoseDataError(f"{path}: cannot tell the pose format from the name; pass format= one of "
                        f"{', '.join(FORMATS)}")


def detect_format_npz_like(path: str) -> str:
    with open_npz(path) as zf:
        names = npz_member_names(zf)
    if "keypoints_2d" in names:
        return "fastlift"
    if "positions_2d" in names or "positions_3d" in names:
        return "videopose3d"
    raise PoseDataError(f"{path}: a zip archive that is not a pose file; arrays: {', '.join(names)}")


def load_poses(path: str, format: str | None = None, layout: str | None = None, mmap: bool = True,
               **kwargs) -> PoseSet:
    """Read poses from any supported format (autodetected unless ``format`` is given).

    Args:
        path: a file or (OpenPose) folder.
        format: one of ``fastlift``, ``videopose3d``, ``mpi_inf_3dhp``, ``coco``, ``openpose``.
        layout: convert to this layout after reading (e.g. ``"h36m17"``); None keeps the file's.
        mmap: memory-map a fastlift pose file (ignored by the other readers).
        **kwargs: passed to the reader, e.g. ``path_3d=`` for a VideoPose3D 2D file,
            ``valid_only=`` for MPI-INF-3DHP.
    """
    path = os.fspath(path)
    fmt = detect_format(path) if format is None else format
    if fmt == "fastlift":
        poses = PoseSet.load(path, mmap=mmap, **kwargs)
    elif fmt == "videopose3d":
        with open_npz(path) as zf:
            names = npz_member_names(zf)
        if "positions_2d" in names:
            poses = read_videopose3d(path_2d=path, **kwargs)
        else:
            poses = read_videopose3d(path_3d=path, **kwargs)
    elif fmt == "mpi_inf_3dhp":
        poses = read_mpi_inf_3dhp(path, **kwargs)
    elif fmt == "coco":
        poses = read_coco(path, **kwargs)
    elif fmt == "openpose":
        poses = read_openpose(path, **kwargs)
    else:
        raise PoseDataError(f"{path}: unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if layout is not None:
        poses, synth = poses.to_layout(layout)
        if synth:
            warnings.warn(f"{path}: converted {fmt} keypoints to {layout}; synthesised joints: {', '.join(synth)}",
                          RuntimeWarning, stacklevel=2)
    return poses


def save_poses(poses: PoseSet, path: str, format: str | None = None, **kwargs) -> str:
    """Write ``poses`` in ``format`` (default: from the path: ``.json`` COCO, ``.mat`` MPI-INF-3DHP,
    a name without extension an OpenPose folder, ``data_2d_*.npz`` / ``data_3d_*.npz`` VideoPose3D,
    any other ``.npz`` a fastlift pose file)."""
    path = os.fspath(path)
    if format is None:
        low = os.path.basename(path).lower()
        if low.endswith(".json"):
            format = "coco"
        elif low.endswith((".mat", ".h5", ".hdf5")):
            format = "mpi_inf_3dhp"
        elif low.startswith(("data_2d_", "data_3d_")) and low.endswith(".npz"):
            format = "videopose3d"
        elif low.endswith(".npz"):
            format = "fastlift"
        elif "." not in low:
            format = "openpose"
        else:
            raise PoseDataError(f"{path}: cannot tell the output format from the name; pass format=")
    if format == "fastlift":
        return poses.save(path, **kwargs)
    if format == "videopose3d":
        if os.path.basename(path).lower().startswith("data_3d_"):
            return write_videopose3d_3d(path, poses)
        return write_videopose3d_2d(path, poses)
    if format == "mpi_inf_3dhp":
        return write_mpi_inf_3dhp(path, poses)
    if format == "coco":
        return write_coco(path, poses, **kwargs)
    if format == "openpose":
        return write_openpose(path, poses)
    raise PoseDataError(f"{path}: unknown format {format!r}; formats: {', '.join(FORMATS)}")
