"""A normalising-flow density of normalised 2D poses: a fixed, non-adversarial pose prior.

The 2D discriminator of the method judges the lifter's re-projections against real 2D poses in a
two-player game that the lifter can lose (method.md, "Known pitfalls"). A density model of the real
2D poses, trained once before the lifter and then frozen, gives the lifter the same kind of signal,
"does this re-projection look like a real 2D pose", as a smooth negative log-likelihood that cannot
win a game. This is a RealNVP (Dinh et al. 2017) with affine couplings over the whitened
root-relative coordinates.

Shapes: poses (B, J, 2) normalised as the lifter's inputs (root at 0, head-root distance 1/c);
the root joint is dropped (always 0), the other 2(J-1) coordinates are centred and whitened by the
training poses' PCA, then mapped through ``layers`` couplings to a standard normal.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PoseFlow"]


class _Coupling(nn.Module):
    """Affine coupling: the coordinates not in ``mask`` are scaled and shifted by functions of
    those in it. The log-scale is bounded (``clamp * tanh``) so that an untrained or extreme input
    cannot blow the density up."""

    def __init__(self, mask: torch.Tensor, width: int, clamp: float = 2.0):
        super().__init__()
        d = mask.numel()
        self.register_buffer("mask", mask.float())
        self.net = nn.Sequential(nn.Linear(d, width), nn.LeakyReLU(0.2), nn.Linear(width, width), nn.LeakyReLU(0.2),
                                 nn.Linear(width, 2 * d))
        nn.init.zeros_(self.net[-1].weight)   # starts as the identity map
        nn.init.zeros_(self.net[-1].bias)
        self.clamp = float(clamp)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.mask
        s, t = self.net(z * m).chunk(2, dim=-1)
        s = self.clamp * torch.tanh(s / self.clamp) * (1 - m)
        z = z * m + (1 - m) * (z * torch.exp(s) + t)
        return z, s.sum(-1)


class PoseFlow(nn.Module):
    """Density of normalised 2D poses (B, J, 2); :meth:`nll` is the per-pose negative
    log-likelihood in nats per coordinate (of the whitened coordinates: a constant offset from the
    raw ones, so only differences matter).

    Args:
        num_joints: J.
        root: index of the root joint (dropped: always 0).
        width: hidden width of each coupling's MLP.
        layers: affine couplings (alternating random halves).
        seed: seed of the coupling masks (fixed, so a checkpoint rebuilds the same flow).
    """

    def __init__(self, num_joints: int = 17, root: int = 0, width: int = 128, layers: int = 6, seed: int = 0):
        super().__init__()
        if layers < 2 or width < 1:
            raise ValueError(f"PoseFlow needs layers >= 2 and width >= 1, got layers={layers}, width={width}")
        self.num_joints, self.root = int(num_joints), int(root)
        keep = [j for j in range(num_joints) if j != root]
        self.register_buffer("keep", torch.tensor(keep, dtype=torch.long), persistent=False)
        d = 2 * len(keep)
        self.dim = d
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("whiten", torch.eye(d))      # z = (x - mean) @ whiten
        self.register_buffer("log_det_whiten", torch.zeros(()))
        self.register_buffer("trained", torch.zeros((), dtype=torch.bool))   # set by the training, saved with it
        g = torch.Generator().manual_seed(seed)
        couplings = []
        for i in range(layers):
            if i % 2 == 0:
                perm = torch.randperm(d, generator=g)
                mask = torch.zeros(d)
                mask[perm[: d // 2]] = 1
            else:
                mask = 1 - couplings[-1].mask
            couplings.append(_Coupling(mask, width))
        self.couplings = nn.ModuleList(couplings)

    @torch.no_grad()
    def fit_whitening(self, x2d: torch.Tensor, eps: float = 1e-4) -> None:
        """Centre and whiten by the PCA of the poses ``x2d`` (N, J, 2); eigenvalues below ``eps``
        times the largest are floored (the head-root normalisation removes about one degree of
        freedom)."""
        v = self._flat(x2d).double()
        mean = v.mean(0)
        cov = torch.cov((v - mean).T)
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(eps * float(evals.max()))
        w = evecs / evals.sqrt()
        self.mean.copy_(mean)
        self.whiten.copy_(w)
        self.log_det_whiten.copy_(-0.5 * evals.log().sum())

    def _flat(self, x2d: torch.Tensor) -> torch.Tensor:
        if x2d.dim() != 3 or x2d.shape[1] != self.num_joints or x2d.shape[2] != 2:
            raise ValueError(f"PoseFlow expects poses (B, {self.num_joints}, 2), got {tuple(x2d.shape)}")
        return x2d[:, self.keep].reshape(x2d.shape[0], -1)

    def forward(self, x2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent ``z`` (B, D) and ``log|det dz/dx|`` (B,)."""
        z = (self._flat(x2d).to(self.mean.dtype) - self.mean) @ self.whiten
        log_det = self.log_det_whiten.expand(z.shape[0])
        for c in self.couplings:
            z, ld = c(z)
            log_det = log_det + ld
        return z, log_det

    def nll(self, x2d: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per pose (B,), nats per coordinate."""
        z, log_det = self(x2d)
        log_p = -0.5 * (z * z).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi) + log_det
        return -log_p / self.dim
