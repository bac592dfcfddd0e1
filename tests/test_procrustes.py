"""fastlift.ops.procrustes_align: every backend against the float64 torch.linalg.svd reference,
the hand-written backward against autograd through the SVD, degenerate inputs, properties."""
import math

import pytest
import torch

from fastlift.ops import available_backends
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlift.ops import procrustes_align, procrustes_align_reference
from fastlift.testing import backend_device, backend_params

KERNEL_BACKENDS = backend_params()
CPU = [p for p in KERNEL_BACKENDS if p.id == "cpu"]
NOT_CUDA = [p for p in KERNEL_BACKENDS if p.id != "cuda"]

# Sizes per backend: the Triton interpreter is slow, keep its batches small.
SIZES = {"cpu": [1, 2, 17, 31, 1023, 4099], "triton": [1, 17, 97], "cuda": [1, 17, 1023, 65537]}


def _flat(out):
    return (out.aligned, out.transform.R, out.transform.s, out.transform.t)


def random_rotations(n, g, dtype=torch.float64):
    q = torch.randn(n, 4, generator=g, dtype=dtype)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1).reshape(n, 3, 3)


def pose_pairs(kind, n, j=17, seed=0):
    """(pred, target) float64 pairs of a named family, in mm around a camera-frame offset."""
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, j, 3, generator=g, dtype=torch.float64) * 300
    if kind == "near_planar":
        p[..., 2] *= 1e-3
    elif kind == "near_collinear":
        p[..., 1:] *= 1e-2
    elif kind == "near_degenerate":  # spread 1 % of the distance to the origin
        p = p * 1e-2
    R = random_rotations(n, g)
    s = torch.rand(n, 1, 1, generator=g, dtype=torch.float64) * 2 + 0.5
    q = s * p @ R.transpose(1, 2) + torch.randn(n, 1, 3, generator=g, dtype=torch.float64) * 100
    q = q + torch.randn(n, j, 3, generator=g, dtype=torch.float64) * 30  # not an exact fit
    if kind == "reflection":
        q = q * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    offset = torch.tensor([0.0, 0.0, 5000.0], dtype=torch.float64)
    return p + offset, q + offset


def condition(pred, target, allow_reflection=False):
    """kappa = sig_1 / (sig_2 + sig_3): the sensitivity of the rotation (float64)."""
    p = pred - pred.mean(1, keepdim=True)
    q = target - target.mean(1, keepdim=True)
    M = q.transpose(1, 2) @ p
    U, S, Vh = torch.linalg.svd(M)
    d = torch.ones_like(S[:, 2]) if allow_reflection else torch.sign(torch.linalg.det(U @ Vh))
    return S[:, 0] / (S[:, 1] + d * S[:, 2]).clamp_min(1e-300)


def assert_aligned_close(aligned, pred, target, rtol=1e-4, allow_reflection=False, **kw):
    """aligned vs the float64 reference, relative to each target's spread; the tolerance of a pose
    grows with its rotation's condition number (the float32 error bound of a stable algorithm)."""
    p, q = pred.double().cpu(), target.double().cpu()
    ref = procrustes_align_reference(p, q, allow_reflection=allow_reflection, **kw).aligned
    spread = (q - q.mean(1, keepdim=True)).square().sum(-1).mean(1).sqrt().clamp_min(1e-12)
    err = (aligned.double().cpu() - ref).norm(dim=-1).amax(1) / spread
    tol = torch.maximum(torch.full_like(err, rtol), 1e-5 * condition(p, q, allow_reflection))
    bad = err > tol
    assert not bad.any(), f"poses {bad.nonzero()[:5, 0].tolist()}: rel err {err[bad][:5].tolist()} > {tol[bad][:5].tolist()}"


