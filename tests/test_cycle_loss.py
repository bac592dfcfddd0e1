"""fastlift.ops.cycle_consistency_loss, cycle_reprojection_loss and weighted_cycle_reprojection_loss:
every backend against the pure-torch reference; weights, masks, empty batches and non-finite values."""
import pytest
import torch

from fastlift.ops import available_backends, cycle_consistency_loss, cycle_consistency_loss_reference, cycle_reprojection_loss, \
    cycle_reprojection_loss_reference, lift_to_3d, rotate_project, sample_rotations, weighted_cycle_reprojection_loss
from fastlift.testing import backend_device, backend_params

KERNEL_BACKENDS = backend_params()
CPU = [p for p in KERNEL_BACKENDS if p.id == "cpu"]


def cycle_inputs(n, j=17, seed=0, device="cpu", dtype=torch.float32, weights=False):
    """(x, x_back, Y_rot, Y_relift, R, w) as one cycle step makes them (never zeros)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, j, 2, generator=g, dtype=torch.float64) * 0.1
    Y_rot = lift_to_3d(x, torch.randn(n, j, generator=g, dtype=torch.float64) * 2)
    Y_relift = Y_rot + torch.randn(n, j, 3, generator=g, dtype=torch.float64) * 0.3
    x_back = x + torch.randn(n, j, 2, generator=g, dtype=torch.float64) * 0.02
    R = sample_rotations(n, seed=seed, distribution="haar", dtype=torch.float64)
    w = None
    if weights:
        w = torch.rand(n, j, generator=g, dtype=torch.float64)
        w[w < 0.3] = 0
    cast = lambda t: None if t is None else t.to(dtype=dtype, device=device)  # noqa: E731
    return tuple(cast(t) for t in (x, x_back, Y_rot, Y_relift, R, w))


def _rel_close(got, ref, tol):
    scale = ref.detach().abs().max().clamp_min(1e-30)
    torch.testing.assert_close(got.detach().double().cpu() / scale, ref.detach().double().cpu() / scale, rtol=0,
                               atol=tol)


def sizes(backend):
    return [1, 17, 61] if backend == "triton" else [1, 17, 997, 1023]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("kind", ["mse", "l1"])
@pytest.mark.parametrize("weights", [False, True])
def test_consistency_loss_matches_reference(backend, kind, weights, poisoned):
    device = backend_device(backend)
    for n in sizes(backend):
        x, xb, yr, yl, _, w = cycle_inputs(n, device=device, weights=weights, seed=n)
        leaves = [t.clone().requires_grad_(True) for t in (x, xb, yr, yl)]
        l2, l3 = cycle_consistency_loss(*leaves, weights=w, kind=kind, backend=backend)
        assert l2.shape == () and l3.shape == () and l2.dtype == torch.float32
        grads = torch.autograd.grad(1.3 * l2 + 0.7 * l3, leaves)
        ref_leaves = [t.detach().double().cpu().requires_grad_(True) for t in (x, xb, yr, yl)]
        r2, r3 = cycle_consistency_loss_reference(*ref_leaves, None if w is None else w.double().cpu(), kind)
        ref_grads = torch.autograd.grad(1.3 * r2 + 0.7 * r3, ref_leaves)
        _rel_close(l2, r2, 1e-5)
        _rel_close(l3, r3, 1e-5)
        for g, rg in zip(grads, ref_grads):
            _rel_close(g, rg, 1e-5)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("kind,weights", [("mse", False), ("mse", True), ("l1", True)])
def test_reprojection_loss_matches_reference_and_the_two_ops(backend, renormalize, kind, weights, poisoned):
    """Also checks the gradient to Y_rot and x (all four inputs require grad)."""
    device = backend_device(backend)
    for n in sizes(backend):
        x, _, yr, yl, R, w = cycle_inputs(n, device=device, weights=weights, seed=n + 1)
        leaves = [t.clone().requires_grad_(True) for t in (x, yl, R, yr)]
        l2, l3 = cycle_reprojection_loss(*leaves, weights=w, kind=kind, renormalize=renormalize, backend=backend)
        grads = torch.autograd.grad(1.3 * l2 + 0.7 * l3, leaves)
        ref_leaves = [t.detach().double().cpu().requires_grad_(True) for t in (x, yl, R, yr)]
        r2, r3 = cycle_reprojection_loss_reference(*ref_leaves, None if w is None else w.double().cpu(), kind,
                                                   renormalize=renormalize)
        ref_grads = torch.autograd.grad(1.3 * r2 + 0.7 * r3, ref_leaves)
        _rel_close(l2, r2, 2e-5)
        _rel_close(l3, r3, 2e-5)
        for g, rg in zip(grads, ref_grads):
            _rel_close(g, rg, 2e-5)
    # the fused op is the composition of the two public ops (3D compared root-relative)
    xb, _ = rotate_project(yl, R, transpose=True, renormalize=renormalize, backend=backend)
    c2, c3 = cycle_consistency_loss(x, xb, yr - yr[:, :1], yl - yl[:, :1], weights=w, kind=kind, backend=backend)
    _rel_close(l2, c2, 2e-5)
    _rel_close(l3, c3, 2e-5)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["reference"])
@pytest.mark.parametrize("fused", [False, True])
def test_masked_joints_are_excluded_even_when_nan(backend, fused, poisoned):
    device = backend_device(backend)
    x, xb, yr, yl, R, w = cycle_inputs(13, j=5, device=device, weights=True)
    w[:, 1] = 0  # joint 1 never counts
    x = x.clone()
    yr = yr.clone()
    x[:, 1] = float("nan")  # missing detections with confidence 0
    yr[:, 1] = float("inf")
    leaves = [t.clone().requires_grad_(True) for t in ((x, yl, R, yr) if fused else (x, xb, yr, yl))]
    fn = cycle_reprojection_loss if fused else cycle_consistency_loss
    l2, l3 = fn(*leaves, weights=w, backend=backend)
    assert torch.isfinite(l2) and torch.isfinite(l3)
    grads = torch.autograd.grad(l2 + l3, leaves)
    for g in grads:
        assert torch.isfinite(g).all()
    # and the value equals the loss with joint 1 removed
    keep = [0, 2, 3, 4]
    x2, xb2, yr2, yl2, w2 = x[:, keep], xb[:, keep], yr[:, keep], yl[:, keep], w[:, keep]
    if fused:  # x_back from the rotation; 3D compared root-relative (the root, joint 0, is kept)
        xb2 = rotate_project(yl, R, transpose=True, backend="reference")[0][:, keep]
        yr2, yl2 = yr2 - yr2[:, :1], yl2 - yl2[:, :1]
    r2, r3 = cycle_consistency_loss_reference(x2, xb2, yr2, yl2, w2)
    torch.testing.assert_close(l2, r2, rtol=2e-5, atol=0)
    torch.testing.assert_close(l3, r3, rtol=2e-5, atol=0)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["reference"])
@pytest.mark.parametrize("fused", [False, True])
def test_all_weights_zero_and_empty_batch_give_zero(backend, fused, poisoned):
    device = backend_device(backend)
    for n, zero_w in ((6, True), (0, False)):
        x, xb, yr, yl, R, w = cycle_inputs(n, device=device, weights=True)
        if zero_w:
            w = torch.zeros_like(w)
        else:
            w = None
        leaves = [t.clone().requires_grad_(True) for t in ((x, yl, R, yr) if fused else (x, xb, yr, yl))]
        fn = cycle_reprojection_loss if fused else cycle_consistency_loss
        l2, l3 = fn(*leaves, weights=w, backend=backend)
        assert l2.item() == 0 and l3.item() == 0
        for g in torch.autograd.grad(l2 + l3, leaves, allow_unused=True):
            assert g is None or (g == 0).all()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["reference"])
@pytest.mark.parametrize("fused", [False, True])
def test_non_finite_input_raises_clear_error(backend, fused):
    device = backend_device(backend)
    x, xb, yr, yl, R, w = cycle_inputs(7, device=device)
    yl = yl.clone()
    yl[3, 4, 1] = float("nan")
    args = (x, yl, R, yr) if fused else (x, xb, yr, yl)
    fn = cycle_reprojection_loss if fused else cycle_consistency_loss
    with pytest.raises(RuntimeError, match="loss_3d is nan"):
        fn(*args, backend=backend)
    l2, l3 = fn(*args, check_finite=False, backend=backend)
    assert torch.isnan(l3)


@pytest.mark.parametrize("backend", CPU + ["reference"])
@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_gradcheck_float64(backend, kind):
    x, xb, yr, yl, R, w = cycle_inputs(4, j=6, dtype=torch.float64, weights=True)
    leaves = [t.clone().requires_grad_(True) for t in (x, xb, yr, yl)]
    assert torch.autograd.gradcheck(lambda *t: cycle_consistency_loss(*t, weights=w, kind=kind, backend=backend),
                                    leaves)
    leaves = [t.clone().requires_grad_(True) for t in (x, yl, R, yr)]
    for renorm in (False, True):
        assert torch.autograd.gradcheck(
            lambda *t: cycle_reprojection_loss(*t, weights=w, kind=kind, root=0, head=5, renormalize=renorm,
                                               backend=backend), leaves)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_non_contiguous_inputs(backend, poisoned):
    device = backend_device(backend)
    x, xb, yr, yl, R, w = cycle_inputs(30, device=device, weights=True)
    nc = lambda t: t[::2]  # noqa: E731
    l2, l3 = cycle_consistency_loss(nc(x), nc(xb), nc(yr), nc(yl), weights=w[::2], backend=backend)
    r2, r3 = cycle_consistency_loss_reference(nc(x), nc(xb), nc(yr), nc(yl), w[::2])
    torch.testing.assert_close((l2, l3), (r2, r3), rtol=1e-5, atol=0)
    l2, l3 = cycle_reprojection_loss(nc(x), nc(yl), R[::2].mT, nc(yr), backend=backend)
    r2, r3 = cycle_reprojection_loss_reference(nc(x), nc(yl), R[::2].mT, nc(yr))
    torch.testing.assert_close((l2, l3), (r2, r3), rtol=1e-5, atol=0)


def test_deterministic_across_thread_counts():
    if not available_backends()["cpu"].available:
        pytest.skip("no cpu backend")
    x, xb, yr, yl, R, w = cycle_inputs(3001)
    prev = torch.get_num_threads()
    try:
        outs = []
        for t in (1, 2):
            torch.set_num_threads(t)
            outs.append(cycle_consistency_loss(x, xb, yr, yl, backend="cpu")
                        + cycle_reprojection_loss(x, yl, R, yr, backend="cpu"))
    finally:
        torch.set_num_threads(prev)
    assert all(torch.equal(a, b) for a, b in zip(*outs))


@pytest.mark.parametrize(
    "shapes,kwargs,exc,match",
    [
        (((4, 17, 2), (4, 17, 2), (4, 17, 3), (4, 16, 3)), {}, ValueError, "Y_relift must have shape"),
        (((4, 17, 3), (4, 17, 2), (4, 17, 3), (4, 17, 3)), {}, ValueError, r"x must have shape \(N, J, 2\)"),
        (((4, 17, 2), (4, 17, 2), (4, 17, 3), (4, 17, 3)), dict(kind="huber"), ValueError, "kind must be"),
        (((4, 17, 2), (4, 17, 2), (4, 17, 3), (4, 17, 3)), dict(weights=torch.ones(4, 16)), ValueError,
         "weights must have shape"),
        (((4, 17, 2), (4, 17, 2), (4, 17, 3), (4, 17, 3)), dict(backend="gpu"), ValueError, "unknown backend"),
    ],
)
def test_bad_input_gives_clear_error(shapes, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cycle_consistency_loss(*(torch.randn(s) for s in shapes), **kwargs)


def test_bad_input_fused():
    x, xb, yr, yl, R, w = cycle_inputs(4)
    with pytest.raises(ValueError, match="R must have shape"):
        cycle_reprojection_loss(x, yl, R[:3], yr)
    with pytest.raises(TypeError, match="floating-point"):
        cycle_reprojection_loss(x.int(), yl, R, yr)
    with pytest.raises(ValueError, match="one device"):
        cycle_reprojection_loss(x, yl, R, yr.to("meta"))
    with pytest.raises(ValueError, match="root=17"):
        cycle_reprojection_loss(x, yl, R, yr, root=17)


@pytest.mark.parametrize("backend", [p for p in KERNEL_BACKENDS if p.id != "cuda"])
def test_opcheck(backend):
    x, xb, yr, yl, R, w = cycle_inputs(5, weights=True)
    leaves = [t.clone().requires_grad_(True) for t in (x, xb, yr, yl)]
    for ww, l1 in ((None, False), (w, True)):
        torch.library.opcheck(torch.ops.fastlift.cycle_loss.default, (*leaves, ww, l1, True, backend))
    leaves = [t.clone().requires_grad_(True) for t in (x, yl, R, yr)]
    for ww, renorm in ((None, False), (w, True)):
        torch.library.opcheck(torch.ops.fastlift.cycle_reprojection_loss.default,
                              (*leaves, ww, False, 10.0, 0, True, 1.0, renorm, 10, 1e-6, True, backend))


@pytest.mark.parametrize("backend", CPU)
def test_compile_and_export_trace_without_graph_breaks(backend):
    x, xb, yr, yl, R, w = cycle_inputs(11, weights=True)

    def f(x, yl, R, yr, w):
        a2, a3 = cycle_consistency_loss(x, rotate_project(yl, R, transpose=True, backend=backend)[0], yr, yl,
                                        weights=w, backend=backend)
        b2, b3 = cycle_reprojection_loss(x, yl, R, yr, weights=w, backend=backend)
        return a2 + a3 + b2 + b3

    torch._dynamo.reset()
    explain = torch._dynamo.explain(f)(x, yl, R, yr, w)
    assert explain.graph_break_count == 0, explain.break_reasons
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    ylg = yl.clone().requires_grad_(True)
    out = compiled(x, ylg, R, yr, w)
    torch.testing.assert_close(out, f(x, yl, R, yr, w))
    (g,) = torch.autograd.grad(out, ylg)
    (g_ref,) = torch.autograd.grad(f(x, ylg, R, yr, w), ylg)
    torch.testing.assert_close(g, g_ref)

    class M(torch.nn.Module):
        def forward(self, x, yl, R, yr, w):
            return f(x, yl, R, yr, w)

    ep = torch.export.export(M(), (x, yl, R, yr, w))
    targets = {str(n.target) for n in ep.graph.nodes}
    assert any("fastlift.cycle_loss" in t for t in targets)
    assert any("fastlift.cycle_reprojection_loss" in t for t in targets)
    torch.testing.assert_close(ep.module()(x, yl, R, yr, w), f(x, yl, R, yr, w))


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("renormalize", [False, True])
def test_large_batches_take_the_streaming_store_path(backend, renormalize, poisoned):
    """Outputs of 8 MiB and more are written with non-temporal stores (the C++ lanes path): the
    same numbers as the reference, every element written (poisoned allocations), an odd batch so
    the scalar tail after the last full block is covered too."""
    n = 40009  # backward of the fused loss writes (51 + 9 + 51 + 34) floats per pose: 23 MB
    x, _, yr, yl, R, w = cycle_inputs(n, seed=5, weights=True)
    leaves = [t.clone().requires_grad_(True) for t in (x, yl, R, yr)]
    l2, l3 = cycle_reprojection_loss(*leaves, weights=w, renormalize=renormalize, backend="cpu")
    grads = torch.autograd.grad(1.3 * l2 + 0.7 * l3, leaves)
    ref_leaves = [t.detach().double().requires_grad_(True) for t in (x, yl, R, yr)]
    r2, r3 = cycle_reprojection_loss_reference(*ref_leaves, w.double(), renormalize=renormalize)
    ref_grads = torch.autograd.grad(1.3 * r2 + 0.7 * r3, ref_leaves)
    _rel_close(l2, r2, 2e-5)
    _rel_close(l3, r3, 2e-5)
    for g, rg in zip(grads, ref_grads):
        assert torch.isfinite(g).all()
        _rel_close(g, rg, 2e-5)
    # rotate_project alone: forward (x2d, Y_rot: 85 floats per pose) and backward (gY, gR: 60)
    Yg = yl.clone().requires_grad_(True)
    Rg = R.clone().requires_grad_(True)
    x2d, yrot = rotate_project(Yg, Rg, renormalize=renormalize, backend="cpu")
    gx = torch.randn_like(x2d)
    gy = torch.randn_like(yrot)
    got = torch.autograd.grad((x2d * gx).sum() + (yrot * gy).sum(), (Yg, Rg))
    Yd, Rd = yl.double().requires_grad_(True), R.double().requires_grad_(True)
    from fastlift.ops import rotate_project_reference
    xr, yrr = rotate_project_reference(Yd, Rd, renormalize=renormalize)
    ref = torch.autograd.grad((xr * gx.double()).sum() + (yrr * gy.double()).sum(), (Yd, Rd))
    _rel_close(x2d, xr, 2e-5)
    _rel_close(yrot, yrr, 2e-5)
    for g, rg in zip(got, ref):
        _rel_close(g, rg, 2e-5)


# ------------------------------------------------------------------------------------------------
# weighted_cycle_reprojection_loss: w_2d loss_2d + w_3d loss_3d with the gradient computed in the
# forward (one pass over the data on the cpu backend). The backward's incoming scalar is 1 (the
# stored gradients handed over) or not (scaled).

W2, W3 = 10.0, 30.0  # the default recipe's loss weights


def weighted_reference(x, yl, R, yr, w, kind="mse", renormalize=False, scale=1.0, w2=W2, w3=W3):
    """(loss, l2, l3, grads of scale * loss to (x, yl, R, yr)) in float64 through autograd."""
    leaves = [t.detach().double().cpu().requires_grad_(True) for t in (x, yl, R, yr)]
    r2, r3 = cycle_reprojection_loss_reference(*leaves, None if w is None else w.double().cpu(), kind,
                                               renormalize=renormalize)
    loss = w2 * r2 + w3 * r3
    return (loss, r2, r3) + tuple(torch.autograd.grad(scale * loss, leaves))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["reference"])
@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("kind,weights", [("mse", False), ("mse", True), ("l1", True)])
@pytest.mark.parametrize("scale", [1.0, -2.5])
def test_weighted_matches_reference(backend, renormalize, kind, weights, scale, poisoned):
    device = backend_device(backend)
    for n in sizes(backend):
        x, _, yr, yl, R, w = cycle_inputs(n, device=device, weights=weights, seed=n + 3)
        leaves = [t.clone().requires_grad_(True) for t in (x, yl, R, yr)]
        loss, l2, l3 = weighted_cycle_reprojection_loss(*leaves, W2, W3, weights=w, kind=kind,
                                                        renormalize=renormalize, backend=backend)
        assert loss.shape == l2.shape == l3.shape == () and loss.dtype == torch.float32
        assert loss.requires_grad and not l2.requires_grad and not l3.requires_grad
        grads = torch.autograd.grad(scale * loss, leaves)
        ref = weighted_reference(x, yl, R, yr, w, kind, renormalize, scale)
        for got, want in zip((loss, l2, l3) + grads, ref):
            assert torch.isfinite(got).all()
            _rel_close(got, want, 2e-5)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_weighted_only_the_inputs_that_require_grad_get_one(backend, poisoned):
    device = backend_device(backend)
    x, _, yr, yl, R, w = cycle_inputs(29, device=device, weights=True)
    ylg, Rg = yl.clone().requires_grad_(True), R.clone().requires_grad_(True)
    loss, _, _ = weighted_cycle_reprojection_loss(x, ylg, Rg, yr, W2, W3, weights=w, renormalize=True,
                                                  backend=backend)
    loss.backward()
    ref = weighted_reference(x, yl, R, yr, w, renormalize=True)
    _rel_close(ylg.grad, ref[4], 2e-5)
    _rel_close(Rg.grad, ref[5], 2e-5)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["reference"])
def test_weighted_without_grad_is_the_weighted_forward(backend):
    device = backend_device(backend)
    x, _, yr, yl, R, w = cycle_inputs(31, device=device, weights=True)
    with torch.no_grad():
        loss, l2, l3 = weighted_cycle_reprojection_loss(x, yl, R, yr, W2, W3, weights=w, backend=backend)
    r2, r3 = cycle_reprojection_loss(x, yl, R, yr, weights=w, backend=backend)
    torch.testing.assert_close((l2, l3), (r2, r3), rtol=1e-6, atol=0)
    torch.testing.assert_close(loss, W2 * r2 + W3 * r3, rtol=1e-6, atol=0)


@pytest.mark.parametrize("backend", CPU)
def test_weighted_backward_twice_and_grad_accumulation(backend):
    """The stored gradients are handed over as they are when the incoming gradient is 1: a retained
    graph's second backward and .grad accumulation must still see the original values."""
    x, _, yr, yl, R, w = cycle_inputs(40, weights=True)
    ylg = yl.clone().requires_grad_(True)
    loss, _, _ = weighted_cycle_reprojection_loss(x, ylg, R, yr, W2, W3, weights=w, backend=backend)
    loss.backward(retain_graph=True)
    first = ylg.grad.clone()
    loss.backward(retain_graph=True)
    torch.testing.assert_close(ylg.grad, 2 * first)
    (g,) = torch.autograd.grad(loss, ylg)
    torch.testing.assert_close(g, first)
    _rel_close(first, weighted_reference(x, yl, R, yr, w)[4], 2e-5)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["reference"])
