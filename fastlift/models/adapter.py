"""2D domain adapter A (method.md, "2D domain adapter A"): source-layout 2D poses -> target layout.

``A(x) = M x + r(x)``: ``M`` (J_dst x J_src) is the fixed linear layout map (identity rows for joints
both layouts share, affine synthesis rules for the others; build it with
:func:`fastlift.data.layouts.index_map` or by hand), and ``r`` a residual MLP initialised near
zero, so that an untrained adapter is the plain layout conversion. Its adversarial training
recipe (unpaired, against a target-domain 2D discriminator, with a shared-joint regulariser) is
:meth:`shared_joint_penalty` plus a :class:`~fastlift.models.PoseDiscriminator`.
"""
from __future__ import annotations

import torch
from torch import nn

from fastlift.models.mlp import ResidualMLP

__all__ = ["DomainAdapter"]


class DomainAdapter(nn.Module):
    """Maps normalised 2D poses (B, J_src, 2) to (B, J_dst, 2).

    Args:
        src_joints, dst_joints: J_src, J_dst.
        base_map: (J_dst, J_src) linear layout map ``M``; identity when None (needs J_src == J_dst).
        shared: (K, 2) pairs ``(dst_index, src_index)`` of joints both layouts share.
        width, blocks, batch_norm, dropout: see :class:`ResidualMLP`.
        out_init_scale: initial scale of the residual head (near zero: start at ``M x``).
    """

    def __init__(self, src_joints: int, dst_joints: int, base_map: torch.Tensor | None = None, shared=None,
                 width: int = 512, blocks: int = 2, batch_norm: bool = False, dropout: float = 0.0,
                 out_init_scale: float = 0.01):
        super().__init__()
        if base_map is None:
            if src_joints != dst_joints:
                raise ValueError("DomainAdapter: base_map is required when the layouts differ in size")
            base_map = torch.eye(src_joints)
        base_map = torch.as_tensor(base_map, dtype=torch.float32)
        if tuple(base_map.shape) != (dst_joints, src_joints):
            raise ValueError(f"DomainAdapter: base_map must be ({dst_joints}, {src_joints}), got {tuple(base_map.shape)}")
        self.src_joints, self.dst_joints = src_joints, dst_joints
        self.register_buffer("base_map", base_map)
        if shared is None:
            shared = [(d, s) for d in range(dst_joints) for s in range(src_joints)
                      if base_map[d, s] == 1 and base_map[d].abs().sum() == 1]
        shared = torch.as_tensor(shared, dtype=torch.long).reshape(-1, 2)
        self.register_buffer("shared", shared)
        self.residual = ResidualMLP(2 * src_joints, 2 * dst_joints, width, blocks, batch_norm, dropout,
                                    out_init_scale=out_init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = torch.einsum("ds,bsk->bdk", self.base_map, x)
        return base + self.residual(x.reshape(x.shape[0], -1) * 10.0).reshape(x.shape[0], self.dst_joints, 2) / 10.0

    def shared_joint_penalty(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared displacement of the shared joints between source ``x`` and adapted ``y``."""
        if self.shared.numel() == 0:
            return y.sum() * 0
        d, s = self.shared[:, 0], self.shared[:, 1]
        return ((y[:, d] - x[:, s]) ** 2).mean()
