"""Reproducible random rotations (method.md, "Random rotation and perspective projection").

Per sample ``i`` (``0 <= i < n``) a counter-based generator, **Philox 4x32-10** (Salmon et al.,
SC'11, the generator of cuRAND and Random123), maps ``key = (seed mod 2^32, seed >> 32)`` and
``counter = (k mod 2^32, k >> 32, 0, 0)`` with ``k = offset + i`` to four 32-bit words
``w0..w3``. Every backend implements the same integer arithmetic, so a ``(seed, offset)`` pair
gives the same words, hence bit-identical angles, on every backend, device and call; and
``sample_rotations(n, offset=k)`` is the slice ``[k:k+n]`` of any longer draw with the same seed.

Words become uniforms ``u = (w >> 8) * 2^-24`` in ``[0, 1)`` (24 bits, exact in any float type).

``distribution="uniform"`` (the method's default): azimuth ``theta = a0 + u0 * A`` about the
vertical (camera y) axis and elevation ``phi = e0 + u1 * E`` about the camera x axis, where
``[a0, a0 + A)`` and ``[e0, e0 + E)`` are the ranges, ``A`` and ``E`` rounded to float32 so that
``u * A`` is exact in float64: the angle is one correctly rounded float64 operation, the same on
every backend whether or not the compiler fuses it into an FMA. ``R = R_x(phi) R_y(theta)``::

    R = [[ cos t,          0,      sin t        ],
         [ sin p sin t,    cos p,  -sin p cos t ],
         [ -cos p sin t,   sin p,  cos p cos t  ]]

``distribution="haar"``: the Haar (uniform) measure on SO(3), through Shoemake's uniform unit
quaternion ``q = (w, x, y, z)`` with ``x = sqrt(1-u0) sin(2 pi u1)``, ``y = sqrt(1-u0) cos(2 pi u1)``,
``z = sqrt(u0) sin(2 pi u2)``, ``w = sqrt(u0) cos(2 pi u2)``.

Matrices are computed in float64 from the float64 angles (or quaternion) and rounded once to the
output dtype. Angles are bit-identical across backends; matrix entries go through each platform's
``sin``/``cos``/``sqrt`` and agree to the last float64 bit or so, i.e. bit-for-bit in float32 but for
astronomically rare rounding ties.

Camera frame: x right, y down, z forward (depth). Applying ``R`` maps a point ``p`` to ``R p``.
"""
from __future__ import annotations

import importlib.util
import math
import struct

import torch

from fastlift import _extension  # noqa: F401  (loads fastlift._C, registering torch.ops.fastlift_C.*)
from fastlift.ops._backend import resolve_backend

__all__ = [
    "philox4x32",
    "rotation_from_angles",
    "sample_angles",
    "sample_rotations",
    "sample_rotations_reference",
]

_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = 0xFFFFFFFF
_DISTRIBUTIONS = ("uniform", "haar")


def _supported_backends(cpp_ops: tuple[str, ...], triton_module: str) -> tuple[str, ...]:
    """Backends whose kernels exist in this install, for ``resolve_backend(supported=...)``.

    A fastlift._C built before these ops existed (or a kernels package without the module) leaves
    only what works, so automatic selection falls back instead of failing. Cached per op.
    """
    key = (cpp_ops, triton_module)
    if key not in _SUPPORTED_CACHE:
        out = []
        if _extension.extension_available() and all(hasattr(torch.ops.fastlift_C, n) for n in cpp_ops):
            out += ["cuda", "cpu"]
        try:
            if importlib.util.find_spec(f"fastlift.kernels.{triton_module}") is not None:
                out.append("triton")
        except ImportError:
            pass
        _SUPPORTED_CACHE[key] = tuple(out) + ("reference",)
    return _SUPPORTED_CACHE[key]


_SUPPORTED_CACHE: dict = {}


