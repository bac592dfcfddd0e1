"""Fused cycle-consistency losses (method.md, "The lift-reproject-lift cycle", steps 5 and 6).

One reduction over the data gives both losses, per-element means::

    loss_2d = sum_{n,j,k} w[n,j] f(x[n,j,k] - x_back[n,j,k])   / (2 sum_{n,j} w[n,j])
    loss_3d = sum_{n,j,k} w[n,j] f(Y_rot[n,j,k] - Y_relift[n,j,k]) / (3 sum_{n,j} w[n,j])

with ``f(e) = e^2`` (``kind="mse"``) or ``|e|`` (``kind="l1"``), and ``w = 1`` without weights
(plain means over N, J and the coordinates). Joints whose weight is not ``> 0`` (zero, negative or
NaN) are excluded entirely: their coordinates are never read into the sum, so a missing detection
stored as NaN with confidence 0 is harmless, and they get zero gradient. When no joint is included
(an empty batch, all weights 0) both losses are 0 with zero gradients.

Non-finite values: a NaN or inf in an *included* joint makes the sum non-finite; with
``check_finite=True`` (default) the op raises a ``RuntimeError`` naming the loss (so NaN never
leaks silently into training). The check reads the two finished scalars, not the data (free on the
CPU; one device sync on CUDA); pass ``check_finite=False`` to skip it and get the non-finite value.

:func:`cycle_reprojection_loss` fuses steps 5 and 6 completely: it rotates ``Y_relift`` back,
projects it and computes both losses (3D root-relative) without ever storing ``x_back``: one pass
forward, one pass backward, about half the memory traffic of ``rotate_project`` followed by
:func:`cycle_consistency_loss`.
"""
from __future__ import annotations

import torch

from fastlift import _extension  # noqa: F401  (loads fastlift._C)
from fastlift.ops._backend import compute_dtype, resolve_backend
from fastlift.ops.projection import rotate_project_reference
from fastlift.ops.rotation import _supported_backends

__all__ = [
    "cycle_consistency_loss",
    "cycle_consistency_loss_reference",
    "cycle_reprojection_loss",
    "cycle_reprojection_loss_reference",
    "weighted_cycle_reprojection_loss",
]

_KINDS = ("mse", "l1")


def _weighted_mean(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor | None, l1: bool):
    """(sum of w f(a - b) over included joints, sum of included weights) in a's dtype."""
    d = a - b
    if w is None:
        e = d.abs() if l1 else d * d
        return e.sum(), torch.tensor(float(a.shape[0] * a.shape[1]), dtype=a.dtype, device=a.device)
    keep = (w > 0).unsqueeze(-1)
    d = torch.where(keep, d, torch.zeros((), dtype=d.dtype, device=d.device))
    e = d.abs() if l1 else d * d
    wk = torch.where(w > 0, w, torch.zeros((), dtype=w.dtype, device=w.device))
    return (e * wk.unsqueeze(-1)).sum(), wk.sum()


