"""GAN losses and the anatomical cues of the training step.

GAN losses take discriminator outputs (logits or critic values, shape (B,)):

* ``bce``: non-saturating binary cross-entropy (Goodfellow et al.): D minimises
  ``softplus(-D(real)) + softplus(D(fake))`` (with one-sided label smoothing, the real target is
  ``1 - s``), G minimises ``softplus(-D(fake))``;
* ``lsgan``: least squares (Mao et al.): D ``(D(real) - (1 - s))^2 + D(fake)^2``, G ``(D(fake) - 1)^2``;
* ``wgan-gp``: Wasserstein critic with gradient penalty (Gulrajani et al.): D ``D(fake) - D(real)
  + gp * (|grad D(mix)| - 1)^2``, G ``-D(fake)``.

All are batch means.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["d_loss", "d_fake_term", "g_loss", "gradient_penalty", "bone_lengths", "bone_symmetry_loss",
           "bone_constancy_loss", "knee_axis_terms", "knee_hinge_loss", "d_accuracy"]


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Discriminator loss (without the gradient penalty) from outputs on real and fake poses."""
    real, fake = real.float(), fake.float()
    t = 1.0 - label_smoothing
    if kind == "bce":
        if label_smoothing:
            lr = F.binary_cross_entropy_with_logits(real, torch.full_like(real, t))
        else:
            lr = F.softplus(-real).mean()
        return lr + F.softplus(fake).mean()
    if kind == "lsgan":
        return ((real - t) ** 2).mean() + (fake ** 2).mean()
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def d_fake_term(kind: str, fake: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The fake half of D's loss alone (for extra negatives); ``weight`` (B,) makes it a weighted
    mean (no host sync, unlike boolean indexing)."""
    fake = fake.float()
    if kind == "bce":
        e = F.softplus(fake)
    elif kind == "lsgan":
        e = fake ** 2
    elif kind == "wgan-gp":
        e = fake
    else:
        raise ValueError(f"unknown GAN loss {kind!r}")
    if weight is None:
        return e.mean()
    w = weight.float()
    return (e * w).sum() / w.sum().clamp_min(1.0)


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator (lifter) adversarial loss from the discriminator's outputs on fake poses."""
    fake = fake.float()
    if kind == "bce":
        return F.softplus(-fake).mean()
    if kind == "lsgan":
        return ((fake - 1.0) ** 2).mean()
    if kind == "wgan-gp":
        return -fake.mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def d_accuracy(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Fraction of the batch D classifies correctly (threshold 0 for bce/wgan, 0.5 for lsgan)."""
    th = 0.5 if kind == "lsgan" else 0.0
    return 0.5 * ((real > th).float().mean() + (fake <= th).float().mean())


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None,
                     *extra_real, extra_fake=()) -> torch.Tensor:
    """``mean((|grad critic(mix)| - 1)^2)`` on random interpolates of real and fake inputs."""
    b = real.shape[0]
    shape = (b,) + (1,) * (real.dim() - 1)
    a = torch.rand(shape, generator=generator, dtype=real.dtype).to(real.device)
    mix = (a * real + (1 - a) * fake).detach().requires_grad_(True)
    inputs = [mix]
    if extra_real:
        mix2 = (a * extra_real[0] + (1 - a) * extra_fake[0]).detach().requires_grad_(True)
        inputs.append(mix2)
    out = critic(*inputs)
    grads = torch.autograd.grad(out.float().sum(), inputs, create_graph=True)
    g = torch.cat([x.reshape(b, -1) for x in grads], 1)
    return ((g.norm(dim=1) - 1) ** 2).mean()


def r1_penalty(out_real: torch.Tensor, real, unit: float = 1.0) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ``mean |d out_real / d (real / unit)|^2``, the squared gradient
    norm of the discriminator's logits at the real inputs, with the inputs measured in ``unit``
    (1/c for normalised poses: the head-root distance is then 1). ``real`` (a tensor, or a tuple of
    them for a discriminator with several inputs) must require grad and ``out_real`` (B,) come
    from it; the graph is kept for D's update."""
    inputs = tuple(real) if isinstance(real, (tuple, list)) else (real,)
    grads = torch.autograd.grad(out_real.float().sum(), inputs, create_graph=True)
    b = out_real.shape[0]
    return sum((g.reshape(b, -1) * unit).square().sum(1) for g in grads).mean()


def bone_lengths(Y: torch.Tensor, child: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """(B, nb) bone lengths of 3D poses (B, J, 3)."""
    return (Y[:, child] - Y[:, parent]).norm(dim=-1)


def bone_symmetry_loss(Y: torch.Tensor, left_child, left_parent, right_child, right_parent) -> torch.Tensor:
    """Mean squared relative difference of mirrored left/right bone lengths (scale-free)."""
    ll = bone_lengths(Y, left_child, left_parent)
    rl = bone_lengths(Y, right_child, right_parent)
    return (((ll - rl) / (ll + rl + 1e-6)) ** 2).mean()


def bone_constancy_loss(Y_t: torch.Tensor, Y_prev: torch.Tensor, child, parent,
                        valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over pose pairs of the squared change of bone proportions between two frames of one
    person: each bone's length over the sum of the pair's bone lengths, so the loss is scale-free.
    ``Y_t``, ``Y_prev``: (B, J, 3); ``child``, ``parent``: (nb,) joint indices of the bones;
    ``valid``: optional (B, J) bool, joints present in both frames: bones with a missing end are
    left out of the proportions and of the loss."""
    a, b = bone_lengths(Y_t, child, parent), bone_lengths(Y_prev, child, parent)
    if valid is not None:
        m = (valid[:, child] & valid[:, parent]).to(a.dtype)
        a, b = a * m, b * m
    sa = a / (a.sum(1, keepdim=True) + 1e-6)
    sb = b / (b.sum(1, keepdim=True) + 1e-6)
    return ((sa - sb) ** 2).sum(1).mean()


def bone_log_ratio_loss(Y_a: torch.Tensor, Y_b: torch.Tensor, child, parent,
                        valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference of log bone lengths between two poses of one person, after removing
    the pair's mean log ratio (their overall scale): scale-free, and a bone off by a given fraction
    costs the same whether it is a shin or a neck. ``Y_a``, ``Y_b``: (B, J, 3); ``child``,
    ``parent``: (nb,) joint indices of the bones; ``valid``: optional (B, J) bool, joints present
    in both poses: bones with a missing end are left out. Mean over the valid bones of each pair,
    then over the pairs."""
    la = bone_lengths(Y_a, child, parent).clamp_min(1e-6).log()
    lb = bone_lengths(Y_b, child, parent).clamp_min(1e-6).log()
    m = torch.ones_like(la) if valid is None else (valid[:, child] & valid[:, parent]).to(la.dtype)
    n = m.sum(1).clamp_min(1.0)
    d = (la - lb) * m
    d = (d - (d.sum(1, keepdim=True) / n[:, None])) * m
    return (d.square().sum(1) / n).mean()


def knee_axis_terms(Y: torch.Tensor, legs: torch.Tensor, hips: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sin(flexion) cos(angle), sin(flexion))``, each (B, L), of every leg of poses ``Y`` (B, J, 3):
    ``angle`` is the one between the knee's axis ``t x s`` (thigh ``t``: hip -> knee, shin ``s``:
    knee -> ankle) and the hip axis (right hip -> left hip) made perpendicular to the thigh.
    Both terms are products with ``sin(flexion)``, so they stay finite and smooth for a straight
    knee, whose axis is undefined. ``legs``: (L, 3) (hip, knee, ankle) indices; ``hips``: (right
    hip, left hip)."""
    h, k, f = legs[:, 0], legs[:, 1], legs[:, 2]
    t = Y[:, k] - Y[:, h]                                    # (B, L, 3)
    s = Y[:, f] - Y[:, k]
    a = (Y[:, hips[1]] - Y[:, hips[0]])[:, None, :]          # (B, 1, 3)
    axis = torch.cross(t, s, dim=-1)                         # |t||s| sin(flexion) along the knee's axis
    tt = (t * t).sum(-1, keepdim=True).clamp_min(1e-12)
    a_perp = a - (a * t).sum(-1, keepdim=True) / tt * t      # the hip axis turned with the thigh
    ts = tt.squeeze(-1).sqrt() * s.norm(dim=-1)
    sin_cos = (axis * a_perp).sum(-1) / (ts * a_perp.norm(dim=-1)).clamp_min(1e-12)
    return sin_cos, axis.norm(dim=-1) / ts.clamp_min(1e-12)


def knee_hinge_loss(Y: torch.Tensor, legs: torch.Tensor, hips: tuple[int, int], margin_deg: float = 45.0,
                    valid: torch.Tensor | None = None) -> torch.Tensor:
    """The knee is a hinge whose axis turns with the thigh: with the thigh ``t`` (hip -> knee), the
    shin ``s`` (knee -> ankle) and the hip axis ``a`` (right hip -> left hip), the knee's axis
    ``t x s`` lies along ``a`` made perpendicular to the thigh, up to the hip's internal/external
    rotation. The loss is ``sin(flexion) * relu(cos(margin) - cos(angle))`` per leg, ``angle`` the
    one between the two axes (:func:`knee_axis_terms`): zero for a straight knee (no axis) and
    within ``margin_deg`` of the hip's, rising to ``sin(flexion) * (1 + cos(margin))`` for a knee
    bent the other way. Scale-free.

    Args:
        Y: (B, J, 3) poses, any right-handed frame (the camera's: x right, y down, z forward).
        legs: (L, 3) joint indices (hip, knee, ankle) per leg.
        hips: (right hip, left hip) joint indices.
        valid: optional (B, J) bool, joints present: legs with a missing joint (or hip) are left out.
    Returns the mean over the valid legs (0 when there are none).
    """
    sin_cos, sin_flex = knee_axis_terms(Y, legs, hips)
    per_leg = torch.relu(sin_flex * math.cos(math.radians(margin_deg)) - sin_cos)
    if valid is None:
        return per_leg.mean()
    h, k, f = legs[:, 0], legs[:, 1], legs[:, 2]
    m = (valid[:, h] & valid[:, k] & valid[:, f] & valid[:, hips[0]:hips[0] + 1] & valid[:, hips[1]:hips[1] + 1])
    m = m.to(per_leg.dtype)
    return (per_leg * m).sum() / m.sum().clamp_min(1.0)


def _depth_over_radius(Y: torch.Tensor, root: int) -> torch.Tensor:
    """(B, J): each joint's depth offset from the root, in units of its pose's image-plane radius
    (the largest x-y distance of a joint from the root). Scale-free."""
    rel = Y - Y[:, root:root + 1]
    radius = rel[..., :2].norm(dim=-1).amax(dim=1, keepdim=True).clamp_min(1e-6)
    return rel[..., 2].abs() / radius


def depth_extent_loss(Y: torch.Tensor, root: int = 0, margin: float = 1.0) -> torch.Tensor:
    """Mean squared excess of each joint's depth offset from the root over ``margin`` times the
    pose's own image-plane radius (the largest x-y distance of a joint from the root): zero for
    bodies about as deep as they are wide, growing for lifts that stretch along the viewing axis.
    Scale-free. ``Y``: (B, J, 3), camera frame (z forward)."""
    return torch.relu(_depth_over_radius(Y, root) - margin).square().mean()


def depth_stretch(Y: torch.Tensor, root: int = 0) -> torch.Tensor:
    """Median over the batch of each lift's largest depth offset from the root over its image-plane
    radius (the terms of :func:`depth_extent_loss`): a diagnostic of lifts stretched along the
    viewing axis. On the synthetic data the ground truth gives 0.43 and healthy lifts 0.40-0.49;
    the stretched collapses of docs/training.md reach 0.8-1.4. ``Y``: (B, J, 3), camera frame.
    Scalar, no grad."""
    with torch.no_grad():
        return _depth_over_radius(Y.float(), root).amax(dim=1).median()
