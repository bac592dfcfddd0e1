"""The fastlift pose file and its in-memory form, :class:`PoseSet`.

The pose file is an ``.npz`` (a zip of ``.npy`` arrays, written by ``np.savez``) holding:

==================  =============  ==========================================================
key                 shape, dtype   meaning
==================  =============  ==========================================================
``keypoints_2d``    (N, J, 2) f4   2D joints in pixels, x right, y down (required)
``keypoints_3d``    (N, J, 3) f4   3D joints in the camera frame, mm, x right, y down, z forward
``layout``          () str         layout name (default ``"h36m17"``), see layouts.py
``confidence``      (N, J) f4      per-joint confidence in [0, 1]; 0 = missing (default 1)
``sequence``        (N,) i8        sequence id; consecutive video frames share one
``frame``           (N,) i8        frame number within the sequence (consecutive frames differ by 1)
``subject``         (N,) str       subject / person name (optional)
``action``          (N,) str       action / clip name (optional)
``camera``          (N, 4) or (4,) fx, fy, cx, cy in pixels, pinhole (optional)
``fastlift_pose_format``  () i8    format version, 1 (written by :meth:`PoseSet.save`)
==================  =============  ==========================================================

Missing joints are stored with confidence 0 and coordinates 0. NaN coordinates are never kept: on
construction and on load, a joint with a NaN 2D (or 3D) coordinate gets confidence 0 and its NaN
coordinates become 0 (documented masking, not an error). Files are saved uncompressed by default so
that :meth:`PoseSet.load` can memory-map every array (10M poses open in milliseconds); pass
``compress=True`` for a smaller file that is read into memory.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields, replace
from typing import Iterable, Sequence

import numpy as np

from fastlift._atomic import atomic_write
from fastlift.data.errors import PoseDataError
from fastlift.data.layouts import HEAD, ROOT, Layout, convert_keypoints, get_layout
from fastlift.data.npzmap import npz_member_names, open_npz, read_member

__all__ = ["PoseSet", "POSE_FILE_KEYS", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_ARRAY_FIELDS = ("keypoints_2d", "keypoints_3d", "confidence", "sequence", "frame", "subject",
                 "action", "camera")
#: Every key a fastlift pose file may hold.
POSE_FILE_KEYS = _ARRAY_FIELDS + ("layout", "fastlift_pose_format")
_CHUNK = 1 << 20  # rows per chunk for streaming scans


def _is_readonly(a: np.ndarray) -> bool:
    return not a.flags.writeable


@dataclass
class PoseSet:
    """N poses of one layout, as numpy arrays (optionally memory-mapped).

    Attributes:
        keypoints_2d: (N, J, 2) float32, pixels, x right, y down.
        keypoints_3d: (N, J, 3) float32, camera frame in mm (x right, y down, z forward), or None.
        confidence: (N, J) float32 in [0, 1], 0 = missing. Defaults to 1 (0 where NaN).
        sequence: (N,) int64 sequence ids. Defaults to ``arange(N)`` (every pose its own sequence).
        frame: (N,) int64 frame numbers within a sequence. Defaults to 0.
        subject: (N,) str (or int) subject names, or None.
        action: (N,) str (or int) action names, or None.
        camera: (N, 4) or (4,) float32 pinhole intrinsics fx, fy, cx, cy in pixels, or None.
        layout: layout name (see :mod:`fastlift.data.layouts`).
        source: where the set came from (a path), used in error messages; not saved.

    Construction validates shapes and dtypes (PoseDataError naming ``source``) and masks NaN
    coordinates (confidence 0, coordinates 0).
    """

    keypoints_2d: np.ndarray
    keypoints_3d: np.ndarray | None = None
    confidence: np.ndarray | None = None
    sequence: np.ndarray | None = None
    frame: np.ndarray | None = None
    subject: np.ndarray | None = None
    action: np.ndarray | None = None
    camera: np.ndarray | None = None
    layout: str = "h36m17"
    source: str | None = None

    # ------------------------------------------------------------------ validation
    def __post_init__(self):
        where = self.source or "PoseSet"
        lay = get_layout(self.layout) if not isinstance(self.layout, Layout) else self.layout
        self.layout = lay.name
        J = lay.num_joints
        kp = self.keypoints_2d
        if kp is None:
            raise PoseDataError(f"{where}: keypoints_2d is required")
        kp = np.asarray(kp) if not isinstance(kp, np.ndarray) else kp
        if kp.ndim != 3 or kp.shape[2] != 2:
            raise PoseDataError(f"{where}: keypoints_2d must have shape (N, J, 2), got {kp.shape}")
        if kp.shape[1] != J:
            raise PoseDataError(
                f"{where}: keypoints_2d has {kp.shape[1]} joints but layout {lay.name!r} has {J}")
        N = kp.shape[0]
        self.keypoints_2d = self._float(kp, "keypoints_2d", where)
        if self.keypoints_3d is not None:
            k3 = np.asarray(self.keypoints_3d) if not isinstance(self.keypoints_3d, np.ndarray) else self.keypoints_3d
            if k3.shape != (N, J, 3):
                raise PoseDataError(f"{where}: keypoints_3d must have shape ({N}, {J}, 3), got {k3.shape}")
            self.keypoints_3d = self._float(k3, "keypoints_3d", where)
        if self.confidence is None:
            self.confidence = np.ones((N, J), dtype=np.float32)
        else:
            c = np.asarray(self.confidence) if not isinstance(self.confidence, np.ndarray) else self.confidence
            if c.shape != (N, J):
                raise PoseDataError(f"{where}: confidence must have shape ({N}, {J}), got {c.shape}")
            self.confidence = self._float(c, "confidence", where)
        for name in ("sequence", "frame"):
            v = getattr(self, name)
            if v is None:
                v = np.arange(N, dtype=np.int64) if name == "sequence" else np.zeros(N, dtype=np.int64)
            else:
                v = np.asarray(v) if not isinstance(v, np.ndarray) else v
                if v.shape != (N,):
                    raise PoseDataError(f"{where}: {name} must have shape ({N},), got {v.shape}")
                if v.dtype.kind not in "iu":
                    if v.dtype.kind == "f" and N and np.all(np.isfinite(v)) and np.all(v == np.round(v)):
                        v = v.astype(np.int64)
                    elif N:
                        raise PoseDataError(f"{where}: {name} must be integers, got dtype {v.dtype}")
                    else:
                        v = v.astype(np.int64)
                if v.dtype != np.int64:
                    v = v.astype(np.int64)
            setattr(self, name, v)
        for name in ("subject", "action"):
            v = getattr(self, name)
            if v is None:
                continue
            v = np.asarray(v) if not isinstance(v, np.ndarray) else v
            if v.shape != (N,):
                raise PoseDataError(f"{where}: {name} must have shape ({N},), got {v.shape}")
            if v.dtype.kind == "O":
                v = v.astype(str)
            if v.dtype.kind not in "USiu":
                raise PoseDataError(f"{where}: {name} must be strings or integers, got dtype {v.dtype}")
            setattr(self, name, v)
        if self.camera is not None:
            cam = np.asarray(self.camera) if not isinstance(self.camera, np.ndarray) else self.camera
            if cam.shape not in ((4,), (N, 4)):
                raise PoseDataError(f"{where}: camera must have shape (4,) or ({N}, 4) as fx, fy, cx, cy, "
                                    f"got {cam.shape}")
            self.camera = self._float(cam, "camera", where)
        self._mask_nan(where)

    @staticmethod
    def _float(a: np.ndarray, name: str, where: str) -> np.ndarray:
        if a.dtype.kind not in "fiu":
            raise PoseDataError(f"{where}: {name} must be a float array, got dtype {a.dtype}")
        return a if a.dtype == np.float32 else a.astype(np.float32)

    def _mask_nan(self, where: str) -> None:
        """Joints with NaN/inf coordinates or confidence -> confidence 0, coordinates 0."""
        N = len(self)
        bad_rows = []
        arrays = [a for a in (self.keypoints_2d, self.confidence, self.keypoints_3d) if a is not None]
        for s in range(0, N, _CHUNK):
            e = min(N, s + _CHUNK)
            cmin = self.confidence[s:e].min(initial=0.0)
            if cmin < 0:
                raise PoseDataError(f"{where}: confidence must be >= 0 (0 = missing), found {cmin}")
            # fast path: a finite float64 sum means no NaN/inf in the chunk
            if all(np.isfinite(np.sum(a[s:e], dtype=np.float64)) for a in arrays):
                continue
            bad = np.zeros(e - s, dtype=bool)
            for a in arrays:
                bad |= ~np.isfinite(a[s:e].reshape(e - s, -1)).all(axis=1)
            if bad.any():
                bad_rows.append(s + np.flatnonzero(bad))
        if not bad_rows:
            return
        rows = np.concatenate(bad_rows)
        for name in ("keypoints_2d", "confidence", "keypoints_3d"):
            a = getattr(self, name)
            if a is not None and _is_readonly(a):
                setattr(self, name, np.array(a))  # copy a read-only (memory-mapped) array to fix it
        k2 = self.keypoints_2d[rows]
        c = self.confidence[rows]
        nan_joint = ~np.isfinite(k2).all(axis=-1) | ~np.isfinite(c)
        if self.keypoints_3d is not None:
            k3 = self.keypoints_3d[rows]
            nan_joint |= ~np.isfinite(k3).all(axis=-1)
            self.keypoints_3d[rows] = np.where(np.isfinite(k3), k3, 0)
        self.keypoints_2d[rows] = np.where(np.isfinite(k2), k2, 0)
        self.confidence[rows] = np.where(nan_joint, 0, c)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.keypoints_2d.shape[0])

    @property
    def num_joints(self) -> int:
        return int(self.keypoints_2d.shape[1])

    @property
    def layout_obj(self) -> Layout:
        return get_layout(self.layout)

    @property
    def has_3d(self) -> bool:
        return self.keypoints_3d is not None

    def camera_rows(self) -> np.ndarray | None:
        """(N, 4) float32 intrinsics (broadcast from (4,)), or None."""
        if self.camera is None:
            return None
        return np.broadcast_to(self.camera, (len(self), 4)) if self.camera.ndim == 1 else self.camera

    def subset(self, idx) -> "PoseSet":
        """The poses at ``idx`` (a slice, an index array or a boolean mask of length N)."""
        if isinstance(idx, slice):
            take = lambda a: a[idx]  # noqa: E731 - views for slices
        else:
            idx = np.asarray(idx)
            if idx.dtype == bool:
                if idx.shape != (len(self),):
                    raise PoseDataError(f"subset: boolean mask must have shape ({len(self)},), got {idx.shape}")
            elif idx.dtype.kind not in "iu":
                raise PoseDataError(f"subset: index must be integers, a boolean mask or a slice, got {idx.dtype}")
            take = lambda a: a[idx]  # noqa: E731
        kw = {}
        for name in _ARRAY_FIELDS:
            a = getattr(self, name)
            if a is None or (name == "camera" and a.ndim == 1):
                kw[name] = a
            else:
                kw[name] = take(a)
        return PoseSet(layout=self.layout, source=self.source, **kw)

    @staticmethod
    def concatenate(sets: Sequence["PoseSet"], renumber_sequences: bool = False) -> "PoseSet":
        """Stack pose sets of one layout. Optional fields must be present in all or none.

        With ``renumber_sequences`` the sequence ids of set i are offset so that they stay
        distinct from those of the sets before it.
        """
        sets = list(sets)
        if not sets:
            raise PoseDataError("concatenate: no pose sets given")
        lay = sets[0].layout
        for s in sets:
            if s.layout != lay:
                raise PoseDataError(f"concatenate: layouts differ ({lay!r} and {s.layout!r})")
        kw = {}
        for name in _ARRAY_FIELDS:
            vals = [getattr(s, name) for s in sets]
            present = [v is not None for v in vals]
            if not any(present):
                kw[name] = None
                continue
            if not all(present):
                raise PoseDataError(f"concatenate: {name} is present in some pose sets and missing in others")
            if name == "camera":
                vals = [s.camera_rows() for s in sets]
            if name == "sequence" and renumber_sequences:
                out, off = [], 0
                for v in vals:
                    out.append(v - (v.min() if len(v) else 0) + off)
                    off = (out[-1].max() + 1) if len(v) else off
                vals = out
            kw[name] = np.concatenate(vals)
        return PoseSet(layout=lay, source=sets[0].source, **kw)

    def to_layout(self, layout: str | Layout, allow_missing: bool | None = None) -> tuple["PoseSet", list[str]]:
        """This set in another layout: ``(poseset, synthesised_joint_names)``.

        2D and 3D keypoints go through :func:`~fastlift.data.layouts.convert_keypoints` with the
        same rules; a synthesised 3D joint is the same affine combination of the 3D joints.
        """
        dst = get_layout(layout)
        if dst.name == self.layout:
            return self, []
        k2, c, synth = convert_keypoints(self.keypoints_2d, self.confidence, self.layout, dst,
                                         allow_missing=allow_missing)
        k3 = None
        if self.keypoints_3d is not None:
            k3, _, _ = convert_keypoints(self.keypoints_3d, self.confidence, self.layout, dst,
                                         allow_missing=allow_missing)
        return replace(self, keypoints_2d=k2, keypoints_3d=k3, confidence=c, layout=dst.name), synth

    # ------------------------------------------------------------------ geometry helpers
    def head_root_distance(self, root: int = ROOT, head: int = HEAD, max_samples: int = 1_000_000) -> float:
        """Mean 2D head-root distance in pixels over poses where both joints are present.

        At most ``max_samples`` poses, evenly strided, are used (deterministic). This is the
        dataset constant of the "fixed" normalisation: scale = 1 / (c * this).
        """
        N = len(self)
        step = max(1, -(-N // max_samples))
        k = self.keypoints_2d[::step]
        c = self.confidence[::step]
        ok = (c[:, root] > 0) & (c[:, head] > 0)
        if not ok.any():
            raise PoseDataError(f"{self.source or 'PoseSet'}: no pose has both joint {root} and joint {head}")
        d = np.linalg.norm(k[ok, head].astype(np.float64) - k[ok, root], axis=-1)
        return float(d.mean())

    def previous_index(self, k: int = 1) -> np.ndarray:
        """(N,) int64: index of the pose k frames earlier in the same sequence, -1 if none.

        Pairs are matched on (sequence, frame - k), so gaps in frame numbers are respected.
        Vectorised: O(N log N) (a sort only if the set is not ordered by sequence, frame).
        """
        if int(k) != k or k < 1:
            raise PoseDataError(f"temporal offset must be a positive integer, got {k!r}")
        k = int(k)
        N = len(self)
        out = np.full(N, -1, dtype=np.int64)
        if N == 0:
            return out
        seq, fr = self.sequence, self.frame
        ordered = bool(np.all((seq[1:] > seq[:-1]) | ((seq[1:] == seq[:-1]) & (fr[1:] >= fr[:-1]))))
        if ordered:
            order = None
            s, f = np.asarray(seq), np.asarray(fr)
        else:
            order = np.lexsort((fr, seq))
            s, f = seq[order], fr[order]
        rank = np.concatenate([[0], np.cumsum(s[1:] != s[:-1])]).astype(np.int64)
        fmin = int(f.min())
        span = int(f.max()) - fmin + k + 1
        if (int(rank[-1]) + 1) * span >= 2**62:
            raise PoseDataError("previous_index: frame numbers span too wide a range to index")
        key = rank * span + (f - fmin + k)
        pos = np.searchsorted(key, key - k)
        pos_c = np.minimum(pos, N - 1)
        found = (pos < N) & (key[pos_c] == key - k)
        prev_sorted = np.where(found, pos_c, -1)
        if order is None:
            return prev_sorted
        out[order] = np.where(prev_sorted >= 0, order[np.maximum(prev_sorted, 0)], -1)
        return out

    # ------------------------------------------------------------------ files
    def save(self, path: str, compress: bool = False) -> str:
        """Write the pose file atomically (temporary file in the same folder, then ``os.replace``).

        ``compress=False`` (default) stores the arrays uncompressed so :meth:`load` can memory-map
        them; arrays are streamed in 16 MiB chunks, so memory-mapped sets of any size can be saved.
        Returns ``path``.
        """
        path = os.fspath(path)
        if not path.endswith(".npz"):
            raise PoseDataError(f"{path}: a fastlift pose file must end in .npz")
        arrays = {"layout": np.array(self.layout), "fastlift_pose_format": np.array(FORMAT_VERSION)}
        for name in _ARRAY_FIELDS:
            a = getattr(self, name)
            if a is not None:
                arrays[name] = a
        atomic_write(path, lambda fh: (np.savez_compressed if compress else np.savez)(fh, **arrays))
        return path

    @classmethod
    def load(cls, path: str, mmap: bool = True, with_3d: bool = True) -> "PoseSet":
        """Read a fastlift pose file (see the module docstring for the keys).

        With ``mmap=True`` (default) uncompressed arrays are memory-mapped read-only: nothing is
        read until used (the NaN scan at load reads the keypoints once, sequentially). Random access
        through a map costs a page fault per row not yet mapped; :class:`PoseLoader` copies the
        arrays it reads into RAM when they fit, and ``mmap=False`` reads the whole file into
        memory here. ``with_3d=False`` skips
        ``keypoints_3d``. PoseDataError for a missing/unknown key, a truncated or corrupt file, or
        shapes that do not agree (the message names the file).
        """
        path = os.fspath(path)
        with open_npz(path) as zf:
            names = npz_member_names(zf)
            if "keypoints_2d" not in names:
                raise PoseDataError(
                    f"{path}: not a fastlift pose file: missing required key 'keypoints_2d' "
                    f"(keys: {', '.join(names) or 'none'})")
            unknown = [n for n in names if n not in POSE_FILE_KEYS]
            if unknown:
                raise PoseDataError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))} in a fastlift "
                                    f"pose file; allowed keys: {', '.join(POSE_FILE_KEYS)}")
            kw = {n: read_member(path, zf, n, mmap=mmap) for n in names
                  if with_3d or n != "keypoints_3d"}
        layout = kw.pop("layout", np.array("h36m17"))
        version = kw.pop("fastlift_pose_format", np.array(FORMAT_VERSION))
        if layout.shape != () or layout.dtype.kind != "U":
            raise PoseDataError(f"{path}: 'layout' must be a 0-d string array, got shape {layout.shape} "
                                f"dtype {layout.dtype}")
        if version.shape != () or int(version) > FORMAT_VERSION:
            raise PoseDataError(f"{path}: pose file format version {version} is newer than this reader "
                                f"({FORMAT_VERSION})")
        try:
            return cls(layout=str(layout), source=path, **kw)
        except PoseDataError as exc:
            msg = str(exc)
            raise PoseDataError(msg if msg.startswith(path) else f"{path}: {msg}") from None

    # ------------------------------------------------------------------ summaries
    def summary(self) -> str:
        """A few lines describing the set (what ``python -m fastlift.data info`` prints)."""
        N, J = len(self), self.num_joints
        lines = [f"poses: {N}   joints: {J}   layout: {self.layout}"]
        if N == 0:
            return "\n".join(lines)
        seq = self.sequence
        n_seq = int(np.count_nonzero(np.diff(np.sort(seq))) + 1)
        lines.append(f"sequences: {n_seq}   frames per sequence: {N / n_seq:.1f} (mean)")
        miss = float((np.asarray(self.confidence) == 0).mean())
        lines.append(f"missing joints (confidence 0): {100 * miss:.2f}%")
        k = np.asarray(self.keypoints_2d[:: max(1, N // 100_000)])
        lines.append(f"2D x range [{k[..., 0].min():.1f}, {k[..., 0].max():.1f}] px, "
                     f"y range [{k[..., 1].min():.1f}, {k[..., 1].max():.1f}] px")
        if self.has_3d:
            k3 = np.asarray(self.keypoints_3d[:: max(1, N // 100_000)])
            depth = k3[:, ROOT if self.layout == "h36m17" else self.layout_obj.root, 2]
            lines.append(f"3D: yes (camera frame, mm); root depth median {np.median(depth):.0f} mm, "
                         f"range [{depth.min():.0f}, {depth.max():.0f}] mm")
        else:
            lines.append("3D: no")
        for name in ("subject", "action"):
            v = getattr(self, name)
            if v is not None:
                u = np.unique(np.asarray(v[:: max(1, N // 1_000_000)]))
                shown = ", ".join(map(str, u[:8])) + (", ..." if len(u) > 8 else "")
                lines.append(f"{name}s: {len(u)} ({shown})")
        if self.camera is not None:
            cam = self.camera if self.camera.ndim == 1 else self.camera[0]
            lines.append(f"camera: fx, fy, cx, cy = {', '.join(f'{x:.1f}' for x in cam)}"
                         + ("" if self.camera.ndim == 1 else " (first pose)"))
        if N <= 20_000_000:
            n_pairs = int((self.previous_index(1) >= 0).sum())
            lines.append(f"temporal pairs (k=1): {n_pairs}")
        return "\n".join(lines)


def _warn(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def iter_fields() -> Iterable[str]:
    """Names of the array fields of a PoseSet, in file order."""
    return tuple(f.name for f in fields(PoseSet) if f.name in _ARRAY_FIELDS)
