"""fastlift.metrics (fastlift.evaluation.metrics): MPJPE, N-MPJPE, P-MPJPE against independent
float64 numpy implementations (VideoPose3D conventions)."""
import numpy as np
import pytest
import torch

import fastlift.metrics as M
from fastlift.evaluation import metrics as EM
from fastlift.testing import backend_device, backend_params


def np_p_mpjpe(pred, target):
    """VideoPose3D's p_mpjpe (common/loss.py), per pose, numpy float64."""
    muX = np.mean(target, axis=1, keepdims=True)
    muY = np.mean(pred, axis=1, keepdims=True)
    X0, Y0 = target - muX, pred - muY
    normX = np.sqrt(np.sum(X0 ** 2, axis=(1, 2), keepdims=True))
    normY = np.sqrt(np.sum(Y0 ** 2, axis=(1, 2), keepdims=True))
    X0, Y0 = X0 / normX, Y0 / normY
    H = np.matmul(X0.transpose(0, 2, 1), Y0)
    U, s, Vt = np.linalg.svd(H)
    V = Vt.transpose(0, 2, 1)
    R = np.matmul(V, U.transpose(0, 2, 1))
    sign_detR = np.sign(np.expand_dims(np.linalg.det(R), axis=1))
    V[:, :, -1] *= sign_detR
    s[:, -1] *= sign_detR.flatten()
    R = np.matmul(V, U.transpose(0, 2, 1))
    tr = np.expand_dims(np.sum(s, axis=1, keepdims=True), axis=2)
    a = tr * normX / normY
    t = muX - a * np.matmul(muY, R)
    aligned = a * np.matmul(pred, R) + t
    return np.mean(np.linalg.norm(aligned - target, axis=-1), axis=1)


def np_n_mpjpe(pred, target, root=0):
    p = pred - pred[:, root:root + 1]
    q = target - target[:, root:root + 1]
    s = np.sum(p * q, axis=(1, 2)) / np.sum(p * p, axis=(1, 2))
    return np.mean(np.linalg.norm(s[:, None, None] * p - q, axis=-1), axis=1)


def np_mpjpe(pred, target, root=0):
    p = pred - pred[:, root:root + 1]
    q = target - target[:, root:root + 1]
    return np.mean(np.linalg.norm(p - q, axis=-1), axis=1)


def random_poses(n=64, j=17, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(n, j, 3)) * 250 + np.array([0, 0, 4500.0])
    pred = target + rng.normal(size=(n, j, 3)) * 60
    pred = pred * rng.uniform(0.3, 3, size=(n, 1, 1)) + rng.normal(size=(n, 1, 3)) * 100
    return pred, target


def rotation(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_metrics_match_independent_numpy(dtype):
    pred, target = random_poses()
    p, t = torch.tensor(pred, dtype=dtype), torch.tensor(target, dtype=dtype)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-3)
    for fn, ref in ((M.p_mpjpe, np_p_mpjpe), (M.n_mpjpe, np_n_mpjpe), (M.mpjpe, np_mpjpe)):
        per_pose = fn(p, t, reduction="none")
        assert per_pose.shape == (64,) and per_pose.dtype == dtype
        np.testing.assert_allclose(per_pose.double().numpy(), ref(pred, target), **tol)
        np.testing.assert_allclose(float(fn(p, t)), ref(pred, target).mean(), **tol)


@pytest.mark.parametrize("backend", backend_params() + ["reference"])
def test_p_mpjpe_backends_agree(backend):
    pred, target = random_poses(n=33, seed=1)
    dev = backend_device(backend) if backend != "reference" else "cpu"
    p, t = torch.tensor(pred, device=dev), torch.tensor(target, device=dev)
    got = M.p_mpjpe(p, t, reduction="none", backend=backend).cpu().numpy()
    np.testing.assert_allclose(got, np_p_mpjpe(pred, target), rtol=1e-9, atol=1e-9)


def test_similarity_copy_scores_zero_and_mirror_does_not():
    rng = np.random.default_rng(3)
    target = rng.normal(size=(20, 17, 3)) * 250
    copies = np.stack([2.7 * target[i] @ rotation(rng).T + rng.normal(size=3) * 500 for i in range(20)])
    err = M.p_mpjpe(torch.tensor(copies), torch.tensor(target), reduction="none")
    assert float(err.max()) < 1e-9 * 250
    err32 = M.p_mpjpe(torch.tensor(copies, dtype=torch.float32), torch.tensor(target, dtype=torch.float32))
    assert float(err32) < 1e-4 * 250
    mirrored = copies * np.array([-1.0, 1.0, 1.0])
    err_m = M.p_mpjpe(torch.tensor(mirrored), torch.tensor(target), reduction="none")
    assert float(err_m.min()) > 10.0  # a reflection is not undone (det R = +1)
    np.testing.assert_allclose(err_m.numpy(), np_p_mpjpe(mirrored, target), rtol=1e-9)
    # N-MPJPE undoes the scale only, MPJPE nothing
    scaled = 1.7 * (target - target[:, :1])
    assert float(M.n_mpjpe(torch.tensor(scaled), torch.tensor(target))) < 1e-9
    assert float(M.mpjpe(torch.tensor(scaled), torch.tensor(target))) > 10.0