# ---------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("kind", ["random", "reflection", "near_planar", "near_collinear", "near_degenerate"])
def test_forward_float32_matches_float64_reference(backend, kind, poisoned):
    n = 97 if backend == "triton" else 2000
    p, q = pose_pairs(kind, n)
    dev = backend_device(backend)
    out = procrustes_align(p.float().to(dev), q.float().to(dev), backend=backend)
    assert out.aligned.dtype == torch.float32 and out.aligned.shape == (n, 17, 3)
    assert_aligned_close(out.aligned, p.float(), q.float())
    R = out.transform.R.double().cpu()
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(n, 3, 3), atol=1e-5, rtol=0)
    assert (torch.linalg.det(R) > 0.999).all()
    # the transform reproduces the aligned points
    torch.testing.assert_close(out.transform.apply(p.float().to(dev)).cpu(), out.aligned.cpu(), rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("kwargs", [dict(), dict(scale=False), dict(allow_reflection=True),
                                    dict(allow_reflection=True, scale=False)], ids=str)
def test_all_outputs_match_reference_float64(backend, kwargs, poisoned):
    for n in SIZES[backend]:
        p, q = pose_pairs("reflection" if n % 2 else "random", n, j=17, seed=n)
        dev = backend_device(backend)
        out = procrustes_align(p.to(dev), q.to(dev), backend=backend, **kwargs)
        ref = procrustes_align_reference(p, q, **kwargs)
        for a, b, name in zip(_flat(out), _flat(ref), ("aligned", "R", "s", "t")):
            assert a.dtype == torch.float64, name
            torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-8, msg=f"{name} N={n}")
        if kwargs.get("allow_reflection") and n % 2 and n > 1:
            assert (torch.linalg.det(out.transform.R.cpu()) < 0).any()  # mirrored targets are undone


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("j", [1, 2, 3, 5, 16, 31, 33])
def test_joint_counts(backend, j, poisoned):
    p, q = pose_pairs("random", 13, j=j, seed=j)
    dev = backend_device(backend)
    out = procrustes_align(p.float().to(dev), q.float().to(dev), backend=backend)
    assert out.aligned.shape == (13, j, 3)
    assert torch.isfinite(out.aligned).all()
    if j >= 3:
        assert_aligned_close(out.aligned, p.float(), q.float())
    if j == 1:  # a single point: R = I, s = 0, aligned = target
        torch.testing.assert_close(out.transform.R.cpu(), torch.eye(3).expand(13, 3, 3))
        assert (out.transform.s == 0).all()
        torch.testing.assert_close(out.aligned.cpu(), q.float(), rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_weights(backend, poisoned):
    dev = backend_device(backend)
    p, q = pose_pairs("random", 23, j=17, seed=3)
    g = torch.Generator().manual_seed(0)
    w = torch.rand(23, 17, generator=g, dtype=torch.float64)
    w[:, 5] = 0
    out = procrustes_align(p.to(dev), q.to(dev), weights=w.to(dev), backend=backend)
    ref = procrustes_align_reference(p, q, weights=w)
    for a, b in zip(_flat(out), _flat(ref)):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-8)
    # a zero weight drops the joint from the fit (but it is still transformed)
    keep = [i for i in range(17) if i != 5]
    sub = procrustes_align(p[:, keep].to(dev), q[:, keep].to(dev), weights=w[:, keep].to(dev), backend=backend)
    torch.testing.assert_close(sub.transform.R, out.transform.R)
    torch.testing.assert_close(sub.aligned, out.aligned[:, keep])
    # shared (J,) weights equal the expanded (N, J) ones; a bool mask works
    w1 = w[0]
    a = procrustes_align(p.to(dev), q.to(dev), weights=w1.to(dev), backend=backend)
    b = procrustes_align(p.to(dev), q.to(dev), weights=w1.expand(23, 17).to(dev), backend=backend)
    torch.testing.assert_close(a.aligned, b.aligned)
    mask = w1 > 0.3
    c = procrustes_align(p.to(dev), q.to(dev), weights=mask.to(dev), backend=backend)
    d = procrustes_align_reference(p, q, weights=mask.double())
    torch.testing.assert_close(c.aligned.cpu(), d.aligned)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_non_contiguous_and_empty(backend, poisoned):
    dev = backend_device(backend)
    p, q = pose_pairs("random", 40, seed=5)
    p, q = p.float().to(dev), q.float().to(dev)
    pv, qv = p[::3], q.transpose(0, 1).contiguous().transpose(0, 1)[::3]
    assert not pv.is_contiguous() and not qv.is_contiguous()
    out = procrustes_align(pv, qv, backend=backend)
    ref = procrustes_align(pv.contiguous(), qv.contiguous(), backend=backend)
    torch.testing.assert_close(out.aligned, ref.aligned)
    e = procrustes_align(p[:0], q[:0], backend=backend)
    assert e.aligned.shape == (0, 17, 3) and e.transform.R.shape == (0, 3, 3)
    assert e.transform.s.shape == (0,) and e.transform.t.shape == (0, 3)
    pe = p[:0].clone().requires_grad_(True)
    out = procrustes_align(pe, q[:0], backend=backend)
    (gp,) = torch.autograd.grad(out.aligned.sum(), pe)
    assert gp.shape == (0, 17, 3)


