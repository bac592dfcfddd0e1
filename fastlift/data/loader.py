"""Batches of normalised poses for training: :class:`PoseLoader`.

The loader indexes the PoseSet's numpy arrays directly (memory-mapped pose files included): no
per-sample Python objects, no worker processes. An epoch is a seeded permutation of the eligible
poses, sharded like ``torch.utils.data.DistributedSampler`` (rank r takes every world_size-th index
of the padded permutation), cut into batches. The position (epoch, batch) is saved by
:meth:`PoseLoader.state_dict` and restored by :meth:`PoseLoader.load_state_dict`, so a resumed run
sees exactly the batches the interrupted one would have seen.
"""
from __future__ import annotations

import copy
import os
from typing import Iterator

import numpy as np
import torch

from fastlift.data.errors import PoseDataError
from fastlift.data.layouts import H36M17, HEAD, ROOT
from fastlift.data.normalize import DEFAULT_C, DEFAULT_EPS, normalize_2d_torch
from fastlift.data.poseset import PoseSet

__all__ = ["PoseLoader"]

_STATE_KEYS = ("seed", "shuffle", "drop_last", "batch_size", "rank", "world_size", "temporal_offset",
               "num_eligible", "sequence_partners", "partner_key")


def _read_into_memory(a: np.ndarray) -> np.ndarray:
    """A RAM copy of a memory-mapped array: read from its file with large sequential reads when the
    array is the whole map (faster than faulting the map in page by page), else ``np.array``."""
    mm = a.base
    if (isinstance(mm, np.memmap) and getattr(mm, "filename", None) and a.flags.c_contiguous
            and a.shape == mm.shape and a.nbytes == mm.nbytes):
        out = np.empty(a.shape, dtype=a.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        try:
            with open(mm.filename, "rb", buffering=0) as fh:
                fh.seek(mm.offset)
                pos, step = 0, 1 << 26
                while pos < len(view):
                    n = fh.readinto(view[pos:pos + step])
                    if not n:
                        break
                    pos += n
            if pos == len(view):
                return out
        except OSError:
            pass
    return np.array(a)


class PoseLoader:
    """Iterable of dict batches of torch tensors.

    Args:
        poseset: the poses (h36m17 unless ``root``/``head`` are given for another layout).
        batch_size: poses per batch and rank.
        shuffle: a new seeded permutation every epoch (``seed``, epoch); else dataset order.
        seed: shuffling seed.
        drop_last: drop the tail that does not fill a whole batch, and the tail that does not
            divide by world_size. Without it the last batch is short and the shards are padded by
            wrapping around (as DistributedSampler does), so every rank has the same length.
        temporal_offset: k >= 1 to yield frame pairs (x_t, x_{t-k}) of the same sequence (matched on
            sequence id and frame number); only poses that have such a partner are sampled.
        sequence_partners: K >= 1 (True: 1) to also yield, for each pose, K uniformly random frames
            of the same sequence (any distance; itself when the sequence has no other usable
            frame), for cues that hold across a whole sequence, such as a person's bone lengths.
        partner_key: ``"sequence"`` (partners from the pose's sequence) or ``"subject"`` (from any
            sequence of the same subject: the same person seen by other cameras, doing other things;
            the set must have subject names).
        rank, world_size: this process's shard.
        normalization: ``"per_sample"`` (each pose scaled so head-root = 1/c) or ``"fixed"`` (one
            constant scale, ``fixed_scale``, default 1 / (c * mean head-root distance of this set);
            pass the training set's value to apply it to another set).
        device: where the tensors go.
        c, eps: normalisation constants (see :mod:`fastlift.data.normalize`).
        require_root_head: skip poses whose root or head has confidence 0 (they cannot be
            normalised); for pairs, both frames must have them.
        root, head: joint indices for normalisation (h36m17: 0 and 10).
        with_3d: include ``keypoints_3d`` when the set has it (False saves reading 40 % of the
            bytes per batch when 3D is only needed for evaluation).
        in_memory: copy the arrays the batches read (2D, confidence, 3D if used) out of a
            memory-mapped file into RAM once, at construction (a sequential read). Random access
            through a map costs a page fault per row not yet mapped, which is slow on some
            systems (virtual machines, sandboxes) and for files larger than the page cache.
            None (default): copy when they are memory-mapped and together take at most
            ``in_memory_limit_bytes`` (default: a quarter of the physical memory). The caller's
            PoseSet is not changed; ``loader.poses`` is the set the batches come from.

    Each batch holds (B = batch size, J joints):
        ``keypoints_2d`` (B, J, 2) float32 normalised; ``confidence`` (B, J) float32 (0 = missing);
        ``scale`` (B,) float32, the factor applied (1/pixels); ``index`` (B,) int64 positions in the
        PoseSet; ``keypoints_3d`` (B, J, 3) float32 root-relative mm (camera frame) when the set has
        3D (and ``with_3d``); with ``temporal_offset``: ``keypoints_2d_prev`` (B, J, 2) (each frame
        normalised on its own, like the fake pairs built from single-frame lifts),
        ``confidence_prev`` (B, J) and
        ``scale_prev`` (B,); with ``sequence_partners`` K: ``keypoints_2d_partner`` (K B, J, 2) and
        ``confidence_partner`` (K B, J), partner-major (rows k B .. (k+1) B - 1 are the k-th partners
        of the batch's poses, in the batch's order). Within a batch the poses come in increasing index order (faster reads
        from memory-mapped files); across batches the order is the seeded permutation.

    Iterating runs the rest of the current epoch and then moves the position to (epoch + 1, 0), so
    ``for epoch in range(E): for batch in loader: ...`` walks E different permutations;
    :meth:`set_epoch` sets the position explicitly.
    """

    def __init__(self, poseset: PoseSet, batch_size: int = 256, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, temporal_offset: int | None = None, rank: int = 0, world_size: int = 1,
                 normalization: str = "per_sample", device: str | torch.device = "cpu", *, c: float = DEFAULT_C,
                 eps: float = DEFAULT_EPS, fixed_scale: float | None = None, require_root_head: bool = True,
                 root: int | None = None, head: int | None = None, with_3d: bool = True,
                 in_memory: bool | None = None, in_memory_limit_bytes: int | None = None,
                 sequence_partners: int | bool = 0, partner_key: str = "sequence"):
        if not isinstance(poseset, PoseSet):
            raise PoseDataError(f"PoseLoader: poseset must be a PoseSet, got {type(poseset).__name__}")
        if root is None or head is None:
            if poseset.layout != H36M17.name:
                raise PoseDataError(
                    f"PoseLoader: the pose set is in layout {poseset.layout!r}; convert it with "
                    f"poseset.to_layout('h36m17') or pass root= and head= joint indices")
            root, head = ROOT, HEAD
        if int(batch_size) < 1:
            raise PoseDataError(f"PoseLoader: batch_size must be >= 1, got {batch_size}")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise PoseDataError(f"PoseLoader: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if normalization not in ("per_sample", "fixed"):
            raise PoseDataError(f"PoseLoader: normalization must be 'per_sample' or 'fixed', got {normalization!r}")
        if temporal_offset is not None and (int(temporal_offset) != temporal_offset or temporal_offset < 1):
            raise PoseDataError(f"PoseLoader: temporal_offset must be a positive integer or None, got {temporal_offset!r}")
        self.poses = poseset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.temporal_offset = None if temporal_offset is None else int(temporal_offset)
        self.rank, self.world_size = int(rank), int(world_size)
        self.normalization = normalization
        self.device = torch.device(device)
        self.c, self.eps = float(c), float(eps)
        self.root, self.head = int(root), int(head)
        self.require_root_head = bool(require_root_head)
        self.with_3d = bool(with_3d)
        if int(sequence_partners) != sequence_partners or sequence_partners < 0:
            raise PoseDataError(f"PoseLoader: sequence_partners must be a count >= 0, got {sequence_partners!r}")
        self.sequence_partners = int(sequence_partners)
        if partner_key not in ("sequence", "subject"):
            raise PoseDataError(f"PoseLoader: partner_key must be 'sequence' or 'subject', got {partner_key!r}")
        if self.sequence_partners and partner_key == "subject" and poseset.subject is None:
            raise PoseDataError(f"PoseLoader: partner_key='subject' but {poseset.source or 'the pose set'} has no subject names")
        self.partner_key = partner_key

        self.copied_to_memory = self._maybe_copy(in_memory, in_memory_limit_bytes)
        N = len(poseset)
        ok = None
        self._prev = None
        if self.temporal_offset is not None:
            self._prev = poseset.previous_index(self.temporal_offset)
            ok = self._prev >= 0
        rh = None
        if self.require_root_head:
            rh = self._root_head_ok()
            if not rh.all():
                ok = rh if ok is None else ok & rh
            if self._prev is not None:
                ok &= rh[np.maximum(self._prev, 0)]
        self._eligible = None if ok is None or ok.all() else np.flatnonzero(ok)
        self._partner_groups = self._sequence_groups(rh) if self.sequence_partners else None
        self.num_eligible = N if self._eligible is None else len(self._eligible)
        if self.num_eligible == 0:
            what = f"with a frame {self.temporal_offset} earlier in the same sequence" if self.temporal_offset else \
                "with both root and head present"
            raise PoseDataError(f"PoseLoader: {poseset.source or 'the pose set'} has no poses {what}")
        if self.num_eligible < self.world_size and self.drop_last:
            raise PoseDataError(f"PoseLoader: {self.num_eligible} poses cannot be split over {self.world_size} ranks")
        W = self.world_size
        self.num_samples = self.num_eligible // W if self.drop_last else -(-self.num_eligible // W)
        B = self.batch_size
        self.num_batches = self.num_samples // B if self.drop_last else -(-self.num_samples // B)
        if self.num_batches == 0:
            raise PoseDataError(f"PoseLoader: {self.num_samples} poses per rank do not fill one batch of {B} "
                                f"with drop_last=True")
        if normalization == "fixed":
            if fixed_scale is None:
                fixed_scale = 1.0 / (self.c * max(poseset.head_root_distance(self.root, self.head), self.eps))
            if not (np.isfinite(fixed_scale) and fixed_scale > 0):
                raise PoseDataError(f"PoseLoader: fixed_scale must be a positive number, got {fixed_scale}")
        self.fixed_scale = None if fixed_scale is None else float(fixed_scale)
        self._epoch = 0
        self._batch = 0
        self._cache: tuple[int, np.ndarray] | None = None

    def _sequence_groups(self, usable: np.ndarray | None):
        """(order, start, count): the usable poses sorted by sequence (or subject, ``partner_key``),
        and for each pose of the set where its group's usable poses begin in ``order`` and how many
        there are (0 for a pose whose group has none: it is its own partner)."""
        seq = np.asarray(self.poses.sequence if self.partner_key == "sequence" else self.poses.subject)
        N = len(seq)
        cand = np.arange(N) if usable is None else np.flatnonzero(usable)
        order = cand[np.argsort(seq[cand], kind="stable")].astype(np.int64)
        keys, first, counts = np.unique(seq[order], return_index=True, return_counts=True)
        start, count = np.zeros(N, np.int64), np.zeros(N, np.int64)
        if len(keys):
            pos = np.clip(np.searchsorted(keys, seq), 0, len(keys) - 1)
            hit = keys[pos] == seq
            start[hit], count[hit] = first[pos[hit]], counts[pos[hit]]
        return order, start, count

    def partners(self, idx: np.ndarray, epoch: int, batch: int, k: int = 1) -> np.ndarray:
        """(k * len(idx),) int64, partner-major: for each pose of ``idx``, k uniformly random usable
        poses of the same sequence (possibly itself), drawn from a stream fixed by (seed, epoch,
        batch, rank) so that a resumed run draws the same partners."""
        order, start, count = self._partner_groups
        idx = np.tile(np.asarray(idx, dtype=np.int64), int(k))
        rng = np.random.default_rng([self.seed, int(epoch), int(batch), self.rank, 0x5E9])
        n = count[idx]
        if not len(order):
            return idx.copy()
        pick = order[np.minimum(start[idx] + (rng.random(len(idx)) * n).astype(np.int64), len(order) - 1)]
        return np.where(n > 0, pick, idx)

    def _maybe_copy(self, in_memory, limit) -> bool:
        p = self.poses
        names = ["keypoints_2d", "confidence"] + (["keypoints_3d"] if self.with_3d and p.keypoints_3d is not None else [])
        mapped = [n for n in names if isinstance(getattr(p, n).base, np.memmap)]
        if not mapped or in_memory is False:
            return False
        if in_memory is None:
            if limit is None:
                try:
                    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
                except (ValueError, OSError, AttributeError):
                    limit = 2 << 30
            if sum(getattr(p, n).nbytes for n in mapped) > limit:
                return False
        # a shallow copy of the PoseSet whose batch arrays live in RAM (the caller's set is untouched;
        # copy.copy does not re-run the validation)
        q = copy.copy(p)
        for n in mapped:
            setattr(q, n, _read_into_memory(getattr(p, n)))
        self.poses = q
        return True

    def _root_head_ok(self) -> np.ndarray:
        conf = self.poses.confidence
        N = len(self.poses)
        out = np.empty(N, dtype=bool)
        step = 1 << 20
        for s in range(0, N, step):
            cc = conf[s:s + step]
            out[s:s + step] = (cc[:, self.root] > 0) & (cc[:, self.head] > 0)
        return out

    # ------------------------------------------------------------------ position
    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return self.num_batches

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, index of the next batch within the epoch)."""
        return self._epoch, self._batch

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch at the next iteration."""
        if int(epoch) < 0:
            raise PoseDataError(f"PoseLoader.set_epoch: epoch must be >= 0, got {epoch}")
        self._epoch, self._batch = int(epoch), 0

    def state_dict(self) -> dict:
        """The position plus the settings that must match for an exact resume."""
        sd = {k: getattr(self, k) for k in _STATE_KEYS}
        sd.update(epoch=self._epoch, batch=self._batch)
        return sd

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state``'s position; PoseDataError if the settings differ (not exact)."""
        missing = [k for k in ("epoch", "batch") if k not in state]
        if missing:
            raise PoseDataError(f"PoseLoader.load_state_dict: state has no {', '.join(missing)}")
        for k in _STATE_KEYS:
            if k in state and state[k] != getattr(self, k):
                raise PoseDataError(f"PoseLoader.load_state_dict: {k} was {state[k]!r} when the state was saved "
                                    f"and is {getattr(self, k)!r} now; resuming would not be exact")
        e, b = int(state["epoch"]), int(state["batch"])
        if e < 0 or not 0 <= b <= self.num_batches:
            raise PoseDataError(f"PoseLoader.load_state_dict: bad position epoch={e}, batch={b}")
        self._epoch, self._batch = e, b

    # ------------------------------------------------------------------ order
    def epoch_indices(self, epoch: int) -> np.ndarray:
        """(num_batches * batch_size or fewer,) int64 PoseSet indices this rank visits in ``epoch``."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        n, W = self.num_eligible, self.world_size
        if self.shuffle:
            order = np.random.default_rng([self.seed, int(epoch)]).permutation(n)
        else:
            order = np.arange(n, dtype=np.int64)
        total = self.num_samples * W
        if total > n:  # pad by wrapping around, as DistributedSampler does
            reps = -(-total // n)
            order = np.tile(order, reps)[:total]
        else:
            order = order[:total]
        mine = order[self.rank:total:W]
        if self.drop_last:
            mine = mine[: self.num_batches * self.batch_size]
        idx = mine if self._eligible is None else self._eligible[mine]
        idx = idx.astype(np.int64, copy=False)
        self._cache = (int(epoch), idx)
        return idx

    # ------------------------------------------------------------------ batches
    @staticmethod
    def _tensor(a: np.ndarray, dtype=None) -> torch.Tensor:
        a = np.ascontiguousarray(a, dtype=dtype)
        if not a.flags.writeable:  # a view of a read-only memory map: torch wants writable memory
            a = a.copy()
        return torch.from_numpy(a)

    def _normalize(self, k2: np.ndarray):
        x = self._tensor(k2, np.float32).to(self.device, non_blocking=True)
        scale = None if self.normalization == "per_sample" else self.fixed_scale
        return normalize_2d_torch(x, root=self.root, head=self.head, c=self.c, eps=self.eps, scale=scale)

    def make_batch(self, idx: np.ndarray, partners: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """The batch for PoseSet indices ``idx`` (any order; used as given); with ``partners`` (K
        PoseSet indices per pose, partner-major) also ``keypoints_2d_partner`` and
        ``confidence_partner``."""
        p = self.poses
        dev = self.device
        idx = np.asarray(idx, dtype=np.int64)
        take = lambda a, i: np.take(a, i, axis=0)  # noqa: E731 - faster than a[i] on large arrays
        x, s = self._normalize(take(p.keypoints_2d, idx))
        batch = {
            "keypoints_2d": x,
            "scale": s,
            "confidence": self._tensor(take(p.confidence, idx)).to(dev, non_blocking=True),
            "index": torch.from_numpy(idx.copy()).to(dev, non_blocking=True),
        }
        if p.keypoints_3d is not None and self.with_3d:
            k3 = take(p.keypoints_3d, idx)
            k3 -= k3[:, self.root:self.root + 1]
            batch["keypoints_3d"] = self._tensor(k3, np.float32).to(dev, non_blocking=True)
        if self._prev is not None:
            pidx = self._prev[idx]
            xp, sp = self._normalize(take(p.keypoints_2d, pidx))
            batch["keypoints_2d_prev"] = xp
            batch["scale_prev"] = sp
            batch["confidence_prev"] = self._tensor(take(p.confidence, pidx)).to(dev, non_blocking=True)
        if partners is not None:
            partners = np.asarray(partners, dtype=np.int64)
            batch["keypoints_2d_partner"], _ = self._normalize(take(p.keypoints_2d, partners))
            batch["confidence_partner"] = self._tensor(take(p.confidence, partners)).to(dev, non_blocking=True)
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self._batch >= self.num_batches:
            self._epoch, self._batch = self._epoch + 1, 0
        epoch = self._epoch
        order = self.epoch_indices(epoch)
        B = self.batch_size
        while self._batch < self.num_batches:
            b = self._batch
            idx = np.sort(order[b * B:(b + 1) * B])
            self._batch = b + 1
            part = self.partners(idx, epoch, b, self.sequence_partners) if self.sequence_partners else None
            yield self.make_batch(idx, part)
        self._epoch, self._batch = epoch + 1, 0