def test_weighted_masked_nan_joints_all_zero_weights_and_empty_batch(backend, poisoned):
    device = backend_device(backend)
    x, _, yr, yl, R, w = cycle_inputs(13, j=5, device=device, weights=True)
    w[:, 1] = 0
    x, yr = x.clone(), yr.clone()
    x[:, 1] = float("nan")
    yr[:, 1] = float("inf")
    leaves = [t.clone().requires_grad_(True) for t in (x, yl, R, yr)]
    loss, l2, l3 = weighted_cycle_reprojection_loss(*leaves, W2, W3, weights=w, root=0, head=4, backend=backend)
    r2, r3 = cycle_reprojection_loss(*(t.detach() for t in leaves), weights=w, root=0, head=4, backend="reference")
    torch.testing.assert_close((l2, l3), (r2, r3), rtol=2e-5, atol=0)
    for g in torch.autograd.grad(loss, leaves):
        assert torch.isfinite(g).all()
    for n, zero_w in ((6, True), (0, False)):
        x, _, yr, yl, R, w = cycle_inputs(n, device=device, weights=True)
        w = torch.zeros_like(w) if zero_w else None
        leaves = [t.clone().requires_grad_(True) for t in (x, yl, R, yr)]
        loss, l2, l3 = weighted_cycle_reprojection_loss(*leaves, W2, W3, weights=w, backend=backend)
        assert loss.item() == 0 and l2.item() == 0 and l3.item() == 0
        for g in torch.autograd.grad(loss, leaves, allow_unused=True):
            assert g is None or (g == 0).all()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["reference"])