@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_instruction_set_paths_agree(isa, dtype, monkeypatch, poisoned):
    if not available_backends()["cpu"].available:
        pytest.skip("cpu backend unavailable")
    p, q = pose_pairs("reflection", 101, seed=11)
    p, q = p.to(dtype), q.to(dtype)
    w = torch.rand(101, 17, generator=torch.Generator().manual_seed(1), dtype=dtype)
    monkeypatch.setenv("FASTLIFT_CPU_ISA", isa)
    pr, qr = p.clone().requires_grad_(True), q.clone().requires_grad_(True)
    out = procrustes_align(pr, qr, weights=w, backend="cpu")
    gs = [torch.ones_like(t) for t in _flat(out)]
    grads = torch.autograd.grad(_flat(out), (pr, qr), gs)
    monkeypatch.delenv("FASTLIFT_CPU_ISA")
    ref = procrustes_align(pr, qr, weights=w, backend="cpu")
    grads_ref = torch.autograd.grad(_flat(ref), (pr, qr), gs)
    tol = dict(rtol=1e-4, atol=1e-2) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-8)
    for a, b in zip(_flat(out) + grads, _flat(ref) + grads_ref):
        torch.testing.assert_close(a, b, **tol)


# ---------------------------------------------------------------------------------------- degenerate
def _degenerate_sets(dtype=torch.float64):
    g = torch.Generator().manual_seed(2)
    base = torch.randn(17, 3, generator=g, dtype=dtype)
    line = torch.linspace(-1, 1, 17, dtype=dtype)[:, None] * torch.tensor([1.0, 2.0, -0.5], dtype=dtype)
    plane = torch.cat([torch.randn(17, 2, generator=g, dtype=dtype), torch.zeros(17, 1, dtype=dtype)], 1)
    octa = torch.cat([torch.eye(3, dtype=dtype), -torch.eye(3, dtype=dtype)])
    octa = torch.cat([octa, torch.zeros(11, 3, dtype=dtype)])  # isotropic: sig_1 = sig_2 = sig_3
    mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=dtype)
    return {
        "all_equal": (torch.ones(17, 3, dtype=dtype) * 3, base),
        "zero_target": (base, torch.zeros(17, 3, dtype=dtype)),
        "both_zero": (torch.zeros(17, 3, dtype=dtype), torch.zeros(17, 3, dtype=dtype)),
        "collinear_pred": (line, base),
        "collinear_both": (line, 2 * line + 1),
        "coplanar": (plane, plane @ random_rotations(1, g, dtype)[0].T + 4),
        "mirrored_copy": (base, base * mirror),
        "isotropic": (octa, octa @ random_rotations(1, g, dtype)[0].T),
        "isotropic_mirrored": (octa, octa * mirror),  # sig_2 + sig_3 = 0: rotation not unique
        "identical": (base, base.clone()),
    }


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["reference"])
@pytest.mark.parametrize("case", list(_degenerate_sets()))
def test_degenerate_inputs_are_finite(backend, case, poisoned):
    dev = backend_device(backend) if backend != "reference" else "cpu"
    for dtype in (torch.float32, torch.float64):
        p0, q0 = _degenerate_sets(dtype)[case]
        p = p0[None].to(dev).requires_grad_(True)
        q = q0[None].to(dev).requires_grad_(True)
        out = procrustes_align(p, q, backend=backend)
        for t in _flat(out):
            assert torch.isfinite(t).all(), case
        R = out.transform.R[0].double().cpu()
        torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
        assert torch.linalg.det(R) > 0.999
        if case in ("all_equal", "zero_target", "both_zero"):  # undetermined: identity rotation
            torch.testing.assert_close(R, torch.eye(3, dtype=torch.float64))
        if case in ("all_equal", "both_zero"):  # collapsed prediction: onto the target centroid
            assert out.transform.s.item() == 0
            torch.testing.assert_close(out.aligned[0].cpu(), q0.mean(0).expand(17, 3).to(out.aligned.dtype),
                                       rtol=1e-5, atol=1e-5)
        if case in ("identical", "isotropic", "coplanar", "collinear_both"):  # exact fits
            torch.testing.assert_close(out.aligned[0].detach().cpu().double(), q0.double(), rtol=1e-4, atol=1e-4)
        if backend == "reference":
            continue  # autograd through the SVD is NaN where singular values repeat
        grads = torch.autograd.grad([t.sum() for t in _flat(out)], (p, q))
        for gt in grads:
            assert torch.isfinite(gt).all(), case


