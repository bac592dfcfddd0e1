"""2D pose normalisation (method.md, "Coordinates and normalisation").

Subtract the root joint, then scale so that the head-root distance is ``1 / c`` (c = 10)::

    d = |x_head - x_root|,   scale = 1 / (c * max(d, eps)),   y_j = (x_j - x_root) * scale

*Per-sample* (default): every pose gets its own scale. *Fixed*: one dataset constant,
``scale = 1 / (c * mean_d)``, where ``mean_d`` is the mean head-root distance of a reference set
(:meth:`PoseSet.head_root_distance`); only the root is subtracted per pose.

The torch path uses the fused op :func:`fastlift.ops.normalize_2d` when it can be imported and an
identical torch expression otherwise.
"""
from __future__ import annotations

import numpy as np
import torch

from fastlift.data.errors import PoseDataError
from fastlift.data.layouts import HEAD, ROOT

__all__ = ["normalize_2d_np", "normalize_2d_torch", "DEFAULT_C", "DEFAULT_EPS"]

DEFAULT_C = 10.0
DEFAULT_EPS = 1e-6

try:  # the lead's fused op; optional so the data layer works without it
    from fastlift.ops import normalize_2d as _fused_normalize_2d
except Exception:  # noqa: BLE001 - any import failure means "use the torch expression"
    _fused_normalize_2d = None


def _check(shape, root, head, c):
    if len(shape) != 3 or shape[-1] != 2:
        raise PoseDataError(f"normalize_2d: keypoints must have shape (N, J, 2), got {tuple(shape)}")
    J = shape[1]
    if not (0 <= root < J and 0 <= head < J) or root == head:
        raise PoseDataError(f"normalize_2d: root={root} and head={head} must be distinct joints in [0, {J})")
    if not c > 0:
        raise PoseDataError(f"normalize_2d: c must be positive, got {c}")


def normalize_2d_np(keypoints: np.ndarray, root: int = ROOT, head: int = HEAD, c: float = DEFAULT_C,
                    eps: float = DEFAULT_EPS, scale: float | np.ndarray | None = None,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Numpy normalisation, float32.

    Args:
        keypoints: (N, J, 2) 2D joints (pixels).
        root, head: joint indices (h36m17: 0 pelvis, 10 head).
        c: the head-root distance becomes 1/c.
        eps: floor of the head-root distance (pixels).
        scale: None for per-sample scaling, or a fixed scale (scalar or (N,)) in 1/pixels.

    Returns:
        ``(normalized (N, J, 2) float32, scale (N,) float32)``.
    """
    x = np.asarray(keypoints, dtype=np.float32)
    _check(x.shape, root, head, c)
    r = x[:, root:root + 1, :]
    if scale is None:
        d = np.sqrt(np.sum(np.square(x[:, head, :] - x[:, root, :]), axis=-1))
        s = (np.float32(1.0) / (np.float32(c) * np.maximum(d, np.float32(eps)))).astype(np.float32)
    else:
        s = np.broadcast_to(np.asarray(scale, dtype=np.float32), (x.shape[0],)).copy()
    return (x - r) * s[:, None, None], s


def normalize_2d_torch(keypoints: torch.Tensor, root: int = ROOT, head: int = HEAD, c: float = DEFAULT_C,
                       eps: float = DEFAULT_EPS, scale: float | torch.Tensor | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch normalisation; same contract as :func:`normalize_2d_np`, returns tensors.

    Per-sample scaling calls ``fastlift.ops.normalize_2d`` when available (the fused op), else the
    reference expression ``(x - x_root) * 1 / (c * clamp(|x_head - x_root|, eps))``.
    """
    _check(tuple(keypoints.shape), root, head, c)
    if scale is None:
        if _fused_normalize_2d is not None:
            return _fused_normalize_2d(keypoints, root=root, head=head, c=float(c), eps=float(eps))
        r = keypoints[:, root:root + 1, :]
        d = (keypoints[:, head, :] - keypoints[:, root, :]).norm(dim=-1)
        s = 1.0 / (c * d.clamp_min(eps))
        return (keypoints - r) * s[:, None, None], s
    s = torch.as_tensor(scale, dtype=keypoints.dtype, device=keypoints.device)
    s = s.expand(keypoints.shape[0]) if s.dim() == 0 else s
    return (keypoints - keypoints[:, root:root + 1, :]) * s[:, None, None], s
