"""fastlift.ops.normalize_2d: every backend against the pure-torch reference."""
import pytest
import torch

from fastlift.ops import normalize_2d, normalize_2d_reference
from fastlift.testing import backend_device, backend_params

KERNEL_BACKENDS = backend_params()

SIZES = [1, 2, 17, 31, 1023]


def random_poses(n, j=17, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, j, 2, generator=g, dtype=torch.float64) * 100 + 500  # pixels
    return x.to(dtype=dtype, device=device)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("n", SIZES)
def test_forward_matches_reference(backend, n, poisoned):
    x = random_poses(n, device=backend_device(backend))
    y, s = normalize_2d(x, backend=backend)
    y_ref, s_ref = normalize_2d_reference(x.double())
    assert y.dtype == torch.float32 and y.shape == (n, 17, 2) and s.shape == (n,)
    torch.testing.assert_close(y.double().cpu(), y_ref.cpu(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s.double().cpu(), s_ref.cpu(), rtol=1e-5, atol=1e-9)
    # The defining property: root at the origin, head at distance 1/c.
    assert y[:, 0].abs().max() == 0
    torch.testing.assert_close(y[:, 10].norm(dim=-1).cpu(), torch.full((n,), 0.1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("n,j,root,head", [(13, 17, 0, 10), (7, 5, 3, 1), (3, 2, 1, 0), (5, 25, 8, 0)])
def test_backward_matches_reference(backend, n, j, root, head, poisoned):
    device = backend_device(backend)
    x = random_poses(n, j, device=device).requires_grad_(True)
    g = torch.Generator().manual_seed(7)
    gy = torch.randn(n, j, 2, generator=g).to(device)
    gs = torch.randn(n, generator=g).to(device)
    y, s = normalize_2d(x, root, head, c=7.0, backend=backend)
    (gx,) = torch.autograd.grad((y, s), x, (gy, gs))
    xr = x.detach().double().requires_grad_(True)
    yr, sr = normalize_2d_reference(xr, root, head, c=7.0)
    (gxr,) = torch.autograd.grad((yr, sr), xr, (gy.double(), gs.double()))
    torch.testing.assert_close(gx.double(), gxr, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", [p for p in KERNEL_BACKENDS if p.id == "cpu"] + ["reference"])
def test_gradcheck_float64(backend):
    x = random_poses(6, 17, dtype=torch.float64).div(100).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: normalize_2d(t, backend=backend), (x,))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_non_contiguous_and_empty(backend, poisoned):
    device = backend_device(backend)
    base = random_poses(40, 17, device=device)
    x = base[::3]  # non-contiguous view
    assert not x.is_contiguous()
    y, s = normalize_2d(x, backend=backend)
    y_ref, s_ref = normalize_2d_reference(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    y0, s0 = normalize_2d(base[:0], backend=backend)
    assert y0.shape == (0, 17, 2) and s0.shape == (0,)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_coincident_head_and_root_is_finite(backend, poisoned):
    device = backend_device(backend)
    x = random_poses(4, 17, device=device)
    x[1, 10] = x[1, 0]  # head on the root: distance 0
    x[2] = x[2, 0]  # every joint on one point
    x.requires_grad_(True)
    y, s = normalize_2d(x, eps=1e-3, backend=backend)
    assert torch.isfinite(y).all() and torch.isfinite(s).all()
    assert s[1].item() == pytest.approx(1 / (10 * 1e-3))
    assert y[2].abs().max().item() == 0
    (gx,) = torch.autograd.grad(y.sum() + s.sum(), x)
    assert torch.isfinite(gx).all()


def test_half_precision_is_computed_in_float32():
    x = random_poses(9).to(torch.bfloat16)
    y, _ = normalize_2d(x)
    assert y.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(keypoints=torch.randn(4, 17, 3)), r"shape \(N, J, 2\)"),
        (dict(keypoints=torch.randn(17, 2)), r"shape \(N, J, 2\)"),
        (dict(keypoints=torch.randn(4, 17, 2), root=17), "root=17"),
        (dict(keypoints=torch.randn(4, 17, 2), head=0), "must differ"),
        (dict(keypoints=torch.randn(4, 17, 2), c=0.0), "c must be positive"),
        (dict(keypoints=torch.randn(4, 17, 2), backend="gpu"), "unknown backend"),
    ],
)
def test_bad_input_gives_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        normalize_2d(**kwargs)


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="keypoints must be a floating-point"):
        normalize_2d(torch.ones(2, 17, 2, dtype=torch.int64))


@pytest.mark.parametrize("backend", [p for p in KERNEL_BACKENDS if p.id != "cuda"])
def test_opcheck(backend):
    x = random_poses(5, 17).requires_grad_(True)
    torch.library.opcheck(torch.ops.fastlift.normalize_2d.default, (x, 0, 10, 10.0, 1e-6, backend))


@pytest.mark.parametrize("backend", [p for p in KERNEL_BACKENDS if p.id == "cpu"])
def test_compile_and_export_trace_without_graph_breaks(backend):
    def f(x):
        y, s = normalize_2d(x, backend=backend)
        return (y * 2).sum(-1) + s[:, None]

    x = random_poses(11)
    torch._dynamo.reset()
    explain = torch._dynamo.explain(f)(x)
    assert explain.graph_break_count == 0, explain.break_reasons
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), f(x))

    class M(torch.nn.Module):
        def forward(self, x):
            return f(x)

    ep = torch.export.export(M(), (x,))
    assert any("fastlift.normalize_2d" in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(x), f(x))


def test_env_override(monkeypatch):
    monkeypatch.setenv("FASTLIFT_BACKEND", "reference")
    from fastlift.ops import resolve_backend
    assert resolve_backend("normalize_2d", torch.device("cpu")) == "reference"
    monkeypatch.setenv("FASTLIFT_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="FASTLIFT_BACKEND='nonsense'"):
        resolve_backend("normalize_2d", torch.device("cpu"))