def cycle_consistency_loss_reference(x: torch.Tensor, x_back: torch.Tensor, Y_rot: torch.Tensor,
                                     Y_relift: torch.Tensor, weights: torch.Tensor | None = None,
                                     kind: str = "mse") -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch losses (the oracle); same contract as :func:`cycle_consistency_loss`, no check."""
    l1 = kind == "l1"
    n2, wsum = _weighted_mean(x, x_back, weights, l1)
    n3, _ = _weighted_mean(Y_rot, Y_relift, weights, l1)
    tiny = torch.finfo(n2.dtype).tiny
    den = wsum.to(n2.dtype).clamp_min(tiny)
    return n2 / (2 * den), n3 / (3 * den)


def _raise_if_not_finite(l2: torch.Tensor, l3: torch.Tensor, op: str = "cycle_consistency_loss",
                         sources: tuple[str, str] = ("x or x_back", "Y_rot or Y_relift")) -> None:
    bad = [f"{name} is {float(v.detach())} ({what} holds NaN/inf at a joint with weight > 0)"
           for name, v, what in (("loss_2d", l2, sources[0]), ("loss_3d", l3, sources[1]))
           if not bool(torch.isfinite(v))]
    if bad:
        raise RuntimeError(f"fastlift.ops.{op}: " + "; ".join(bad)
                           + "; give such joints weight 0, or pass check_finite=False to get the value")


def _launch_forward(x, x_back, y_rot, y_relift, weights, l1, backend):
    if backend in ("cpu", "cuda"):
        return torch.ops.fastlift_C.cycle_loss_forward(x, x_back, y_rot, y_relift, weights, l1)
    if backend == "triton":
        from fastlift.kernels.cycle_loss import cycle_loss_forward
        return cycle_loss_forward(x, x_back, y_rot, y_relift, weights, l1)
    n2, wsum = _weighted_mean(x, x_back, weights, l1)
    n3, _ = _weighted_mean(y_rot, y_relift, weights, l1)
    den = wsum.clamp_min(torch.finfo(n2.dtype).tiny)
    return n2 / (2 * den), n3 / (3 * den), wsum.reshape(())


@torch.library.custom_op("fastlift::cycle_loss", mutates_args=())
def _cycle_loss_op(x: torch.Tensor, x_back: torch.Tensor, y_rot: torch.Tensor, y_relift: torch.Tensor,
                   weights: torch.Tensor | None, l1: bool, check_finite: bool,
                   backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    l2, l3, wsum = _launch_forward(x, x_back, y_rot, y_relift, weights, l1, backend)
    if check_finite:
        _raise_if_not_finite(l2, l3)
    return l2, l3, wsum


@_cycle_loss_op.register_fake
def _(x, x_back, y_rot, y_relift, weights, l1, check_finite, backend):
    return x.new_empty(()), x.new_empty(()), x.new_empty(())


@torch.library.custom_op("fastlift::cycle_loss_backward", mutates_args=())
def _cycle_loss_backward_op(grad_2d: torch.Tensor, grad_3d: torch.Tensor, x: torch.Tensor,
                            x_back: torch.Tensor, y_rot: torch.Tensor, y_relift: torch.Tensor,
                            weights: torch.Tensor | None, wsum: torch.Tensor, l1: bool,
                            backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    if backend in ("cpu", "cuda"):
        return torch.ops.fastlift_C.cycle_loss_backward(grad_2d, grad_3d, x, x_back, y_rot, y_relift,
                                                        weights, wsum, l1)
    if backend == "triton":
        from fastlift.kernels.cycle_loss import cycle_loss_backward
        return cycle_loss_backward(grad_2d, grad_3d, x, x_back, y_rot, y_relift, weights, wsum, l1)
    with torch.enable_grad():
        xb = x_back.detach().requires_grad_(True)
        yl = y_relift.detach().requires_grad_(True)
        l2, l3 = cycle_consistency_loss_reference(x, xb, y_rot, yl, weights, "l1" if l1 else "mse")
        gxb, gyl = torch.autograd.grad((l2, l3), (xb, yl), (grad_2d, grad_3d))
    return gxb, gyl


@_cycle_loss_backward_op.register_fake
def _(grad_2d, grad_3d, x, x_back, y_rot, y_relift, weights, wsum, l1, backend):
    return torch.empty_like(x_back), torch.empty_like(y_relift)


def _setup_context(ctx, inputs, output):
    x, x_back, y_rot, y_relift, weights, l1, check_finite, backend = inputs
    ctx.save_for_backward(x, x_back, y_rot, y_relift, weights, output[2])
    ctx.mark_non_differentiable(output[2])
    ctx.args = (l1, backend)


def _backward(ctx, grad_2d, grad_3d, _grad_wsum):
    x, x_back, y_rot, y_relift, weights, wsum = ctx.saved_tensors
    grad_2d = torch.zeros_like(wsum) if grad_2d is None else grad_2d
    grad_3d = torch.zeros_like(wsum) if grad_3d is None else grad_3d
    g_xb, g_yl = _cycle_loss_backward_op(grad_2d, grad_3d, x, x_back, y_rot, y_relift, weights, wsum,
                                         *ctx.args)
    need = ctx.needs_input_grad
    g_x = -g_xb if need[0] else None
    g_yr = -g_yl if need[2] else None
    return g_x, (g_xb if need[1] else None), g_yr, (g_yl if need[3] else None), None, None, None, None


_cycle_loss_op.register_autograd(_backward, setup_context=_setup_context)


def _check_loss_inputs(op, x, x_back, Y_rot, Y_relift, weights, kind):
    ts = {"x": x, "x_back": x_back, "Y_rot": Y_rot, "Y_relift": Y_relift}
    for name, t in ts.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"fastlift.ops.{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() != 3 or x.shape[-1] != 2:
        raise ValueError(f"fastlift.ops.{op}: x must have shape (N, J, 2), got {tuple(x.shape)}")
    N, J = x.shape[:2]
    for name, t, k in (("x_back", x_back, 2), ("Y_rot", Y_rot, 3), ("Y_relift", Y_relift, 3)):
        if t.shape != (N, J, k):
            raise ValueError(f"fastlift.ops.{op}: {name} must have shape (N, J, {k}) = ({N}, {J}, {k}), "
                             f"got {tuple(t.shape)}")
    if weights is not None:
        if not isinstance(weights, torch.Tensor):
            raise TypeError(f"fastlift.ops.{op}: weights must be a torch.Tensor or None")
        if weights.shape != (N, J):
            raise ValueError(f"fastlift.ops.{op}: weights must have shape (N, J) = ({N}, {J}), "
                             f"got {tuple(weights.shape)}")
        ts["weights"] = weights
    devices = {t.device for t in ts.values()}
    if len(devices) > 1:
        raise ValueError(f"fastlift.ops.{op}: all inputs must be on one device, got "
                         + ", ".join(f"{k} on {t.device}" for k, t in ts.items()))
    if kind not in _KINDS:
        raise ValueError(f"fastlift.ops.{op}: kind must be one of {_KINDS}, got {kind!r}")
    dtypes = {compute_dtype(t, name, op) for name, t in ts.items()}
    return torch.float64 if torch.float64 in dtypes else torch.float32


def cycle_consistency_loss(x: torch.Tensor, x_back: torch.Tensor, Y_rot: torch.Tensor,
                           Y_relift: torch.Tensor, weights: torch.Tensor | None = None, kind: str = "mse",
                           check_finite: bool = True,
                           backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The cycle's two consistency losses in one fused reduction (module doc for the exact formula).

    Args:
        x: (N, J, 2) the real normalised 2D poses (the lifter's input), camera frame.
        x_back: (N, J, 2) their reconstruction ``P(R^T Y')`` (step 6).
        Y_rot: (N, J, 3) the rotated lifted poses ``R Y`` (root-relative, lift units; step 2).
        Y_relift: (N, J, 3) the re-lifted poses ``Y'`` (step 4), in the same frame as ``Y_rot``.
        weights: optional (N, J) per-joint confidences; joints with weight 0 (or < 0, or NaN) are
            excluded, the others weigh ``w`` in a weighted mean. Not differentiated.
        kind: ``"mse"`` (squared error, the paper's) or ``"l1"`` (absolute error).
        check_finite: raise ``RuntimeError`` when a loss is NaN/inf (module doc); default True.
        backend: ``"cuda"``, ``"triton"``, ``"cpu"``, ``"reference"`` or None (automatic).

    Returns:
        ``(loss_2d, loss_3d)``: 0-dim tensors, per-element means (unit: squared, or plain, input
        units). Differentiable in ``x_back`` and ``Y_relift``, and in ``x`` and ``Y_rot`` when
        those require grad. float64 stays float64, other float types are computed in float32.
    """
    op = "cycle_consistency_loss"
    dtype = _check_loss_inputs(op, x, x_back, Y_rot, Y_relift, weights, kind)
    chosen = resolve_backend(op, x.device, backend, _supported_backends(
        ("cycle_loss_forward", "cycle_loss_backward"), "cycle_loss"))
    x, x_back, Y_rot, Y_relift = (t.to(dtype) for t in (x, x_back, Y_rot, Y_relift))
    if weights is not None:
        weights = weights.to(dtype)
    if chosen == "reference":
        l2, l3 = cycle_consistency_loss_reference(x, x_back, Y_rot, Y_relift, weights, kind)
        if check_finite and not torch.compiler.is_compiling():
            _raise_if_not_finite(l2, l3)
        return l2, l3
    if weights is not None:
        weights = weights.contiguous()
    l2, l3, _ = _cycle_loss_op(x.contiguous(), x_back.contiguous(), Y_rot.contiguous(),
                               Y_relift.contiguous(), weights, kind == "l1", bool(check_finite), chosen)
    return l2, l3


