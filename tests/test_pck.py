"""PCK / AUC, per-joint errors under each alignment and the grouped tables, against an independent
float64 numpy implementation (per-pose loops, numpy SVD) on random data and known cases."""
import numpy as np
import pytest
import torch

from fastlift.evaluation import pck as P
from fastlift.evaluation.report import ErrorAccumulator, evaluate_predictions


# ------------------------------------------------------------------ independent float64 reference
def ref_procrustes(pred, gt):
    """VideoPose3D p_mpjpe alignment, one pose at a time, float64 numpy."""
    out = np.empty_like(pred, dtype=np.float64)
    for i, (p, g) in enumerate(zip(pred.astype(np.float64), gt.astype(np.float64))):
        mp, mg = p.mean(0), g.mean(0)
        p0, g0 = p - mp, g - mg
        npn, ngn = np.linalg.norm(p0), np.linalg.norm(g0)
        p0, g0 = p0 / npn, g0 / ngn
        U, s, Vt = np.linalg.svd(g0.T @ p0)
        V = Vt.T
        R = V @ U.T
        if np.linalg.det(R) < 0:
            V[:, -1] *= -1
            s[-1] *= -1
            R = V @ U.T
        a = s.sum() * ngn / npn
        out[i] = a * (p - mp) @ R + mg
    return out


def ref_errors(pred, gt, align, root=0):
    pred, gt = pred.astype(np.float64), gt.astype(np.float64)
    if align == "procrustes":
        return np.linalg.norm(ref_procrustes(pred, gt) - gt, axis=-1)
    p = pred - pred[:, root:root + 1]
    g = gt - gt[:, root:root + 1]
    if align == "root":
        return np.linalg.norm(p - g, axis=-1)
    if align == "scale":
        s = np.array([(pi * gi).sum() / (pi * pi).sum() for pi, gi in zip(p, g)])
        return np.linalg.norm(s[:, None, None] * p - g, axis=-1)
    if align == "global_scale":
        s = (p * g).sum() / (p * p).sum()
        return np.linalg.norm(s * p - g, axis=-1)
    return np.linalg.norm(pred - gt, axis=-1)


def ref_pck(err, t):
    return 100.0 * np.mean(err < t)


def ref_auc(err):
    return float(np.mean([ref_pck(err, t) for t in np.linspace(0, 150, 31)]))


def random_rotation(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@pytest.fixture
def poses():
    rng = np.random.default_rng(0)
    gt = rng.normal(scale=300.0, size=(64, 17, 3))
    pred = 0.0021 * (gt + rng.normal(scale=80.0, size=gt.shape)) + rng.normal(size=(64, 1, 3))
    return pred.astype(np.float32), gt.astype(np.float32)


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("align", P.ALIGNMENTS)
def test_joint_errors_match_float64_reference(poses, align):
    pred, gt = poses
    got = P.joint_errors(pred, gt, align).numpy()
    ref = ref_errors(pred, gt, align)
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-3)
    got64 = P.joint_errors(pred.astype(np.float64), gt.astype(np.float64), align).numpy()
    np.testing.assert_allclose(got64, ref, rtol=1e-7, atol=1e-6)


def test_torch_procrustes_expression_matches_reference(poses):
    pred, gt = poses
    a = P.procrustes_align_torch(torch.from_numpy(pred).double(), torch.from_numpy(gt).double()).numpy()
    np.testing.assert_allclose(a, ref_procrustes(pred, gt), rtol=1e-9, atol=1e-8)


def test_rotated_scaled_copy_has_zero_p_mpjpe_and_mirror_does_not():
    rng = np.random.default_rng(1)
    gt = rng.normal(scale=250.0, size=(16, 17, 3))
    pred = np.stack([0.37 * g @ random_rotation(rng).T + rng.normal(size=3) * 100 for g in gt])
    err = P.joint_errors(pred, gt, "procrustes").numpy()
    assert err.max() < 1e-3
    assert P.pck(pred, gt) == 100.0 and P.auc(pred, gt) > 96.0
    mirrored = pred * np.array([-1.0, 1.0, 1.0])
    err_m = P.joint_errors(mirrored, gt, "procrustes").numpy()
    assert err_m.mean() > 50.0                         # a reflection is not undone (det R = +1)
    # scale-only alignment does not undo a rotation
    assert P.joint_errors(pred, gt, "scale").numpy().mean() > 50.0


def test_scale_alignments_undo_scale_only():
    rng = np.random.default_rng(2)
    gt = rng.normal(scale=250.0, size=(8, 17, 3))
    pred = 0.004 * gt + 3.0  # scaled and shifted copy
    assert P.joint_errors(pred, gt, "scale").max() < 1e-6 * 250
    assert P.joint_errors(pred, gt, "global_scale").max() < 1e-6 * 250
    assert P.joint_errors(pred, gt, "root").mean() > 100


def test_pck_auc_known_values():
    err = np.array([[0.0, 4.9, 5.0, 149.9, 150.0, 151.0, 1000.0, 75.0]])
    assert P.pck_from_errors(err, 150.0) == pytest.approx(100 * 5 / 8)  # strict: 150 itself is wrong
    curve = P.pck_curve(err)
    ref = [100 * np.mean(err < t) for t in np.linspace(0, 150, 31)]
    np.testing.assert_allclose(curve, ref)
    assert P.auc_from_errors(err) == pytest.approx(np.mean(ref))
    assert P.pck_curve(err)[0] == 0.0  # nothing is below 0 mm