def test_weighted_non_finite_input_raises_clear_error(backend):
    device = backend_device(backend)
    x, _, yr, yl, R, _ = cycle_inputs(7, device=device)
    yl = yl.clone()
    yl[3, 4, 1] = float("nan")
    ylg = yl.requires_grad_(True)
    with pytest.raises(RuntimeError, match="loss_3d is nan"):
        weighted_cycle_reprojection_loss(x, ylg, R, yr, backend=backend)
    loss, _, l3 = weighted_cycle_reprojection_loss(x, ylg, R, yr, check_finite=False, backend=backend)
    assert torch.isnan(l3) and torch.isnan(loss)


@pytest.mark.parametrize("backend", CPU + ["reference"])
@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_weighted_gradcheck_float64(backend, kind):
    x, _, yr, yl, R, w = cycle_inputs(4, j=6, dtype=torch.float64, weights=True)
    leaves = [t.clone().requires_grad_(True) for t in (x, yl, R, yr)]
    for renorm in (False, True):
        assert torch.autograd.gradcheck(
            lambda *t: weighted_cycle_reprojection_loss(*t, 0.7, 1.9, weights=w, kind=kind, root=0, head=5,
                                                        renormalize=renorm, backend=backend)[0], leaves)


@pytest.mark.parametrize("backend", CPU)
def test_weighted_deterministic_across_thread_counts(backend):
    x, _, yr, yl, R, w = cycle_inputs(3001, weights=True)
    prev = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            leaves = [v.clone().requires_grad_(True) for v in (yl, R, yr)]
            loss, l2, l3 = weighted_cycle_reprojection_loss(x, *leaves[:2], leaves[2], W2, W3, weights=w,
                                                            renormalize=True, backend=backend)
            outs.append((loss, l2, l3) + torch.autograd.grad(loss, leaves))
    finally:
        torch.set_num_threads(prev)
    assert all(torch.equal(a, b) for a, b in zip(*outs))


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("renormalize", [False, True])
def test_weighted_large_batch_streams_its_gradients(backend, renormalize, poisoned):
    """40009 poses: the gradients (8.6 MB and more) are written with non-temporal stores."""
    x, _, yr, yl, R, w = cycle_inputs(40009, seed=9, weights=True)
    leaves = [t.clone().requires_grad_(True) for t in (x, yl, R, yr)]
    loss, l2, l3 = weighted_cycle_reprojection_loss(*leaves, W2, W3, weights=w, renormalize=renormalize,
                                                    backend=backend)
    grads = torch.autograd.grad(loss, leaves)
    for got, want in zip((loss, l2, l3) + grads, weighted_reference(x, yl, R, yr, w, renormalize=renormalize)):
        _rel_close(got, want, 5e-5)  # float32 against float64 over 2 M elements: the worst lies near 2.6e-5