# ------------------------------------------------------------------------------------------------
# Steps 5 and 6 fused: reprojection and both losses, x_back never materialised.

def cycle_reprojection_loss_reference(x: torch.Tensor, Y_relift: torch.Tensor, R: torch.Tensor,
                                      Y_rot: torch.Tensor, weights: torch.Tensor | None = None,
                                      kind: str = "mse", c: float = 10.0, root: int = 0,
                                      transpose: bool = True, min_depth: float = 1.0,
                                      renormalize: bool = False, head: int = 10,
                                      eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch composition (the oracle); same contract as :func:`cycle_reprojection_loss`."""
    x_back, _ = rotate_project_reference(Y_relift, R, c, root, transpose, min_depth, renormalize, head, eps)
    rel = lambda Y: Y - Y[:, root : root + 1]  # noqa: E731  (3D compared root-relative)
    return cycle_consistency_loss_reference(x, x_back, rel(Y_rot), rel(Y_relift), weights, kind)


def _reproject_launch(x, y_relift, R, y_rot, weights, l1, args, backend):
    if backend in ("cpu", "cuda"):
        return torch.ops.fastlift_C.cycle_reproject_loss_forward(x, y_relift, R, y_rot, weights, l1, *args)
    if backend == "triton":
        from fastlift.kernels.cycle_loss import cycle_reproject_loss_forward
        return cycle_reproject_loss_forward(x, y_relift, R, y_rot, weights, l1, *args)
    x_back, _ = rotate_project_reference(y_relift, R, *args)
    root = args[1]
    rel = lambda Y: Y - Y[:, root : root + 1]  # noqa: E731
    return _launch_forward(x, x_back, rel(y_rot), rel(y_relift), weights, l1, "reference")


@torch.library.custom_op("fastlift::cycle_reprojection_loss", mutates_args=())
def _cycle_reproject_op(x: torch.Tensor, y_relift: torch.Tensor, R: torch.Tensor, y_rot: torch.Tensor,
                        weights: torch.Tensor | None, l1: bool, c: float, root: int, transpose: bool,
                        min_depth: float, renormalize: bool, head: int, eps: float, check_finite: bool,
                        backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    args = (c, root, transpose, min_depth, renormalize, head, eps)
    l2, l3, wsum = _reproject_launch(x, y_relift, R, y_rot, weights, l1, args, backend)
    if check_finite:
        _raise_if_not_finite(l2, l3, "cycle_reprojection_loss", ("x or Y_relift or R", "Y_rot or Y_relift"))
    return l2, l3, wsum


@_cycle_reproject_op.register_fake
def _(x, y_relift, R, y_rot, weights, l1, c, root, transpose, min_depth, renormalize, head, eps, check_finite,
      backend):
    return x.new_empty(()), x.new_empty(()), x.new_empty(())


@torch.library.custom_op("fastlift::cycle_reprojection_loss_backward", mutates_args=())
def _cycle_reproject_backward_op(grad_2d: torch.Tensor, grad_3d: torch.Tensor, x: torch.Tensor,
                                 y_relift: torch.Tensor, R: torch.Tensor, y_rot: torch.Tensor,
                                 weights: torch.Tensor | None, wsum: torch.Tensor, l1: bool, c: float,
                                 root: int, transpose: bool, min_depth: float, renormalize: bool, head: int,
                                 eps: float, need_x: bool, need_y_rot: bool,
                                 backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x or empty, grad_Y_relift, grad_R, grad_Y_rot or empty)."""
    args = (c, root, transpose, min_depth, renormalize, head, eps)
    if backend in ("cpu", "cuda"):
        return torch.ops.fastlift_C.cycle_reproject_loss_backward(grad_2d, grad_3d, x, y_relift, R, y_rot, weights,
                                                                  wsum, l1, *args, need_x, need_y_rot)
    if backend == "triton":
        from fastlift.kernels.cycle_loss import cycle_reproject_loss_backward
        return cycle_reproject_loss_backward(grad_2d, grad_3d, x, y_relift, R, y_rot, weights, wsum, l1, *args,
                                             need_x, need_y_rot)
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (x, y_relift, R, y_rot)]
        l2, l3 = cycle_reprojection_loss_reference(*leaves, weights, "l1" if l1 else "mse", *args)
        gx, gyl, gR, gyr = torch.autograd.grad((l2, l3), leaves, (grad_2d, grad_3d))
    empty = x.new_empty(0)
    return (gx if need_x else empty), gyl, gR, (gyr if need_y_rot else empty)


