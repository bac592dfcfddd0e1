"""fastlift.ops.rotate_project and lift_to_3d: every backend against the pure-torch reference."""
import math

import pytest
import torch

from fastlift.ops import available_backends, lift_to_3d, normalize_2d_reference, rotate_project, rotate_project_reference, \
    sample_rotations
from fastlift.testing import backend_device, backend_params

KERNEL_BACKENDS = backend_params()
CPU = [p for p in KERNEL_BACKENDS if p.id == "cpu"]


def random_lift(n, j=17, dtype=torch.float32, seed=0, device="cpu", spread=3.0):
    """Lifted poses as the cycle makes them: normalised 2D times depth c + d (never zeros)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, j, 2, generator=g, dtype=torch.float64) * 0.1
    d = torch.randn(n, j, generator=g, dtype=torch.float64) * spread
    Y = lift_to_3d(x, d, floor="soft")
    R = sample_rotations(n, seed=seed, distribution="haar", dtype=torch.float64)
    return Y.to(dtype=dtype, device=device), R.to(dtype=dtype, device=device)


def sizes(backend):
    return [1, 17, 61] if backend == "triton" else [1, 17, 997, 1023]


def _check(backend, n, j=17, root=0, head=10, transpose=False, renormalize=False, c=10.0, min_depth=1.0, spread=3.0):
    device = backend_device(backend)
    Y, R = random_lift(n, j, device=device, seed=n + j, spread=spread)
    Y.requires_grad_(True)
    R.requires_grad_(True)
    kw = dict(c=c, root=root, head=head, transpose=transpose, renormalize=renormalize, min_depth=min_depth)
    x2d, yrot = rotate_project(Y, R, backend=backend, **kw)
    assert x2d.shape == (n, j, 2) and yrot.shape == (n, j, 3) and x2d.dtype == torch.float32
    g = torch.Generator().manual_seed(1)
    g2 = torch.randn(n, j, 2, generator=g).to(device)
    g3 = torch.randn(n, j, 3, generator=g).to(device)
    gY, gR = torch.autograd.grad((x2d, yrot), (Y, R), (g2, g3))
    Yd = Y.detach().double().cpu().requires_grad_(True)
    Rd = R.detach().double().cpu().requires_grad_(True)
    x_ref, yrot_ref = rotate_project_reference(Yd, Rd, **kw)
    gY_ref, gR_ref = torch.autograd.grad((x_ref, yrot_ref), (Yd, Rd), (g2.double().cpu(), g3.double().cpu()))
    for got, ref in ((x2d, x_ref), (yrot, yrot_ref), (gY, gY_ref), (gR, gR_ref)):
        scale = ref.abs().max().clamp_min(1e-30)
        torch.testing.assert_close(got.double().cpu() / scale, ref.detach() / scale, rtol=0, atol=2e-5)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("renormalize", [False, True])
def test_matches_reference(backend, transpose, renormalize, poisoned):
    for n in sizes(backend):
        _check(backend, n, transpose=transpose, renormalize=renormalize)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("j,root,head", [(5, 3, 1), (2, 1, 0), (25, 8, 0), (31, 0, 30)])
def test_other_layouts(backend, j, root, head, poisoned):
    _check(backend, 13, j=j, root=root, head=head, renormalize=True, transpose=True, c=7.0, min_depth=0.5)
    _check(backend, 9, j=j, root=root, head=head)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_joints_at_and_behind_the_camera_are_finite(backend, poisoned):
    """Depth offsets of |d| ~ 9 against c = 10 (method.md, pitfalls): joints at Z <= 0 after rotation."""
    _check(backend, 61, spread=12.0, renormalize=True)
    device = backend_device(backend)
    Y = torch.zeros(3, 17, 3, device=device)
    Y[:, 1:, 0] = 0.5
    Y[0, 1:, 2] = -10.0  # exactly at the camera plane (Z = 0)
    Y[1, 1:, 2] = -25.0  # far behind the camera
    Y[2, 1:, 2] = -1e30  # absurdly far behind
    R = torch.eye(3, device=device).expand(3, 3, 3).contiguous()
    Y.requires_grad_(True)
    x2d, yrot = rotate_project(Y, R, backend=backend)
    assert torch.isfinite(x2d).all()
    # Z_s = m + softplus(Z - m): at Z = 0 that is 1 + log(1 + e^-1); far behind it tends to m = 1
    zs0 = 1 + math.log1p(math.exp(-1.0))
    torch.testing.assert_close(x2d[0, 1, 0].item(), 0.5 / zs0, rtol=1e-5, atol=0)
    torch.testing.assert_close(x2d[1, 1, 0].item(), 0.5, rtol=1e-5, atol=0)
    (gY,) = torch.autograd.grad(x2d.sum(), Y)
    assert torch.isfinite(gY).all()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_non_finite_input_stays_in_its_pose(backend, poisoned):
    device = backend_device(backend)
    Y, R = random_lift(4, device=device)
    Y[1, 3, 2] = float("nan")
    x2d, yrot = rotate_project(Y, R, backend=backend)
    assert not torch.isfinite(x2d[1]).all()
    assert torch.isfinite(x2d[[0, 2, 3]]).all() and torch.isfinite(yrot[[0, 2, 3]]).all()


@pytest.mark.parametrize("backend", CPU + ["reference"])
@pytest.mark.parametrize("renormalize", [False, True])
def test_gradcheck_float64(backend, renormalize):
    Y, R = random_lift(4, 17, dtype=torch.float64, spread=6.0)
    Y.requires_grad_(True)
    R.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: rotate_project(a, b, renormalize=renormalize, transpose=True, backend=backend), (Y, R))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_non_contiguous_empty_and_unused_outputs(backend, poisoned):
    device = backend_device(backend)
    Yb, Rb = random_lift(40, device=device)
    Y, R = Yb[::3], Rb[::3].transpose(1, 2)
    assert not Y.is_contiguous() and not R.is_contiguous()
    x2d, yrot = rotate_project(Y, R, backend=backend)
    x_ref, y_ref = rotate_project_reference(Y, R)
    torch.testing.assert_close(x2d, x_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(yrot, y_ref, rtol=1e-5, atol=1e-6)
    x0, y0 = rotate_project(Yb[:0], Rb[:0], backend=backend)
    assert x0.shape == (0, 17, 2) and y0.shape == (0, 17, 3)
    # only one output used: the other's gradient is never materialised
    Yg = Yb.clone().requires_grad_(True)
    for pick in (0, 1):
        (g,) = torch.autograd.grad(rotate_project(Yg, Rb, backend=backend)[pick].sum(), Yg)
        (g_ref,) = torch.autograd.grad(rotate_project_reference(Yg, Rb)[pick].sum(), Yg)
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


def test_renormalize_equals_normalize_2d():
    Y, R = random_lift(50, dtype=torch.float64)
    x2d, _ = rotate_project(Y, R, backend="reference")
    xn, _ = rotate_project(Y, R, renormalize=True, backend="reference")
    torch.testing.assert_close(xn, normalize_2d_reference(x2d)[0])
    if available_backends()["cpu"].available:
        xk, _ = rotate_project(Y, R, renormalize=True, backend="cpu")
        torch.testing.assert_close(xk, xn)


def test_properties_of_the_geometry():
    Y, R = random_lift(100, dtype=torch.float64)
    x2d, yrot = rotate_project(Y, R)
    assert yrot[:, 0].abs().max() == 0  # root-relative
    # lengths are preserved by the rotation; R^T undoes R
    torch.testing.assert_close(yrot.norm(dim=-1), (Y - Y[:, :1]).norm(dim=-1))
    _, back = rotate_project(yrot, R, transpose=True)
    torch.testing.assert_close(back, Y - Y[:, :1])
    # identity rotation: the projection of the lift is the normalised input (root at depth c exactly
    # when the root's lift depth is c, i.e. x_root = 0, d_root = -1 with the hard floor)
    x = torch.randn(5, 17, 2, dtype=torch.float64) * 0.1
    x[:, 0] = 0
    d = torch.rand(5, 17, dtype=torch.float64)
    d[:, 0] = -1.0
    Y2 = lift_to_3d(x, d)
    x2, _ = rotate_project(Y2, torch.eye(3, dtype=torch.float64).expand(5, 3, 3), min_depth=1e-3)
    # perspective: x_j z_j / (z_j - z_root + c) = x_j when z_root = c, up to the soft floor's
    # log(1 + exp(m - Z)) ~ 5e-5 at Z ~ 10
    torch.testing.assert_close(x2, x, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("backend", CPU)
def test_one_million_poses_forward(backend):
    n = 1 << 20
    g = torch.Generator().manual_seed(3)
    Y = torch.randn(n, 17, 3, generator=g)
    Y[..., 2] += 10
    R = sample_rotations(n, seed=1)
    x2d, yrot = rotate_project(Y, R, renormalize=True, backend=backend)
    idx = torch.randint(0, n, (2000,), generator=g)
    idx[:2] = torch.tensor([0, n - 1])
    x_ref, y_ref = rotate_project_reference(Y[idx].double(), R[idx].double(), renormalize=True)
    torch.testing.assert_close(x2d[idx].double(), x_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(yrot[idx].double(), y_ref, rtol=1e-4, atol=1e-5)


def test_half_precision_is_computed_in_float32():
    Y, R = random_lift(9)
    x2d, yrot = rotate_project(Y.bfloat16(), R)
    assert x2d.dtype == torch.float32 and yrot.dtype == torch.float32


# ------------------------------------------------------------------------------------------------
# lift_to_3d


def test_lift_hard_and_soft():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 17, 2, generator=g, dtype=torch.float64) * 0.1
    d = torch.randn(8, 17, generator=g, dtype=torch.float64) * 8
    d[0, :3] = torch.tensor([-10.0, -30.0, 25.0])
    Yh = lift_to_3d(x, d)
    z = torch.clamp(10 + d, min=0) + 1  # the paper's z = max(0, c + d) + 1
    torch.testing.assert_close(Yh[..., 2], z)
    torch.testing.assert_close(Yh[..., :2], x * z[..., None])
    Ys = lift_to_3d(x, d, floor="soft")
    assert (Ys[..., 2] >= 1).all()
    far = (10 + d).abs() > 12
    torch.testing.assert_close(Ys[..., 2][far], Yh[..., 2][far], rtol=0, atol=1e-5)
    dg = d.clone().requires_grad_(True)
    (gd,) = torch.autograd.grad(lift_to_3d(x, dg, floor="soft")[..., 2].sum(), dg)
    assert (gd > 0).all()  # soft floor: the gradient never vanishes
    # reprojects exactly onto the input
    torch.testing.assert_close(Ys[..., :2] / Ys[..., 2:], x)


@pytest.mark.parametrize(
    "args,kwargs,exc,match",
    [
        ((torch.randn(4, 17, 3), torch.randn(4, 17)), {}, ValueError, r"x2d must have shape"),
        ((torch.randn(4, 17, 2), torch.randn(4, 16)), {}, ValueError, r"depth_offset must have shape"),
        ((torch.randn(4, 17, 2), torch.randn(4, 17)), dict(floor="relu"), ValueError, "floor must be"),
        ((torch.randn(4, 17, 2), torch.randn(4, 17)), dict(min_depth=0.0), ValueError, "min_depth must be"),
        ((torch.ones(4, 17, 2, dtype=torch.int32), torch.randn(4, 17)), {}, TypeError, "floating-point"),
    ],
)
def test_lift_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lift_to_3d(*args, **kwargs)


@pytest.mark.parametrize(
    "Y,R,kwargs,exc,match",
    [
        (torch.randn(4, 17, 2), torch.eye(3).expand(4, 3, 3), {}, ValueError, r"Y must have shape \(N, J, 3\)"),
        (torch.randn(4, 17, 3), torch.eye(3).expand(3, 3, 3), {}, ValueError, r"R must have shape"),
        (torch.randn(4, 17, 3), torch.eye(3).expand(4, 3, 3), dict(root=17), ValueError, "root=17"),
        (torch.randn(4, 17, 3), torch.eye(3).expand(4, 3, 3), dict(renormalize=True, head=0), ValueError,
         "must differ"),
        (torch.randn(4, 17, 3), torch.eye(3).expand(4, 3, 3), dict(c=0.0), ValueError, "c must be positive"),
        (torch.randn(4, 17, 3), torch.eye(3).expand(4, 3, 3), dict(min_depth=-1.0), ValueError, "min_depth"),
        (torch.randn(4, 17, 3), torch.eye(3).expand(4, 3, 3), dict(backend="gpu"), ValueError, "unknown backend"),
        (torch.ones(4, 17, 3, dtype=torch.int64), torch.eye(3).expand(4, 3, 3), {}, TypeError, "floating-point"),
        (torch.randn(4, 17, 3), torch.eye(3).expand(4, 3, 3), dict(backend="cuda"), ValueError, "cannot run here|not implemented for this op"),
    ],
)
def test_bad_input_gives_clear_error(Y, R, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        rotate_project(Y, R, **kwargs)


def test_device_mismatch_is_rejected():
    meta = torch.empty(4, 3, 3, device="meta")
    with pytest.raises(ValueError, match="is on cpu but R on meta"):
        rotate_project(torch.randn(4, 17, 3), meta)


@pytest.mark.parametrize("backend", [p for p in KERNEL_BACKENDS if p.id != "cuda"])
def test_opcheck(backend):
    Y, R = random_lift(5)
    Y.requires_grad_(True)
    R.requires_grad_(True)
    for renorm, transpose in ((False, False), (True, True)):
        torch.library.opcheck(torch.ops.fastlift.rotate_project.default,
                              (Y, R, 10.0, 0, transpose, 1.0, renorm, 10, 1e-6, backend))
    g2 = torch.randn(5, 17, 2)
    torch.library.opcheck(torch.ops.fastlift.rotate_project_backward.default,
                          (g2, None, Y.detach(), R.detach(), 10.0, 0, False, 1.0, True, 10, 1e-6, backend))


@pytest.mark.parametrize("backend", CPU)
def test_compile_and_export_trace_without_graph_breaks(backend):
    def f(Y, R):
        x2d, yrot = rotate_project(Y, R, renormalize=True, backend=backend)
        return x2d.sum(-1) + yrot.sum(-1)

    Y, R = random_lift(11)
    torch._dynamo.reset()
    explain = torch._dynamo.explain(f)(Y, R)
    assert explain.graph_break_count == 0, explain.break_reasons
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    Yg = Y.clone().requires_grad_(True)
    out = compiled(Yg, R)
    torch.testing.assert_close(out, f(Y, R))
    (g,) = torch.autograd.grad(out.sum(), Yg)
    (g_ref,) = torch.autograd.grad(f(Yg, R).sum(), Yg)
    torch.testing.assert_close(g, g_ref)

    class M(torch.nn.Module):
        def forward(self, Y, R):
            return f(Y, R)

    ep = torch.export.export(M(), (Y, R))
    assert any("fastlift.rotate_project" in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(Y, R), f(Y, R))