# ---------------------------------------------------------------------------------------- backward
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("kwargs", [dict(), dict(scale=False), dict(allow_reflection=True), dict(weights=True)], ids=str)
def test_backward_matches_autograd_through_svd(backend, kwargs, poisoned):
    dev = backend_device(backend)
    n = 29
    p, q = pose_pairs("reflection", n, seed=7)
    p[::2], q[::2] = pose_pairs("random", n, seed=8)[0][::2], pose_pairs("random", n, seed=8)[1][::2]
    p, q = p / 300, q / 300
    kw = dict(kwargs)
    if kw.pop("weights", False):
        kw["weights"] = torch.rand(n, 17, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    g = torch.Generator().manual_seed(9)
    gouts = [torch.randn(n, 17, 3, generator=g, dtype=torch.float64), torch.randn(n, 3, 3, generator=g, dtype=torch.float64),
             torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, 3, generator=g, dtype=torch.float64)]
    keep = [0, 1, 3] if kw.get("scale") is False else [0, 1, 2, 3]  # s is constant without scale
    pr, qr = p.clone().requires_grad_(True), q.clone().requires_grad_(True)
    ref = _flat(procrustes_align_reference(pr, qr, **kw))
    gref = torch.autograd.grad([ref[i] for i in keep], (pr, qr), [gouts[i] for i in keep])
    for dtype, tol in ((torch.float64, dict(rtol=1e-7, atol=1e-8)), (torch.float32, dict(rtol=1e-3, atol=2e-3))):
        pk = p.to(dtype).to(dev).requires_grad_(True)
        qk = q.to(dtype).to(dev).requires_grad_(True)
        kwk = {k: (v.to(dtype).to(dev) if torch.is_tensor(v) else v) for k, v in kw.items()}
        out = _flat(procrustes_align(pk, qk, backend=backend, **kwk))
        got = torch.autograd.grad([out[i] for i in keep], (pk, qk), [gouts[i].to(dtype).to(dev) for i in keep])
        for a, b in zip(got, gref):
            torch.testing.assert_close(a.double().cpu(), b, **tol)


@pytest.mark.parametrize(
    "backend,kwargs",
    [pytest.param(b.values[0], kw, marks=b.marks, id=f"{b.id}-{kw}") for b in CPU
     for kw in (dict(), dict(allow_reflection=True), dict(scale=False, weights=True))])