@_cycle_reproject_backward_op.register_fake
def _(grad_2d, grad_3d, x, y_relift, R, y_rot, weights, wsum, l1, c, root, transpose, min_depth, renormalize,
      head, eps, need_x, need_y_rot, backend):
    return (torch.empty_like(x) if need_x else x.new_empty(0)), torch.empty_like(y_relift), torch.empty_like(R), \
        (torch.empty_like(y_rot) if need_y_rot else y_rot.new_empty(0))


def _reproject_setup_context(ctx, inputs, output):
    x, y_relift, R, y_rot, weights, l1, c, root, transpose, min_depth, renormalize, head, eps, _, backend = inputs
    ctx.save_for_backward(x, y_relift, R, y_rot, weights, output[2])
    ctx.mark_non_differentiable(output[2])
    ctx.args = (l1, c, root, transpose, min_depth, renormalize, head, eps)
    ctx.backend = backend


def _reproject_backward(ctx, grad_2d, grad_3d, _grad_wsum):
    x, y_relift, R, y_rot, weights, wsum = ctx.saved_tensors
    grad_2d = torch.zeros_like(wsum) if grad_2d is None else grad_2d
    grad_3d = torch.zeros_like(wsum) if grad_3d is None else grad_3d
    need = ctx.needs_input_grad
    gx, gyl, gR, gyr = _cycle_reproject_backward_op(grad_2d, grad_3d, x, y_relift, R, y_rot, weights, wsum,
                                                    *ctx.args, bool(need[0]), bool(need[3]), ctx.backend)
    return ((gx if need[0] else None), (gyl if need[1] else None), (gR if need[2] else None),
            (gyr if need[3] else None)) + (None,) * 11