def test_weights_and_masks():
    pred, target = random_poses(n=16, seed=4)
    p, t = torch.tensor(pred), torch.tensor(target)
    keep = [j for j in range(17) if j not in (3, 9)]
    mask = torch.ones(17, dtype=torch.bool)
    mask[[3, 9]] = False
    for fn in (M.p_mpjpe, M.n_mpjpe, M.mpjpe):
        a = fn(p, t, weights=mask, reduction="none")
        b = fn(p[:, keep], t[:, keep], reduction="none")
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(fn(p, t, weights=mask.double().expand(16, 17)), fn(p[:, keep], t[:, keep]))
    # "mean" counts each valid joint once; a pose with no valid joint is NaN per pose and ignored
    w = torch.ones(16, 17, dtype=torch.float64)
    w[0] = 0
    w[1, :10] = 0
    per_pose = M.mpjpe(p, t, weights=w, reduction="none")
    assert torch.isnan(per_pose[0]) and torch.isfinite(per_pose[1:]).all()
    e = EM.joint_errors(p, t, align="root")
    torch.testing.assert_close(M.mpjpe(p, t, weights=w), (e * w).sum() / w.sum())


def test_joint_errors_and_alignments():
    pred, target = random_poses(n=8, seed=5)
    p, t = torch.tensor(pred), torch.tensor(target)
    for align, ref in (("procrustes", np_p_mpjpe), ("scale", np_n_mpjpe), ("root", np_mpjpe)):
        e = EM.joint_errors(p, t, align=align)
        assert e.shape == (8, 17)
        np.testing.assert_allclose(e.mean(1).numpy(), ref(pred, target), rtol=1e-9)
    e = EM.joint_errors(p, t, align="none")
    np.testing.assert_allclose(e.numpy(), np.linalg.norm(pred - target, axis=-1))
    a = M.mpjpe(p, t, root=None, reduction="none")
    np.testing.assert_allclose(a.numpy(), np.linalg.norm(pred - target, axis=-1).mean(1))


def test_numpy_inputs_gradients_and_degenerate():
    pred, target = random_poses(n=4, seed=6)
    assert float(M.p_mpjpe(pred, target)) == pytest.approx(np_p_mpjpe(pred, target).mean(), rel=1e-9)
    p = torch.tensor(pred, requires_grad=True)
    for fn in (M.p_mpjpe, M.n_mpjpe, M.mpjpe):
        (g,) = torch.autograd.grad(fn(p, torch.tensor(target)), p)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    # exact fits and collapsed predictions: finite values and gradients
    t = torch.tensor(target)
    for pr in (t.clone(), torch.zeros_like(t), t[:, :1].expand_as(t).clone()):
        pr.requires_grad_(True)
        for fn in (M.p_mpjpe, M.n_mpjpe, M.mpjpe):
            v = fn(pr, t)
            (g,) = torch.autograd.grad(v, pr)
            assert torch.isfinite(v) and torch.isfinite(g).all()
    assert float(M.p_mpjpe(t, t)) < 1e-9


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda p: M.p_mpjpe(p, p, reduction="sum"), ValueError, "reduction must be one of"),
        (lambda p: M.mpjpe(p[..., :2], p[..., :2]), ValueError, r"pred must have shape \(N, J, 3\)"),
        (lambda p: M.n_mpjpe(p, p[:, :5]), ValueError, "target must have pred's shape"),
        (lambda p: M.mpjpe(p, p, root=17), ValueError, "root=17"),
        (lambda p: M.mpjpe(p, p, weights=torch.ones(3)), ValueError, "weights must have shape"),
        (lambda p: M.p_mpjpe(p.long(), p), TypeError, "pred must be floating point"),
        (lambda p: M.p_mpjpe("x", p), TypeError, "pred must be a torch.Tensor or numpy array"),
        (lambda p: EM.joint_errors(p, p, align="rigid"), ValueError, "align must be one of"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call(torch.randn(2, 17, 3))