def test_gradcheck_float64(backend, kwargs):
    p, q = pose_pairs("reflection", 4, j=6, seed=12)
    p, q = (p / 300).requires_grad_(True), (q / 300).requires_grad_(True)
    kw = dict(kwargs)
    if kw.pop("weights", False):
        kw["weights"] = torch.rand(4, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def f(a, b):
        out = procrustes_align(a, b, backend=backend, **kw)
        return (out.aligned, out.transform.R, out.transform.t) + ((out.transform.s,) if kw.get("scale", True) else ())

    assert torch.autograd.gradcheck(f, (p, q))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_gradients_of_unused_outputs_and_single_output(backend, poisoned):
    dev = backend_device(backend)
    p, q = pose_pairs("random", 5, seed=13)
    p, q = (p / 300).to(dev).requires_grad_(True), (q / 300).to(dev)
    out = procrustes_align(p, q, backend=backend)
    (g1,) = torch.autograd.grad(out.transform.s.sum(), p)  # only s used
    pr = p.detach().cpu().requires_grad_(True)
    ref = procrustes_align_reference(pr, q.cpu())
    (g2,) = torch.autograd.grad(ref.transform.s.sum(), pr)
    torch.testing.assert_close(g1.cpu(), g2)


# ---------------------------------------------------------------------------------------- properties
_settings = settings(max_examples=25, deadline=None, derandomize=True)


@st.composite
def _similarity_case(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    j = draw(st.integers(3, 24))
    scale = draw(st.floats(0.05, 20.0))
    shift = draw(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3))
    return seed, j, scale, shift


@pytest.mark.parametrize("backend", CPU)
@_settings
@given(case=_similarity_case())
def test_invariance_under_similarity_of_pred(backend, case):
    seed, j, scale, shift = case
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(4, j, 3, generator=g, dtype=torch.float64)
    q = torch.randn(4, j, 3, generator=g, dtype=torch.float64)
    R0 = random_rotations(4, g)
    p2 = scale * p @ R0.transpose(1, 2) + torch.tensor(shift, dtype=torch.float64)
    a = procrustes_align(p, q, backend=backend)
    b = procrustes_align(p2, q, backend=backend)
    torch.testing.assert_close(a.aligned, b.aligned, rtol=1e-7, atol=1e-7 * (1 + max(abs(x) for x in shift)))
    for out in (a, b):
        R = out.transform.R
        torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(4, 3, 3), rtol=0, atol=1e-12)
        assert (torch.linalg.det(R) > 0).all()
        torch.testing.assert_close(out.transform.apply(p if out is a else p2), out.aligned, rtol=1e-9, atol=1e-7)
    # float32: same up to float32 rounding
    c = procrustes_align(p2.float(), q.float(), backend=backend)
    assert_aligned_close(c.aligned, p2.float(), q.float(), rtol=1e-3)


@pytest.mark.parametrize("backend", CPU)
@_settings
@given(case=_similarity_case())
def test_exact_similarity_is_recovered(backend, case):
    seed, j, scale, shift = case
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(3, j, 3, generator=g, dtype=torch.float64)
    R0 = random_rotations(3, g)
    t0 = torch.tensor(shift, dtype=torch.float64)
    q = scale * p @ R0.transpose(1, 2) + t0
    out = procrustes_align(p, q, backend=backend)
    torch.testing.assert_close(out.transform.R, R0, rtol=0, atol=1e-9)
    torch.testing.assert_close(out.transform.s, torch.full((3,), scale, dtype=torch.float64), rtol=1e-10, atol=0)
    torch.testing.assert_close(out.transform.t, t0.expand(3, 3), rtol=1e-9, atol=1e-8)
    torch.testing.assert_close(out.aligned, q, rtol=1e-10, atol=1e-8)


# ---------------------------------------------------------------------------------------- torch.library
@pytest.mark.parametrize("backend", NOT_CUDA)
@pytest.mark.parametrize("weights", [False, True])
def test_opcheck(backend, weights):
    p, q = pose_pairs("reflection", 5, seed=14)
    p, q = (p / 300).requires_grad_(True), (q / 300).requires_grad_(True)
    w = torch.rand(5, 17, dtype=torch.float64) if weights else None
    torch.library.opcheck(torch.ops.fastlift.procrustes_align.default, (p, q, w, True, False, True, backend))


@pytest.mark.parametrize("backend", CPU)
def test_compile_and_export_trace_without_graph_breaks(backend):
    def f(p, q):
        aligned, (R, s, t) = procrustes_align(p, q, backend=backend)
        return (aligned - q).norm(dim=-1).mean(-1) + s + R.sum((1, 2)) + t.sum(-1)

    p, q = pose_pairs("random", 11, seed=15)
    p, q = p.float(), q.float()
    torch._dynamo.reset()
    explain = torch._dynamo.explain(f)(p, q)
    assert explain.graph_break_count == 0, explain.break_reasons
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(p, q), f(p, q))
    pr = p.clone().requires_grad_(True)
    compiled(pr, q).sum().backward()
    pr2 = p.clone().requires_grad_(True)
    f(pr2, q).sum().backward()
    torch.testing.assert_close(pr.grad, pr2.grad)

    class M(torch.nn.Module):
        def forward(self, p, q):
            return f(p, q)

    ep = torch.export.export(M(), (p, q))
    assert any("fastlift.procrustes_align" in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(p, q), f(p, q))


