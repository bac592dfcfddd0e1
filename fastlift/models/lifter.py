"""The lifter G: a residual MLP that predicts one depth offset per joint from a normalised 2D pose.

``Y = lift(x, G(x))`` with ``z_j = floor(c + d_j)`` and ``Y_j = (x_j z_j, y_j z_j, z_j)``
(method.md, "Lifter G"): the lifted pose always re-projects exactly onto its input.
"""
from __future__ import annotations

import torch
from torch import nn

from fastlift.models.mlp import ResidualMLP

__all__ = ["Lifter"]


class Lifter(nn.Module):
    """Residual-MLP lifter (Martinez et al. style).

    Args:
        num_joints: J.
        width, blocks, batch_norm, dropout, activation: see :class:`ResidualMLP`
            (paper: 1024, 4, True, 0.5).
        out_init_scale: initial scale of the depth head (0.01 with zero bias: a near-flat start;
            method.md's first pitfall). 1.0 keeps PyTorch's default initialisation.
        c: the method's depth constant (root depth of a lifted pose), default 10.
        depth_floor: ``"soft"`` (``min_depth + softplus(c + d)``) or ``"hard"``
            (``max(0, c + d) + min_depth``, the paper's formula).
        min_depth: the depth floor (1 in the paper).

    Buffers ``in_mean``/``in_std`` (2J,) standardise the flattened input per dimension and
    ``out_mean``/``out_std`` (J,) de-standardise the depth head (identity by default; the supervised
    mode fits them to z-score its targets). Set them with :meth:`set_input_stats` and
    :meth:`set_output_stats`; they are saved in the state dict.
    """

    def __init__(self, num_joints: int = 17, width: int = 1024, blocks: int = 4, batch_norm: bool = True,
                 dropout: float = 0.0, activation: str = "relu", out_init_scale: float = 0.01,
                 c: float = 10.0, depth_floor: str = "soft", min_depth: float = 1.0):
        super().__init__()
        if depth_floor not in ("soft", "hard"):
            raise ValueError(f"Lifter: depth_floor must be 'soft' or 'hard', got {depth_floor!r}")
        self.num_joints, self.c, self.depth_floor, self.min_depth = num_joints, float(c), depth_floor, float(min_depth)
        self.net = ResidualMLP(2 * num_joints, num_joints, width, blocks, batch_norm, dropout, activation,
                               out_init_scale=out_init_scale)
        self.register_buffer("in_mean", torch.zeros(2 * num_joints))
        self.register_buffer("in_std", torch.ones(2 * num_joints))
        self.register_buffer("out_mean", torch.zeros(num_joints))
        self.register_buffer("out_std", torch.ones(num_joints))

    @torch.no_grad()
    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-3) -> None:
        """Per-dimension mean and standard deviation of flattened normalised 2D inputs (2J,)."""
        self.in_mean.copy_(mean.reshape(-1))
        self.in_std.copy_(std.reshape(-1).clamp_min(eps))

    @torch.no_grad()
    def set_output_stats(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-3) -> None:
        """Per-joint mean and standard deviation of depth offsets (J,): the head predicts z-scores."""
        self.out_mean.copy_(mean.reshape(-1))
        self.out_std.copy_(std.reshape(-1).clamp_min(eps))

    def standardized_output(self, x2d: torch.Tensor) -> torch.Tensor:
        """The raw head output (B, J) before de-standardisation (the supervised loss uses it)."""
        h = (x2d.reshape(x2d.shape[0], -1) - self.in_mean) / self.in_std
        return self.net(h)

    def forward(self, x2d: torch.Tensor) -> torch.Tensor:
        """Depth offsets ``d`` (B, J) of normalised 2D poses ``x2d`` (B, J, 2)."""
        return self.standardized_output(x2d) * self.out_std + self.out_mean

    def lift(self, x2d: torch.Tensor) -> torch.Tensor:
        """3D poses (B, J, 3) of normalised 2D poses (B, J, 2): ``(x z, y z, z)``."""
        from fastlift.training.geometry import lift_to_3d
        return lift_to_3d(x2d, self(x2d), c=self.c, floor=self.depth_floor, min_depth=self.min_depth)