def test_weighted_bad_input_gives_clear_error():
    x, _, yr, yl, R, w = cycle_inputs(4)
    ylg = yl.clone().requires_grad_(True)
    with pytest.raises(TypeError, match="w_2d must be a finite Python number"):
        weighted_cycle_reprojection_loss(x, ylg, R, yr, torch.tensor(1.0))
    with pytest.raises(TypeError, match="w_3d must be a finite Python number"):
        weighted_cycle_reprojection_loss(x, ylg, R, yr, 1.0, float("nan"))
    with pytest.raises(ValueError, match="R must have shape"):
        weighted_cycle_reprojection_loss(x, ylg, R[:3], yr)
    with pytest.raises(ValueError, match="root=17"):
        weighted_cycle_reprojection_loss(x, ylg, R, yr, root=17)
    with pytest.raises(ValueError, match="weights must have shape"):
        weighted_cycle_reprojection_loss(x, ylg, R, yr, weights=torch.ones(4, 16))
    with pytest.raises(ValueError, match="x must be a"):
        weighted_cycle_reprojection_loss(x[..., :1], ylg, R, yr)


@pytest.mark.parametrize("backend", [p for p in KERNEL_BACKENDS if p.id != "cuda"])
def test_weighted_opcheck(backend):
    x, _, yr, yl, R, w = cycle_inputs(5, weights=True)
    leaves = [t.clone().requires_grad_(True) for t in (x, yl, R, yr)]
    for ww, renorm, need in ((None, False, True), (w, True, False)):
        torch.library.opcheck(torch.ops.fastlift.weighted_cycle_reprojection_loss.default,
                              (*leaves, ww, False, 10.0, 0, True, 1.0, renorm, 10, 1e-6, W2, W3, need, need, True,
                               backend))