_cycle_reproject_op.register_autograd(_reproject_backward, setup_context=_reproject_setup_context)


def _check_reproject_inputs(op, x, Y_relift, R, Y_rot, weights, kind, c, root, min_depth, renormalize, head,
                            eps) -> torch.dtype:
    """Shapes, dtypes, devices and indices of the reprojection losses' inputs; the compute dtype."""
    if not isinstance(R, torch.Tensor):
        raise TypeError(f"fastlift.ops.{op}: R must be a torch.Tensor, got {type(R).__name__}")
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != 2:
        raise ValueError(f"fastlift.ops.{op}: x must be a (N, J, 2) tensor")
    N, J = x.shape[:2]
    dtype = _check_loss_inputs(op, x, x, Y_rot, Y_relift, weights, kind)  # (x stands in for x_back)
    if R.shape != (N, 3, 3):
        raise ValueError(f"fastlift.ops.{op}: R must have shape (N, 3, 3) = ({N}, 3, 3), got {tuple(R.shape)}")
    if R.device != x.device:
        raise ValueError(f"fastlift.ops.{op}: R is on {R.device} but x on {x.device}")
    dtype = torch.float64 if compute_dtype(R, "R", op) == torch.float64 else dtype
    if not 0 <= int(root) < J:
        raise ValueError(f"fastlift.ops.{op}: root={root} is not a joint index in [0, {J})")
    if renormalize and (not 0 <= int(head) < J or head == root):
        raise ValueError(f"fastlift.ops.{op}: head={head} must be a joint index in [0, {J}) other than root")
    if not (c > 0 and min_depth > 0 and eps > 0):
        raise ValueError(f"fastlift.ops.{op}: c, min_depth and eps must be positive")
    return dtype