def _mulhilo(m: int, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of the 64-bit product m * c, for c in [0, 2^32) held in int64."""
    t = m * (c & 0xFFFF)  # < 2^48
    u = m * (c >> 16) + (t >> 16)  # < 2^48 + 2^32
    return u >> 16, ((u & 0xFFFF) << 16) | (t & 0xFFFF)


def philox4x32(counter: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """Philox 4x32-10 in pure torch (the oracle of the kernels' generators).

    Args:
        counter: (..., 4) int64 tensor of 32-bit words (values in ``[0, 2^32)``).
        key: two 32-bit words.

    Returns:
        (..., 4) int64 tensor of the four 32-bit output words.
    """
    c0, c1, c2, c3 = (counter[..., i] & _MASK32 for i in range(4))
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for r in range(10):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return torch.stack((c0, c1, c2, c3), dim=-1)


def _check_seed(seed: int, offset: int, n: int, op: str) -> None:
    for name, v in (("seed", seed), ("offset", offset)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"fastlift.ops.{op}: {name} must be an int, got {type(v).__name__}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"fastlift.ops.{op}: seed must be in [0, 2^63), got {seed}")
    if not 0 <= offset or offset + n > 2**63:
        raise ValueError(f"fastlift.ops.{op}: offset must be >= 0 with offset + n <= 2^63, got {offset}")


def _range_params(azimuth_range, elevation_range, op: str) -> tuple[float, float, float, float]:
    """(a0, A, e0, E): lower ends in float64, widths rounded to float32 (see the module doc)."""
    out = []
    for name, rng in (("azimuth_range", azimuth_range), ("elevation_range", elevation_range)):
        try:
            lo, hi = (float(v) for v in rng)
        except (TypeError, ValueError):
            raise TypeError(f"fastlift.ops.{op}: {name} must be a pair (low, high) of floats, got {rng!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and hi >= lo):
            raise ValueError(f"fastlift.ops.{op}: {name} must be finite with low <= high, got {rng!r}")
        width = struct.unpack("f", struct.pack("f", hi - lo))[0]  # rounded to float32
        out += [lo, width]
    return tuple(out)  # type: ignore[return-value]


def _uniform24(words: torch.Tensor) -> torch.Tensor:
    return (words >> 8).to(torch.float64) * 2.0**-24


def rotation_from_angles(azimuth: torch.Tensor, elevation: torch.Tensor) -> torch.Tensor:
    """``R = R_x(elevation) R_y(azimuth)`` (radians), shape ``azimuth.shape + (3, 3)``.

    Azimuth turns about the vertical camera y axis, elevation about the camera x axis (camera frame
    x right, y down, z forward). Differentiable; any float dtype, the result in the angles' dtype.
    """
    azimuth, elevation = torch.broadcast_tensors(torch.as_tensor(azimuth), torch.as_tensor(elevation))
    if not azimuth.is_floating_point():
        raise TypeError(f"fastlift.ops.rotation_from_angles: angles must be floating point, got {azimuth.dtype}")
    ct, st = torch.cos(azimuth), torch.sin(azimuth)
    cp, sp = torch.cos(elevation), torch.sin(elevation)
    zero = torch.zeros_like(ct)
    rows = (
        torch.stack((ct, zero, st), -1),
        torch.stack((sp * st, cp, -sp * ct), -1),
        torch.stack((-cp * st, sp, cp * ct), -1),
    )
    return torch.stack(rows, -2)


def _quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    w, x, y, z = q.unbind(-1)
    rows = (
        torch.stack((1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)), -1),
        torch.stack((2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)), -1),
        torch.stack((2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)), -1),
    )
    return torch.stack(rows, -2)


def sample_rotations_reference(n: int, az_lo: float, az_width: float, el_lo: float, el_width: float,
                               seed: int, offset: int, haar: bool,
                               device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch sampler (the oracle). Returns float64 ``(R (n,3,3), params)``: params are
    (azimuth, elevation) (n, 2) for the uniform distribution, the quaternion (w, x, y, z) (n, 4) for haar."""
    k = torch.arange(n, dtype=torch.int64, device=device) + offset
    counter = torch.stack((k & _MASK32, k >> 32, torch.zeros_like(k), torch.zeros_like(k)), -1)
    words = philox4x32(counter, (seed & _MASK32, seed >> 32))
    u = _uniform24(words)
    if haar:
        u0, u1, u2 = u[:, 0], u[:, 1], u[:, 2]
        a, b = torch.sqrt(1 - u0), torch.sqrt(u0)
        t1, t2 = (2 * math.pi) * u1, (2 * math.pi) * u2
        q = torch.stack((b * torch.cos(t2), a * torch.sin(t1), a * torch.cos(t1), b * torch.sin(t2)), -1)
        return _quaternion_to_matrix(q), q
    az = az_lo + u[:, 0] * az_width
    el = el_lo + u[:, 1] * el_width
    return rotation_from_angles(az, el), torch.stack((az, el), -1)


def _launch_sample(n, az_lo, az_w, el_lo, el_w, seed, offset, haar, dtype, device, backend):
    if backend in ("cpu", "cuda"):
        R, p = torch.ops.fastlift_C.sample_rotations(n, az_lo, az_w, el_lo, el_w, seed, offset, haar,
                                                     torch.empty(0, device=device))
    elif backend == "triton":
        from fastlift.kernels.rotate_project import sample_rotations as _triton_sample
        R, p = _triton_sample(n, az_lo, az_w, el_lo, el_w, seed, offset, haar, device)
    else:
        R, p = sample_rotations_reference(n, az_lo, az_w, el_lo, el_w, seed, offset, haar, device)
    return R.to(dtype), p.to(dtype)


@torch.library.custom_op("fastlift::sample_rotations", mutates_args=())
def _sample_rotations_op(n: int, az_lo: float, az_width: float, el_lo: float, el_width: float,
                         seed: int, offset: int, haar: bool, dtype: torch.dtype, device: torch.device,
                         backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch_sample(n, az_lo, az_width, el_lo, el_width, seed, offset, haar, dtype, device, backend)


@_sample_rotations_op.register_fake
def _(n, az_lo, az_width, el_lo, el_width, seed, offset, haar, dtype, device, backend):
    return (torch.empty(n, 3, 3, dtype=dtype, device=device),
            torch.empty(n, 4 if haar else 2, dtype=dtype, device=device))


def _sample(op, n, azimuth_range, elevation_range, seed, offset, distribution, device, dtype, backend):
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"fastlift.ops.{op}: n must be a non-negative int, got {n!r}")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"fastlift.ops.{op}: distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}")
    _check_seed(seed, offset, n, op)
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"fastlift.ops.{op}: dtype must be a floating-point dtype, got {dtype}")
    a0, aw, e0, ew = _range_params(azimuth_range, elevation_range, op)
    device = torch.device(device) if device is not None else torch.empty(0).device  # (traceable default)
    chosen = resolve_backend(op, device, backend, _supported_backends(("sample_rotations",), "rotate_project"))
    out_dtype = dtype if dtype == torch.float64 else torch.float32
    R, p = _sample_rotations_op(n, a0, aw, e0, ew, int(seed), int(offset), distribution == "haar",
                                out_dtype, device, chosen)
    return R.to(dtype), p.to(dtype)


