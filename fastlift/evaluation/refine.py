"""One skeleton per person: refine lifted bone lengths with the other frames of the same person.

A lifter sees one frame at a time, so its bone lengths wander from frame to frame (by 3-9 % of a
bone on the synthetic test split), while the person's skeleton does not change. Where the frames
of one person are known (a subject name, or a sequence of one camera), each bone's length can be
taken from all of them: :func:`refine_bone_lengths` gives every pose of a group the group's median
bone proportions, at the pose's own scale, and moves each joint along its camera ray to that
distance from its (refined) parent, on the side of the parent the lift chose. The 2D projection
of every joint is therefore unchanged; only the depths move, and the sign of each bone's depth
(which way it points, the lifter's choice) is kept.

On the embedded synthetic test split (20 000 poses, 4 subjects) this takes the lifts of the default
recipe of 2026-12-07 (seeds 0-2) from 34.4-35.6 mm P-MPJPE to 30.1-30.9 mm per subject, and the supervised
lifter's from 25.7-26.0 to 23.2-23.7 mm: see docs/evaluation.md, "Refining bone lengths per
person".
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["refine_bone_lengths", "refine_groups", "REFINE_CHOICES"]

#: Values of the ``--refine-bones`` options: ``auto`` = ``subject`` when the data names subjects,
#: else ``sequence`` when it has sequences, else nothing to refine.
REFINE_CHOICES = ("auto", "subject", "sequence", "none")


def refine_groups(poses, how: str = "auto") -> tuple[np.ndarray | None, str]:
    """The person label of each pose of a :class:`fastlift.data.PoseSet` for
    :func:`refine_bone_lengths`, and a description. ``how``: ``subject`` (the subject names: they
    must name persons), ``sequence`` (one sequence is one person), ``auto`` (subject when the set
    names subjects, else sequence when it has sequences of more than one pose), ``none``.
    Returns ``(None, reason)`` when there is nothing to group by."""
    if how not in REFINE_CHOICES:
        raise ValueError(f"refine_bones: {how!r} is not one of {', '.join(REFINE_CHOICES)}")
    if how == "none":
        return None, "off"
    subject = getattr(poses, "subject", None)
    seq = getattr(poses, "sequence", None)
    has_seq = seq is not None and len(seq) > 0 and len(np.unique(np.asarray(seq))) < len(seq)
    if how in ("auto", "subject") and subject is not None:
        return np.asarray(subject), "per subject"
    if how == "subject":
        return None, "the data names no subjects"
    if has_seq:
        return np.asarray(seq), "per sequence"
    return None, "the data has no sequences (every pose its own)"


def _topological_bones(parents) -> list[tuple[int, int]]:
    """(child, parent) pairs, every parent's own bone before its children's."""
    depth = []
    for j in range(len(parents)):
        d, p = 0, parents[j]
        while p >= 0:
            d, p = d + 1, parents[p]
            if d > len(parents):
                raise ValueError("parents: the skeleton has a cycle")
        depth.append(d)
    return [(j, parents[j]) for j in sorted(range(len(parents)), key=lambda j: depth[j]) if parents[j] >= 0]


def refine_bone_lengths(Y: torch.Tensor, groups, parents, valid: torch.Tensor | None = None,
                        min_group: int = 10, softness: float = 0.35) -> torch.Tensor:
    """Give the lifts of each person one set of bone proportions, moving only the depths.

    Args:
        Y: (N, J, 3) lifted poses in the camera frame (x right, y down, z forward; the camera at
            the origin, every joint at z > 0), e.g. a lifter's output before root-centring. Each
            joint's ray is the line from the origin through it.
        groups: (N,) person label of each pose (subject names, sequence ids; any hashable values).
        parents: (J,) parent index of each joint, -1 for the root.
        valid: optional (N, J) bool, joints present. Bones with a missing end neither count in the
            group's proportions nor move.
        min_group: groups with fewer poses (bones with fewer valid poses in the group) are left as
            they are.
        softness: how much a bone near the image plane keeps of its lifted depth (below).

    Per pose, each bone's length over the geometric mean of the pose's bone lengths (log length
    minus the pose's mean log length, over its valid bones) is replaced by its median over the
    pose's group; the pose's scale is the least-squares fit of those proportions to its own
    lengths. Then, from the root out, each joint moves along its ray to that length from its
    (already refined) parent: of the two such points, to the one whose depth offset from the parent
    is nearer the lift's (the bone keeps its depth direction); where the ray never comes that
    close, to the ray's closest point to the parent. A bone whose depth offset ``h`` at that length
    is small against the length ``L`` moves only part of the way, by the weight
    ``h^2 / (h^2 + (softness L)^2)``, from the depth offset the lift gave it: its refined depth is
    the square root of the small difference ``L^2 - l^2`` (``l`` its length in the image plane)
    and would turn small errors of the length or of the 2D into large ones of the depth. The root
    does not move.

    Returns the refined poses (N, J, 3), a new tensor of ``Y``'s dtype; each joint's projection
    ``(x / z, y / z)`` is that of ``Y``.
    """
    if Y.dim() != 3 or Y.shape[-1] != 3:
        raise ValueError(f"refine_bone_lengths: Y must have shape (N, J, 3), got {tuple(Y.shape)}")
    N, J = Y.shape[:2]
    if len(parents) != J:
        raise ValueError(f"refine_bone_lengths: parents has {len(parents)} joints, Y has {J}")
    labels = np.asarray(groups)
    if labels.shape != (N,):
        raise ValueError(f"refine_bone_lengths: groups must have shape ({N},), got {labels.shape}")
    if valid is not None and tuple(valid.shape) != (N, J):
        raise ValueError(f"refine_bone_lengths: valid must have shape ({N}, {J}), got {tuple(valid.shape)}")
    if N and not bool(torch.isfinite(Y).all()):
        raise ValueError("refine_bone_lengths: Y holds NaN or inf (leave out the poses that could not be lifted)")
    if N and not bool((Y[..., 2] > 0).all()):
        raise ValueError("refine_bone_lengths: Y must be in the camera frame with every joint in front of the camera "
                         "(z > 0); root-centred poses have lost their rays")
    bones = _topological_bones(list(parents))
    if N == 0 or not bones:
        return Y.clone()
    P = Y.double()
    child = torch.tensor([c for c, _ in bones], device=Y.device)
    parent = torch.tensor([p for _, p in bones], device=Y.device)
    ok = torch.ones(N, len(bones), dtype=torch.bool, device=Y.device) if valid is None \
        else (valid[:, child] & valid[:, parent]).to(Y.device)
    length = (P[:, child] - P[:, parent]).norm(dim=-1)
    ok &= length > 0
    log_len = torch.where(ok, length.clamp_min(1e-300).log(), torch.zeros_like(length))
    n_ok = ok.sum(1, keepdim=True)
    rel = torch.where(ok, log_len - log_len.sum(1, keepdim=True) / n_ok.clamp_min(1), torch.full_like(length, float("nan")))

    target = torch.full_like(rel, float("nan"))
    _, inverse = np.unique(labels, return_inverse=True)
    inverse = torch.as_tensor(inverse.reshape(-1), device=Y.device)
    for g in range(int(inverse.max()) + 1):
        rows = torch.nonzero(inverse == g)[:, 0]
        if rows.numel() < min_group:
            continue
        r = rel[rows]
        med = torch.nanmedian(r, dim=0).values
        enough = (~torch.isnan(r)).sum(0) >= min_group
        target[rows] = torch.where(enough, med, torch.full_like(med, float("nan")))[None]
    use = ok & ~torch.isnan(target)
    prop = torch.where(use, target, torch.zeros_like(target)).exp() * use
    scale = (prop * length).sum(1) / (prop * prop).sum(1).clamp_min(1e-300)
    goal = prop * scale[:, None]

    out = P.clone()
    rays = P / P[..., 2:3]                                   # (x / z, y / z, 1): z along the ray
    for b, (c, p) in enumerate(bones):
        m = use[:, b]
        if not bool(m.any()):
            continue
        r, q = rays[:, c], out[:, p]
        a = (r * r).sum(-1)
        foot = (r * q).sum(-1) / a                          # depth of the ray's closest point to q
        half = ((goal[:, b] ** 2 - ((q * q).sum(-1) - a * foot ** 2)) / a).clamp_min(0).sqrt()
        # of the two points at that length, the one whose depth offset from the (refined) parent
        # is nearer the lift's own: the bone keeps its depth direction even where the parent moved
        keep = q[:, 2] + (P[:, c, 2] - P[:, p, 2])
        z = torch.where((foot + half - keep).abs() <= (foot - half - keep).abs(), foot + half, foot - half)
        if softness > 0:
            w = half.square() / (half.square() + (softness * goal[:, b]).square()).clamp_min(1e-300)
            w = torch.where(half > 0, w, torch.ones_like(w))     # unreachable: the closest point
            z = w * z + (1 - w) * keep
        move = m & (z > 0)
        out[:, c] = torch.where(move[:, None], r * z[:, None], out[:, c])
    return out.to(Y.dtype)