def test_pck_auc_random_against_reference(poses):
    pred, gt = poses
    for align in ("procrustes", "scale", "global_scale"):
        e = ref_errors(pred, gt, align)
        assert P.pck(pred, gt, align=align) == pytest.approx(ref_pck(e, 150.0), abs=1e-9 + 100 / e.size)
        assert P.auc(pred, gt, align=align) == pytest.approx(ref_auc(e), abs=0.05)
    joints = [1, 2, 3, 4, 5, 6]
    e = ref_errors(pred, gt, "procrustes")[:, joints]
    assert P.pck(pred, gt, joints=joints) == pytest.approx(ref_pck(e, 150.0), abs=100 / e.size)


def test_single_pose_and_bad_shapes():
    rng = np.random.default_rng(3)
    g = rng.normal(size=(17, 3))
    assert P.joint_errors(g, g, "procrustes").shape == (1, 17)
    with pytest.raises(ValueError, match="shape"):
        P.joint_errors(np.zeros((2, 17, 3)), np.zeros((2, 16, 3)))
    with pytest.raises(ValueError, match="align"):
        P.joint_errors(g, g, "affine")


def test_degenerate_prediction_is_finite():
    gt = np.random.default_rng(4).normal(size=(3, 17, 3))
    pred = np.zeros_like(gt)
    err = P.joint_errors(pred, gt, "procrustes").numpy()
    assert np.isfinite(err).all()
    assert np.isfinite(P.joint_errors(pred, gt, "scale").numpy()).all()


def test_grouped_tables_and_streaming_accumulator_agree_with_reference(poses):
    pred, gt = poses
    rng = np.random.default_rng(5)
    actions = rng.choice(np.array(["walk", "sit", "eat"]), size=len(pred))
    subjects = rng.choice(np.array(["S9", "S11"]), size=len(pred))
    rep = evaluate_predictions(pred, gt, actions=actions, subjects=subjects, per_subject=True, per_joint=True,
                               batch_size=10)  # several batches
    e_p = ref_errors(pred, gt, "procrustes")
    e_n = ref_errors(pred, gt, "scale")
    e_g = ref_errors(pred, gt, "global_scale")
    assert rep.n_poses == len(pred)
    assert rep.p_mpjpe == pytest.approx(e_p.mean(), rel=1e-4)
    assert rep.n_mpjpe == pytest.approx(e_n.mean(), rel=1e-4)
    assert rep.mpjpe == pytest.approx(e_g.mean(), rel=1e-4)
    assert rep.pck150 == pytest.approx(ref_pck(e_p, 150), abs=100 / e_p.size)
    assert rep.auc == pytest.approx(ref_auc(e_p), abs=0.05)
    for a in np.unique(actions):
        m = actions == a
        row = rep.per_action[a]
        assert row["n_poses"] == m.sum()
        assert row["p_mpjpe"] == pytest.approx(e_p[m].mean(), rel=1e-4)
        assert row["mpjpe"] == pytest.approx(e_g[m].mean(), rel=1e-4)
        assert row["pck150"] == pytest.approx(ref_pck(e_p[m], 150), abs=100 / e_p[m].size)
        assert row["auc"] == pytest.approx(ref_auc(e_p[m]), abs=0.05)
    assert set(rep.per_subject) == {"S9", "S11"}
    assert rep.per_joint["r_knee" if "r_knee" in rep.per_joint else "2"]["p_mpjpe"] == pytest.approx(e_p[:, 2].mean(), rel=1e-4)
    # the non-streaming table gives the same rows
    tab = P.grouped_table({"p_mpjpe": torch.from_numpy(e_p)}, actions)
    for a in tab:
        assert tab[a]["p_mpjpe"] == pytest.approx(rep.per_action[a]["p_mpjpe"], rel=1e-4)
        assert tab[a]["pck150"] == pytest.approx(rep.per_action[a]["pck150"], abs=1e-9)
        assert tab[a]["auc"] == pytest.approx(rep.per_action[a]["auc"], abs=1e-9)
    acc = ErrorAccumulator(17)
    acc.add({"p_mpjpe": torch.from_numpy(e_p)})
    assert acc.overall()["auc"] == pytest.approx(ref_auc(e_p), abs=1e-9)


def test_pck_alignment_choice(poses):
    pred, gt = poses
    for align in ("scale", "global_scale", "root"):
        rep = evaluate_predictions(pred * 476.0, gt, pck_align=align, mpjpe_align="root")
        e = ref_errors(pred * 476.0, gt, align)
        assert rep.pck150 == pytest.approx(ref_pck(e, 150), abs=100 / e.size)
        assert rep.auc == pytest.approx(ref_auc(e), abs=0.05)
    rep = evaluate_predictions(pred * 476.0, gt, mpjpe_align="root")
    assert rep.mpjpe == pytest.approx(ref_errors(pred * 476.0, gt, "root").mean(), rel=1e-4)
    assert rep.mpjpe_scale is None