def cycle_reprojection_loss(x: torch.Tensor, Y_relift: torch.Tensor, R: torch.Tensor, Y_rot: torch.Tensor,
                            weights: torch.Tensor | None = None, kind: str = "mse", c: float = 10.0,
                            root: int = 0, transpose: bool = True, min_depth: float = 1.0,
                            renormalize: bool = False, head: int = 10, eps: float = 1e-6,
                            check_finite: bool = True,
                            backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The cycle's steps 5 and 6 in one fused op: rotate back, re-project, and both losses.

    Equal (to rounding) to::

        x_back, _ = rotate_project(Y_relift, R, c, root, transpose, min_depth, renormalize, head, eps)
        rel = lambda Y: Y - Y[:, root:root + 1]           # 3D compared root-relative (step 5)
        loss_2d, loss_3d = cycle_consistency_loss(x, x_back, rel(Y_rot), rel(Y_relift), weights, kind)

    but ``x_back`` is never stored: the forward is one pass over (x, Y_relift, R, Y_rot, weights)
    and the backward one pass writing the gradients, about half the memory traffic of the two ops.

    Args:
        x: (N, J, 2) the real normalised 2D poses (the lifter's input).
        Y_relift: (N, J, 3) the re-lifted poses ``Y'`` (step 4), lift units, in the rotated view (as
            :func:`fastlift.ops.lift_to_3d` makes them: need not be root-relative).
        R: (N, 3, 3) the rotations of step 2; ``transpose=True`` (default) applies ``R^T``, rotating
            back into the original view (step 6).
        Y_rot: (N, J, 3) the rotated poses ``R Y`` of step 2, the 3D target. Both 3D poses are
            compared root-relative, so the root joint's coordinates are always read (give the
            root a finite value even where its weight is 0).
        weights: optional (N, J) confidences, as in :func:`cycle_consistency_loss`.
        kind: ``"mse"`` or ``"l1"``.
        c, root, transpose, min_depth, renormalize, head, eps: as in
            :func:`fastlift.ops.rotate_project` (soft depth floor included).
        check_finite: raise ``RuntimeError`` when a loss is NaN/inf (default True).
        backend: ``"cuda"``, ``"triton"``, ``"cpu"``, ``"reference"`` or None (automatic).

    Returns:
        ``(loss_2d, loss_3d)``, 0-dim per-element means. Differentiable in ``Y_relift`` and ``R``,
        and in ``x`` and ``Y_rot`` when they require grad.
    """
    op = "cycle_reprojection_loss"
    dtype = _check_reproject_inputs(op, x, Y_relift, R, Y_rot, weights, kind, c, root, min_depth, renormalize,
                                    head, eps)
    chosen = resolve_backend(op, x.device, backend, _supported_backends(
        ("cycle_reproject_loss_forward", "cycle_reproject_loss_backward"), "cycle_loss"))
    x, Y_relift, R, Y_rot = (t.to(dtype) for t in (x, Y_relift, R, Y_rot))
    if weights is not None:
        weights = weights.to(dtype)
    args = (float(c), int(root), bool(transpose), float(min_depth), bool(renormalize), int(head), float(eps))
    if chosen == "reference":
        l2, l3 = cycle_reprojection_loss_reference(x, Y_relift, R, Y_rot, weights, kind, *args)
        if check_finite and not torch.compiler.is_compiling():
            _raise_if_not_finite(l2, l3, op, ("x or Y_relift or R", "Y_rot or Y_relift"))
        return l2, l3
    if weights is not None:
        weights = weights.contiguous()
    l2, l3, _ = _cycle_reproject_op(x.contiguous(), Y_relift.contiguous(), R.contiguous(), Y_rot.contiguous(),
                                    weights, kind == "l1", *args, bool(check_finite), chosen)
    return l2, l3


# ------------------------------------------------------------------------------------------------
# The weighted sum w_2d loss_2d + w_3d loss_3d with its gradient computed in the forward pass.

@torch.library.custom_op("fastlift::weighted_cycle_reprojection_loss", mutates_args=())
def _weighted_reproject_op(x: torch.Tensor, y_relift: torch.Tensor, R: torch.Tensor, y_rot: torch.Tensor,
                           weights: torch.Tensor | None, l1: bool, c: float, root: int, transpose: bool,
                           min_depth: float, renormalize: bool, head: int, eps: float, w_2d: float, w_3d: float,
                           need_x: bool, need_y_rot: bool, check_finite: bool, backend: str
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                      torch.Tensor, torch.Tensor]:
    """(loss, loss_2d, loss_3d, dloss/dx or empty, dloss/dY_relift, dloss/dR, dloss/dY_rot or empty)."""
    args = (c, root, transpose, min_depth, renormalize, head, eps)
    if backend in ("cpu", "cuda"):  # one pass: the losses and the gradients from one read of the inputs
        l2, l3, _, gx, gyl, gR, gyr = torch.ops.fastlift_C.cycle_reproject_loss_forward_grad(
            x, y_relift, R, y_rot, weights, l1, *args, w_2d, w_3d, need_x, need_y_rot)
    elif backend == "triton":  # one pass too (after a sum over the weights)
        from fastlift.kernels.cycle_loss import cycle_reproject_loss_forward_grad
        l2, l3, _, gx, gyl, gR, gyr = cycle_reproject_loss_forward_grad(
            x, y_relift, R, y_rot, weights, l1, *args, w_2d, w_3d, need_x, need_y_rot)
    else:  # reference: the two passes of the fused op, the backward run at once with the loss weights
        l2, l3, wsum = _reproject_launch(x, y_relift, R, y_rot, weights, l1, args, backend)
        g2, g3 = torch.full_like(l2, w_2d), torch.full_like(l3, w_3d)
        gx, gyl, gR, gyr = _cycle_reproject_backward_op(g2, g3, x, y_relift, R, y_rot, weights, wsum, l1, *args,
                                                        need_x, need_y_rot, backend)
    if check_finite:
        _raise_if_not_finite(l2, l3, "weighted_cycle_reprojection_loss", ("x or Y_relift or R", "Y_rot or Y_relift"))
    return l2 * w_2d + l3 * w_3d, l2, l3, gx, gyl, gR, gyr


@_weighted_reproject_op.register_fake
def _(x, y_relift, R, y_rot, weights, l1, c, root, transpose, min_depth, renormalize, head, eps, w_2d, w_3d, need_x,
      need_y_rot, check_finite, backend):
    return (x.new_empty(()), x.new_empty(()), x.new_empty(()),
            torch.empty_like(x) if need_x else x.new_empty(0), torch.empty_like(y_relift), torch.empty_like(R),
            torch.empty_like(y_rot) if need_y_rot else y_rot.new_empty(0))


def _weighted_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*output[3:])
    ctx.mark_non_differentiable(*output[1:])


def _plain_eager_one(grad: torch.Tensor) -> bool:
    """True when grad is an ordinary CPU tensor holding exactly 1 (reading it is free there). Under
    tracing (torch.compile, export, opcheck: fake, functional or proxied tensors) its value is not
    known, and the stored gradients are always scaled."""
    return (type(grad) is torch.Tensor and grad.device.type == "cpu" and not torch.compiler.is_compiling()
            and torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.PROXY) is None
            and grad.item() == 1.0)


def _weighted_backward(ctx, grad, *_unused):
    stored = ctx.saved_tensors  # (gx, gyl, gR, gyr): the gradients of the loss itself
    if _plain_eager_one(grad):
        scaled = stored  # the usual case (the loss, or a sum containing it, is what backward() started from)
    else:
        scaled = tuple(g * grad for g in stored)
    need = ctx.needs_input_grad
    gx, gyl, gR, gyr = scaled
    # gx / gyr are 1-D placeholders where the op was told not to compute them (need_x, need_y_rot)
    return ((gx if need[0] and gx.dim() == 3 else None), (gyl if need[1] else None), (gR if need[2] else None),
            (gyr if need[3] and gyr.dim() == 3 else None)) + (None,) * 15


_weighted_reproject_op.register_autograd(_weighted_backward, setup_context=_weighted_setup_context)


def weighted_cycle_reprojection_loss(x: torch.Tensor, Y_relift: torch.Tensor, R: torch.Tensor, Y_rot: torch.Tensor,
                                     w_2d: float = 1.0, w_3d: float = 1.0, weights: torch.Tensor | None = None,
                                     kind: str = "mse", c: float = 10.0, root: int = 0, transpose: bool = True,
                                     min_depth: float = 1.0, renormalize: bool = False, head: int = 10,
                                     eps: float = 1e-6, check_finite: bool = True, backend: str | None = None
                                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``w_2d * loss_2d + w_3d * loss_3d`` of :func:`cycle_reprojection_loss`, forward and backward in
    one pass over the data.

    A loss is the end of a graph: its gradient is known in the forward, up to the one scalar the
    backward brings. So where gradients are needed the forward also writes dloss/dY_relift and
    dloss/dR (and dloss/dx, dloss/dY_rot when those require grad) while the inputs are in cache,
    and the backward only scales them (on the CPU not even that when the incoming gradient is
    exactly 1, as from ``loss.backward()`` or a sum of losses). The inputs are read once instead of
    twice on ``cpu``, ``cuda`` and ``triton`` (the GPU paths after a pass over ``weights`` alone,
    when given: every gradient carries their sum). The gradients are held from the forward to the
    backward (60 floats per pose for J = 17, more with x or Y_rot requiring grad): keep the result
    only as long as its backward is due.

    Args:
        x, Y_relift, R, Y_rot, weights, kind, c, root, transpose, min_depth, renormalize, head, eps,
        check_finite, backend: as in :func:`cycle_reprojection_loss`.
        w_2d, w_3d: the weights of the two losses in the returned sum (floats, fixed per call).

    Returns:
        ``(loss, loss_2d, loss_3d)``: the 0-dim weighted sum, differentiable in ``Y_relift`` and
        ``R`` (and ``x``, ``Y_rot`` when they require grad), and the two per-element means as
        values without gradient (for logging).
    """
    op = "weighted_cycle_reprojection_loss"
    for name, v in (("w_2d", w_2d), ("w_3d", w_3d)):
        if isinstance(v, torch.Tensor) or not isinstance(v, (int, float)) or v != v or abs(v) == float("inf"):
            raise TypeError(f"fastlift.ops.{op}: {name} must be a finite Python number, got {v!r}")
    need_grad = torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad
                                                for t in (x, Y_relift, R, Y_rot))
    if not need_grad:
        l2, l3 = cycle_reprojection_loss(x, Y_relift, R, Y_rot, weights, kind, c, root, transpose, min_depth,
                                         renormalize, head, eps, check_finite, backend)
        return l2 * w_2d + l3 * w_3d, l2, l3
    dtype = _check_reproject_inputs(op, x, Y_relift, R, Y_rot, weights, kind, c, root, min_depth, renormalize,
                                    head, eps)
    chosen = resolve_backend(op, x.device, backend, _supported_backends(
        ("cycle_reproject_loss_forward", "cycle_reproject_loss_backward", "cycle_reproject_loss_forward_grad"),
        "cycle_loss"))
    if chosen == "reference":
        l2, l3 = cycle_reprojection_loss(x, Y_relift, R, Y_rot, weights, kind, c, root, transpose, min_depth,
                                         renormalize, head, eps, check_finite, "reference")
        return l2 * w_2d + l3 * w_3d, l2.detach(), l3.detach()
    need_x, need_y_rot = bool(x.requires_grad), bool(Y_rot.requires_grad)
    x, Y_relift, R, Y_rot = (t.to(dtype).contiguous() for t in (x, Y_relift, R, Y_rot))
    if weights is not None:
        weights = weights.to(dtype).contiguous()
    args = (float(c), int(root), bool(transpose), float(min_depth), bool(renormalize), int(head), float(eps))
    loss, l2, l3, *_ = _weighted_reproject_op(x, Y_relift, R, Y_rot, weights, kind == "l1", *args, float(w_2d),
                                              float(w_3d), need_x, need_y_rot, bool(check_finite), chosen)
    return loss, l2, l3
