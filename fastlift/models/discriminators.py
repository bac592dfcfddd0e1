"""2D pose discriminator D and temporal discriminator D_T (method.md, "Discriminators").

Both are residual MLPs without batch norm (ref) that return one logit per pose. Inputs are
normalised 2D poses (B, J, 2). Optional *kinematic features* append, to the raw coordinates, every
bone vector and the signed cross and dot products of each bone with the hip line and the shoulder
line: products an MLP of ReLUs approximates poorly and that carry the pose's chirality (which side
the knees bend to and the nose points to relative to the left-right axis), the cue that tells a
pose from its depth-mirrored twin.
"""
from __future__ import annotations

import torch
from torch import nn

from fastlift.models.mlp import ResidualMLP

__all__ = ["PoseDiscriminator", "TemporalDiscriminator", "KinematicFeatures"]


class KinematicFeatures(nn.Module):
    """Bone vectors and signed products of bones, for 2D poses (B, J, 2).

    Features: every bone vector (child - parent); for every bone and every reference axis the
    cross and dot products (the bone's direction relative to the hips / shoulders / spine); for
    every bone and its parent bone the cross and dot products (the signed bend of each joint:
    which way a knee or elbow bends relative to the torso's facing is what tells a pose from its
    mirror image). Products are scaled by ``scale**2`` so that a normalised pose (head-root
    distance 1/c) gives features of order 1.

    Args:
        parents: (J,) parent index per joint, -1 for the root.
        axes: pairs ``(a, b)`` of joint indices; each defines the axis ``x_b - x_a`` (e.g. right
            hip -> left hip, right shoulder -> left shoulder, pelvis -> thorax).
        scale: input scale (10 for c = 10).
    """

    def __init__(self, parents, axes, scale: float = 10.0):
        super().__init__()
        child = [j for j, p in enumerate(parents) if p >= 0]
        parent = [parents[j] for j in child]
        bone_of = {c: i for i, c in enumerate(child)}          # bone index ending at joint c
        pairs = [(i, bone_of[parent[i]]) for i in range(len(child)) if parent[i] in bone_of]
        self.register_buffer("child", torch.tensor(child, dtype=torch.long), persistent=False)
        self.register_buffer("parent", torch.tensor(parent, dtype=torch.long), persistent=False)
        self.register_buffer("axis_a", torch.tensor([a for a, _ in axes], dtype=torch.long), persistent=False)
        self.register_buffer("axis_b", torch.tensor([b for _, b in axes], dtype=torch.long), persistent=False)
        self.register_buffer("pair_c", torch.tensor([a for a, _ in pairs], dtype=torch.long), persistent=False)
        self.register_buffer("pair_p", torch.tensor([b for _, b in pairs], dtype=torch.long), persistent=False)
        self.num_bones, self.num_axes, self.num_pairs = len(child), len(axes), len(pairs)
        self.scale = float(scale)

    @property
    def dim(self) -> int:
        return 2 * self.num_bones + 2 * self.num_bones * self.num_axes + 2 * self.num_pairs

    @staticmethod
    def _cross_dot(a, b):
        return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0], (a * b).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale
        bones = x[:, self.child] - x[:, self.parent]                       # (B, nb, 2)
        axes = x[:, self.axis_b] - x[:, self.axis_a]                       # (B, na, 2)
        cross, dot = self._cross_dot(bones[:, :, None, :], axes[:, None, :, :])   # (B, nb, na)
        jc, jd = self._cross_dot(bones[:, self.pair_c], bones[:, self.pair_p])  # (B, np)
        return torch.cat([bones.flatten(1), cross.flatten(1), dot.flatten(1), jc, jd], dim=1)


class PoseDiscriminator(nn.Module):
    """Judges single normalised 2D poses; returns logits (B,).

    Args:
        num_joints: J.
        width, blocks, batch_norm, dropout, activation, spectral_norm: see :class:`ResidualMLP`
            (ref: 3 blocks, no BN).
        kinematic: append :class:`KinematicFeatures` (needs ``parents`` and ``axes``).
    """

    def __init__(self, num_joints: int = 17, width: int = 1024, blocks: int = 3, batch_norm: bool = False,
                 dropout: float = 0.0, activation: str = "leaky_relu", spectral_norm: bool = False,
                 kinematic: bool = False, parents=None, axes=None, input_scale: float = 10.0):
        super().__init__()
        self.num_joints, self.input_scale = num_joints, float(input_scale)
        self.kin = KinematicFeatures(parents, axes) if kinematic else None
        in_dim = 2 * num_joints + (self.kin.dim if self.kin is not None else 0)
        self.net = ResidualMLP(in_dim, 1, width, blocks, batch_norm, dropout, activation, spectral_norm)

    def inputs(self, x2d: torch.Tensor) -> torch.Tensor:
        h = x2d.reshape(x2d.shape[0], -1) * self.input_scale
        if self.kin is not None:
            h = torch.cat([h, self.kin(x2d)], dim=1)
        return h

    def forward(self, x2d: torch.Tensor) -> torch.Tensor:
        return self.net(self.inputs(x2d)).squeeze(-1)


class TemporalDiscriminator(nn.Module):
    """Judges the motion between two frames through their difference ``x_t - x_{t-k}``.

    With ``with_pose=True`` the current pose ``x_t`` is given alongside the difference. Returns
    logits (B,).
    """

    def __init__(self, num_joints: int = 17, width: int = 256, blocks: int = 2, batch_norm: bool = False,
                 dropout: float = 0.0, activation: str = "leaky_relu", spectral_norm: bool = False,
                 with_pose: bool = True, diff_scale: float = 100.0, input_scale: float = 10.0):
        super().__init__()
        self.with_pose, self.diff_scale, self.input_scale = with_pose, float(diff_scale), float(input_scale)
        in_dim = 2 * num_joints * (2 if with_pose else 1)
        self.net = ResidualMLP(in_dim, 1, width, blocks, batch_norm, dropout, activation, spectral_norm)

    def forward(self, x_t: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        diff = (x_t - x_prev).reshape(x_t.shape[0], -1) * self.diff_scale
        h = torch.cat([diff, x_t.reshape(x_t.shape[0], -1) * self.input_scale], 1) if self.with_pose else diff
        return self.net(h).squeeze(-1)