def sample_rotations(n: int, azimuth_range: tuple[float, float] = (-math.pi, math.pi),
                     elevation_range: tuple[float, float] = (-math.pi / 9, math.pi / 9), seed: int = 0,
                     offset: int = 0, distribution: str = "uniform", device=None,
                     dtype: torch.dtype = torch.float32, backend: str | None = None) -> torch.Tensor:
    """``n`` reproducible random rotation matrices, (n, 3, 3), camera frame (x right, y down, z forward).

    Args:
        n: number of rotations (0 gives an empty (0, 3, 3) tensor).
        azimuth_range: ``(low, high)`` radians of the azimuth about the vertical (y) axis, uniform
            in ``[low, high)`` (the width is rounded to float32; module doc). Default ``[-pi, pi)``.
        elevation_range: ``(low, high)`` radians of the elevation about the x axis. Default
            ``[-pi/9, pi/9)`` (method.md, ref).
        seed: key of the counter-based generator, in ``[0, 2^63)``.
        offset: index of the first sample in the seed's stream (``>= 0``): draw ``k`` of step ``t``
            with ``offset = t * batch`` never repeats and is reproducible in any order.
        distribution: ``"uniform"`` (``R = R_x(elevation) R_y(azimuth)``, the method's sampling) or
            ``"haar"`` (uniform on SO(3); the ranges are then ignored).
        device: where the rotations are made (default: torch's default device).
        dtype: float32 (default) or float64; half types are made in float32 and cast.
        backend: ``"cuda"``, ``"triton"``, ``"cpu"``, ``"reference"`` or None (automatic).

    Returns:
        R (n, 3, 3), orthonormal with det +1; a point ``p`` maps to ``R p``. Not differentiable
        (a sample). The same ``(seed, offset)`` gives the same matrices on every backend.
    """
    return _sample("sample_rotations", n, azimuth_range, elevation_range, seed, offset, distribution,
                   device, dtype, backend)[0]


def sample_angles(n: int, azimuth_range: tuple[float, float] = (-math.pi, math.pi),
                  elevation_range: tuple[float, float] = (-math.pi / 9, math.pi / 9), seed: int = 0,
                  offset: int = 0, device=None, dtype: torch.dtype = torch.float32,
                  backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(azimuth (n,), elevation (n,))`` radians behind ``sample_rotations(..., "uniform")``.

    Same arguments as :func:`sample_rotations`; ``rotation_from_angles(*sample_angles(...))``
    equals ``sample_rotations(...)`` to rounding. Bit-identical on every backend.
    """
    p = _sample("sample_angles", n, azimuth_range, elevation_range, seed, offset, "uniform", device,
                dtype, backend)[1]
    return p[:, 0], p[:, 1]