# ---------------------------------------------------------------------------------------- bad input
_P = torch.randn(4, 17, 3)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(pred=torch.randn(4, 17, 2), target=torch.randn(4, 17, 2)), ValueError, r"pred must have shape \(N, J, 3\)"),
        (dict(pred=torch.randn(17, 3), target=torch.randn(17, 3)), ValueError, r"pred must have shape \(N, J, 3\)"),
        (dict(pred=_P, target=torch.randn(4, 16, 3)), ValueError, "target must have pred's shape"),
        (dict(pred=torch.randn(4, 0, 3), target=torch.randn(4, 0, 3)), ValueError, "at least one joint"),
        (dict(pred=_P, target=_P.to("meta")), ValueError, "target is on meta"),
        (dict(pred=_P.long(), target=_P), TypeError, "pred must be a floating-point"),
        (dict(pred=_P, target=_P.int()), TypeError, "target must be a floating-point"),
        (dict(pred=_P.numpy(), target=_P), TypeError, "pred must be a torch.Tensor"),
        (dict(pred=_P, target=_P, weights=torch.ones(4, 16)), ValueError, r"weights must have shape \(N, J\)"),
        (dict(pred=_P, target=_P, weights=torch.ones(4, 17, dtype=torch.int64)), TypeError, "weights must be a floating-point"),
        (dict(pred=_P, target=_P, backend="gpu"), ValueError, "unknown backend"),
    ],
)
def test_bad_input_gives_clear_error(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        procrustes_align(**kwargs)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["reference"])
@pytest.mark.parametrize("which", ["pred", "target", "weights"])
def test_nan_inputs_and_negative_weights_are_rejected(backend, which):
    dev = backend_device(backend) if backend != "reference" else "cpu"
    p, q = torch.randn(6, 17, 3, device=dev), torch.randn(6, 17, 3, device=dev)
    w = torch.ones(6, 17, device=dev)
    if which == "pred":
        p[3, 4, 1] = float("nan")
        match = r"pred contains NaN or infinite"
    elif which == "target":
        q[2, 0, 0] = float("inf")
        match = r"target contains NaN or infinite"
    else:
        w[5, 2] = -1.0
        match = r"weights must be finite and non-negative"
    with pytest.raises((ValueError, RuntimeError), match=match):
        procrustes_align(p, q, weights=w, backend=backend)


def test_half_precision_is_computed_in_float32():
    p, q = pose_pairs("random", 3, seed=16)
    out = procrustes_align(p.to(torch.bfloat16), q.half())
    assert out.aligned.dtype == torch.float32
    out = procrustes_align(p.float(), q)
    assert out.aligned.dtype == torch.float64


def test_no_svd_factors_saved_without_grad():
    if not available_backends()["cpu"].available:
        pytest.skip("cpu backend unavailable")
    p, q = pose_pairs("random", 3, seed=17)
    outs = torch.ops.fastlift.procrustes_align(p, q, None, True, False, False, "cpu")
    assert outs[4].shape == (0, 3, 3) and outs[5].shape == (0, 3)
    with pytest.raises(RuntimeError, match="need_aux=False"):
        z = torch.zeros_like
        torch.ops.fastlift_C.procrustes_align_backward(z(p), z(outs[1]), None, z(outs[3]), p, q, None,
                                                       outs[1], outs[2], outs[4], outs[5], True)


def test_result_unpacks_and_names():
    p, q = pose_pairs("random", 2, seed=18)
    aligned, (R, s, t) = procrustes_align(p, q)
    out = procrustes_align(p, q)
    assert out.aligned is not None and out.transform.R.shape == (2, 3, 3)
    torch.testing.assert_close(aligned, s[:, None, None] * p @ R.transpose(1, 2) + t[:, None, :])
    assert math.isfinite(float(s.sum()))
