"""Residual MLP building block shared by the lifter, the discriminators and the domain adapter.

Martinez et al. (2017) style: ``Linear(in -> width), [BN], act, [Dropout]``, then ``blocks``
residual blocks of ``2 x [Linear(width -> width), [BN], act, [Dropout]]`` with an identity skip,
then ``Linear(width -> out)``.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualMLP", "make_activation", "FastDropout"]


class FastDropout(nn.Module):
    """Inverted dropout with the mask drawn as ``rand >= p`` (uniform floats from torch's global
    generator, so it is seeded, saved and resumed like ``nn.Dropout``). Same semantics as
    ``nn.Dropout``; on the CPU several times faster, because ``nn.Dropout`` draws its mask with
    ``bernoulli_``, whose per-element sampling dominates the dropout cost there."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"FastDropout: p must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def make_activation(name: str) -> nn.Module:
    """``relu`` | ``leaky_relu`` (slope 0.2) | ``gelu`` | ``silu``."""
    name = name.lower()
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name in ("leaky_relu", "lrelu"):
        return nn.LeakyReLU(0.2, inplace=True)
    if name == "gelu":
        return nn.GELU()
    if name in ("silu", "swish"):
        return nn.SiLU(inplace=True)
    raise ValueError(f"unknown activation {name!r}; choose relu, leaky_relu, gelu or silu")


def _linear(i: int, o: int, spectral_norm: bool) -> nn.Module:
    lin = nn.Linear(i, o)
    if spectral_norm:
        lin = nn.utils.parametrizations.spectral_norm(lin)
    return lin


def _unit(width: int, batch_norm: bool, dropout: float, activation: str, spectral_norm: bool,
          in_dim: int | None = None) -> list[nn.Module]:
    layers: list[nn.Module] = [_linear(in_dim or width, width, spectral_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(width))
    layers.append(make_activation(activation))
    if dropout > 0:
        layers.append(FastDropout(dropout))
    return layers


class _Block(nn.Module):
    def __init__(self, width, batch_norm, dropout, activation, spectral_norm):
        super().__init__()
        self.body = nn.Sequential(*_unit(width, batch_norm, dropout, activation, spectral_norm),
                                  *_unit(width, batch_norm, dropout, activation, spectral_norm))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h)


class ResidualMLP(nn.Module):
    """Residual MLP ``in_dim -> width -> blocks x residual(2 layers) -> out_dim``.

    Args:
        in_dim, out_dim: input and output features.
        width: hidden width (paper: 1024).
        blocks: residual blocks of two layers each (paper lifter: 4, discriminator: 3).
        batch_norm: BatchNorm1d after every hidden Linear (paper lifter: yes, discriminator: no).
        dropout: dropout probability after every hidden activation (paper: 0.5; 0 disables it).
        activation: hidden activation, see :func:`make_activation`.
        spectral_norm: spectral normalisation on every Linear (a discriminator regulariser).
        out_init_scale: the output layer's weight is multiplied by this at initialisation and its
            bias zeroed when it is not 1 (0.01 gives the near-flat start of method.md's pitfalls).
    """

    def __init__(self, in_dim: int, out_dim: int, width: int = 1024, blocks: int = 4,
                 batch_norm: bool = True, dropout: float = 0.0, activation: str = "relu",
                 spectral_norm: bool = False, out_init_scale: float = 1.0):
        super().__init__()
        if width < 1 or blocks < 0:
            raise ValueError(f"ResidualMLP: width must be >= 1 and blocks >= 0, got {width}, {blocks}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ResidualMLP: dropout must be in [0, 1), got {dropout}")
        self.in_dim, self.out_dim, self.width, self.num_blocks = in_dim, out_dim, width, blocks
        self.stem = nn.Sequential(*_unit(width, batch_norm, dropout, activation, spectral_norm, in_dim=in_dim))
        self.blocks = nn.Sequential(*[_Block(width, batch_norm, dropout, activation, spectral_norm)
                                      for _ in range(blocks)])
        self.head = nn.Linear(width, out_dim)
        if out_init_scale != 1.0:
            with torch.no_grad():
                self.head.weight.mul_(out_init_scale)
                self.head.bias.zero_()
        if spectral_norm:
            self.head = nn.utils.parametrizations.spectral_norm(self.head)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer (B, width)."""
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))