@pytest.mark.parametrize("backend", CPU)
def test_weighted_compile_and_export_trace_without_graph_breaks(backend):
    x, _, yr, yl, R, w = cycle_inputs(11, weights=True)

    def f(x, yl, R, yr, w):
        return weighted_cycle_reprojection_loss(x, yl, R, yr, W2, W3, weights=w, renormalize=True,
                                                backend=backend)[0]

    torch._dynamo.reset()
    explain = torch._dynamo.explain(f)(x, yl.clone().requires_grad_(True), R, yr, w)
    assert explain.graph_break_count == 0, explain.break_reasons
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    ylg = yl.clone().requires_grad_(True)
    out = compiled(x, ylg, R, yr, w)
    (g,) = torch.autograd.grad(3 * out, ylg)
    ylr = yl.clone().requires_grad_(True)
    ref = f(x, ylr, R, yr, w)
    (g_ref,) = torch.autograd.grad(3 * ref, ylr)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(g, g_ref)

    class M(torch.nn.Module):
        def forward(self, x, yl, R, yr, w):
            with torch.enable_grad():
                return f(x, yl.requires_grad_(True), R, yr, w)

    ep = torch.export.export(M(), (x, yl.clone(), R, yr, w))
    targets = {str(n.target) for n in ep.graph.nodes}
    assert any("fastlift.weighted_cycle_reprojection_loss" in t for t in targets), targets
    torch.testing.assert_close(ep.module()(x, yl.clone(), R, yr, w), ref.detach())


def test_weighted_cpu_kernel_is_registered():
    if not available_backends()["cpu"].available:
        pytest.skip("the compiled extension is not built")
    assert hasattr(torch.ops.fastlift_C, "cycle_reproject_loss_forward_grad")
