"""fastlift.ops.sample_rotations / sample_angles / rotation_from_angles: every backend against the
pure-torch reference, reproducibility of the counter-based generator, and the distributions."""
import math

import pytest
import scipy.stats
import torch

from fastlift.ops import rotation_from_angles, sample_angles, sample_rotations
from fastlift.ops.rotation import philox4x32
from fastlift.testing import backend_device, backend_params

KERNEL_BACKENDS = backend_params()
ALL_BACKENDS = KERNEL_BACKENDS + ["reference"]
AZ = (-math.pi, math.pi)
EL = (-math.pi / 9, math.pi / 9)


def test_philox_known_answers():
    # Random123's known-answer vectors for Philox 4x32-10.
    cases = [
        ([0, 0, 0, 0], (0, 0), [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([0xFFFFFFFF] * 4, (0xFFFFFFFF, 0xFFFFFFFF), [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], (0xA4093822, 0x299F31D0),
         [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
    ]
    for counter, key, expected in cases:
        assert philox4x32(torch.tensor(counter), key).tolist() == expected


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("distribution", ["uniform", "haar"])
def test_orthonormal_det_one(backend, distribution, poisoned):
    n = 61 if backend == "triton" else 1023
    R = sample_rotations(n, seed=5, distribution=distribution, device=backend_device(backend), backend=backend)
    assert R.shape == (n, 3, 3) and R.dtype == torch.float32
    R = R.double().cpu()
    torch.testing.assert_close(R @ R.mT, torch.eye(3, dtype=torch.float64).expand(n, 3, 3), rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("distribution", ["uniform", "haar"])
def test_same_seed_offset_same_result_on_every_backend(backend, distribution, poisoned):
    n, seed, offset = 97, 2**40 + 3, 2**33 - 5  # counters and keys crossing 32 bits
    device = backend_device(backend)
    R = sample_rotations(n, seed=seed, offset=offset, distribution=distribution, dtype=torch.float64,
                         device=device, backend=backend).cpu()
    R_ref = sample_rotations(n, seed=seed, offset=offset, distribution=distribution, dtype=torch.float64,
                             backend="reference")
    # the matrices go through each platform's sin/cos/sqrt: equal to the last float64 bit or two
    torch.testing.assert_close(R, R_ref, rtol=0, atol=4e-16)
    R32 = sample_rotations(n, seed=seed, offset=offset, distribution=distribution, device=device,
                           backend=backend).cpu()
    assert (R32 != R_ref.float()).sum() <= 1  # float32: bit-identical but for a rare rounding tie
    if distribution == "uniform":
        az, el = sample_angles(n, seed=seed, offset=offset, dtype=torch.float64, device=device, backend=backend)
        az_ref, el_ref = sample_angles(n, seed=seed, offset=offset, dtype=torch.float64, backend="reference")
        assert torch.equal(az.cpu(), az_ref) and torch.equal(el.cpu(), el_ref)  # angles: bit-identical


@pytest.mark.parametrize("backend", [p for p in KERNEL_BACKENDS if p.id == "cpu"] + ["reference"])
def test_reproducible_and_sliceable(backend):
    a = sample_rotations(50, seed=9, backend=backend)
    b = sample_rotations(50, seed=9, backend=backend)
    assert torch.equal(a, b)
    # offset k is the slice [k:] of one long stream
    assert torch.equal(sample_rotations(20, seed=9, offset=30, backend=backend), a[30:])
    assert not torch.equal(sample_rotations(50, seed=10, backend=backend), a)


def test_rotation_from_angles_matches_the_sampler():
    az, el = sample_angles(200, seed=1, dtype=torch.float64)
    torch.testing.assert_close(rotation_from_angles(az, el), sample_rotations(200, seed=1, dtype=torch.float64))
    # R = R_x(el) R_y(az): azimuth turns about y (the vertical), elevation about x
    t = torch.tensor(0.3, dtype=torch.float64)
    Ry = rotation_from_angles(t, torch.zeros((), dtype=torch.float64))
    assert torch.allclose(Ry @ torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64),
                          torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    Rx = rotation_from_angles(torch.zeros((), dtype=torch.float64), t)
    assert torch.allclose(Rx @ torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
                          torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("backend", [p for p in KERNEL_BACKENDS if p.id == "cpu"] + ["reference"])
def test_angles_are_uniform_in_their_ranges(backend):
    n = 20000
    az, el = sample_angles(n, seed=123, dtype=torch.float64, backend=backend)
    assert az.min() >= AZ[0] and az.max() < AZ[1] and el.min() >= EL[0] and el.max() < EL[1]
    for v, (lo, hi) in ((az, AZ), (el, EL)):
        p = scipy.stats.kstest(v.numpy(), scipy.stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue
        assert p > 1e-3, p
    assert abs(scipy.stats.pearsonr(az.numpy(), el.numpy())[0]) < 0.03  # independent streams
    # custom ranges are honoured
    az2, el2 = sample_angles(2000, azimuth_range=(0.5, 0.7), elevation_range=(0.0, 0.0), seed=3, backend=backend)
    assert az2.min() >= 0.5 and az2.max() < 0.7 and (el2 == 0).all()


@pytest.mark.parametrize("backend", [p for p in KERNEL_BACKENDS if p.id == "cpu"] + ["reference"])
def test_haar_statistics(backend):
    n = 20000
    R = sample_rotations(n, seed=77, distribution="haar", dtype=torch.float64, backend=backend)
    # rotation angle w of a Haar rotation has CDF (w - sin w) / pi on [0, pi]
    w = torch.arccos(((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)).numpy()
    p = scipy.stats.kstest(w, lambda t: (t - torch.sin(torch.as_tensor(t)).numpy()) / math.pi).pvalue
    assert p > 1e-3, p
    # R e_z is uniform on the sphere: each coordinate uniform in [-1, 1]
    for col in range(3):
        p = scipy.stats.kstest(R[:, col, 2].numpy(), scipy.stats.uniform(loc=-1, scale=2).cdf).pvalue
        assert p > 1e-3, p
    # the mean rotation of the Haar measure is 0
    assert R.mean(0).abs().max() < 0.03


def test_empty_and_dtypes():
    assert sample_rotations(0).shape == (0, 3, 3)
    assert sample_rotations(3, dtype=torch.float64).dtype == torch.float64
    assert sample_rotations(3, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(n=-1), ValueError, "n must be"),
        (dict(n=3, seed=-1), ValueError, "seed must be"),
        (dict(n=3, seed=2**63), ValueError, "seed must be"),
        (dict(n=3, offset=-2), ValueError, "offset must be"),
        (dict(n=3, seed=1.5), TypeError, "seed must be an int"),
        (dict(n=3, distribution="gauss"), ValueError, "distribution must be"),
        (dict(n=3, azimuth_range=(1.0, 0.0)), ValueError, "low <= high"),
        (dict(n=3, elevation_range=(0.0, float("nan"))), ValueError, "finite"),
        (dict(n=3, dtype=torch.int32), TypeError, "floating-point dtype"),
        (dict(n=3, backend="gpu"), ValueError, "unknown backend"),
    ],
)
def test_bad_input_gives_clear_error(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sample_rotations(**kwargs)


@pytest.mark.parametrize("backend", [p for p in KERNEL_BACKENDS if p.id != "cuda"] + ["reference"])
def test_opcheck(backend):
    args = (7, -math.pi, 6.2831854820251465, -0.3, 0.6, 11, 5, False, torch.float32, torch.device("cpu"), backend)
    torch.library.opcheck(torch.ops.fastlift.sample_rotations.default, args)


@pytest.mark.parametrize("backend", [p for p in KERNEL_BACKENDS if p.id == "cpu"])
def test_compile_and_export_trace_without_graph_breaks(backend):
    def f(x):
        R = sample_rotations(x.shape[0], seed=4, offset=8, backend=backend)
        return x @ R

    x = torch.randn(5, 3, 3)
    torch._dynamo.reset()
    explain = torch._dynamo.explain(f)(x)
    assert explain.graph_break_count == 0, explain.break_reasons
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), f(x))

    class M(torch.nn.Module):
        def forward(self, x):
            return f(x)

    ep = torch.export.export(M(), (x,))
    assert any("fastlift.sample_rotations" in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(x), f(x))
