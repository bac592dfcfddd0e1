"""fastlift.evaluation.refine: one skeleton per person, depths moved along the camera rays."""
import numpy as np
import pytest
import torch

from fastlift.data.layouts import get_layout
from fastlift.data.synthetic import generate
from fastlift.evaluation.metrics import p_mpjpe
from fastlift.evaluation.refine import refine_bone_lengths, refine_groups

PARENTS = list(get_layout("h36m17").parents)


@pytest.fixture(scope="module")
def people():
    """Synthetic poses in the camera frame (metres, z > 0), several subjects and sequences."""
    ps = generate(3000, seed=3, split="val", seq_len=100)
    return ps, torch.as_tensor(np.asarray(ps.keypoints_3d), dtype=torch.float64) / 1000.0


def bone_lengths(Y):
    return torch.stack([(Y[:, j] - Y[:, p]).norm(dim=-1) for j, p in enumerate(PARENTS) if p >= 0], 1)


def along_rays(Y, factor):
    """Each joint moved along its ray: depth times ``factor`` (N, J), projection kept."""
    return Y * factor[..., None]


def test_ground_truth_people_are_left_as_they_are(people):
    ps, Y = people
    R = refine_bone_lengths(Y, np.asarray(ps.subject), PARENTS)
    # the stored float32 millimetres make the lengths agree to ~1e-7 only, which a bone lying in
    # the image plane (its depth the square root of a near-zero difference) turns into up to a few mm
    err = (R - Y).norm(dim=-1)
    assert float(err.mean()) < 2e-5 and float(err.max()) < 5e-3


def test_depth_noise_along_the_rays_is_taken_out(people):
    ps, Y = people
    g = torch.Generator().manual_seed(0)
    # from the root out, each bone's depth offset scaled by 0.7-1.3 and its joint moved along its
    # ray to that depth: the lengths wander from frame to frame, the depth directions are right
    noisy = Y.clone()
    for j, p in enumerate(PARENTS):
        if p >= 0:
            f = 0.7 + 0.6 * torch.rand(Y.shape[0], generator=g, dtype=torch.float64)
            z = noisy[:, p, 2] + f * (Y[:, j, 2] - Y[:, p, 2])
            noisy[:, j] = Y[:, j] * (z / Y[:, j, 2])[:, None]
    R = refine_bone_lengths(noisy, np.asarray(ps.subject), PARENTS)
    # the projections are those of the input, to the last digit
    torch.testing.assert_close(R[..., :2] / R[..., 2:], noisy[..., :2] / noisy[..., 2:], rtol=0, atol=1e-12)
    before, after = float(p_mpjpe(noisy, Y)), float(p_mpjpe(R, Y))
    assert after < 0.75 * before, (before, after)
    # without softness, bone proportions nearly one set per subject after (not exactly: where a
    # ray cannot reach the length, the joint stops at the ray's closest point)
    R0 = refine_bone_lengths(noisy, np.asarray(ps.subject), PARENTS, softness=0.0)
    prop = bone_lengths(R0) / bone_lengths(R0).sum(1, keepdim=True)
    prop0 = bone_lengths(noisy) / bone_lengths(noisy).sum(1, keepdim=True)
    subj = np.asarray(ps.subject)
    for s in np.unique(subj)[:3]:
        m = torch.from_numpy(subj == s)
        assert float(prop[m].std(0).mean()) < 0.25 * float(prop0[m].std(0).mean())
    # with it, a bone near the image plane keeps part of its lifted depth offset
    shin = (R0[:, 3, 2] - R0[:, 2, 2]).abs() < 0.05 * bone_lengths(R0)[:, 2]
    moved, moved0 = (R[:, 3, 2] - noisy[:, 3, 2]).abs(), (R0[:, 3, 2] - noisy[:, 3, 2]).abs()
    assert shin.sum() > 10 and float(moved[shin].mean()) < 0.5 * float(moved0[shin].mean())


def test_each_bone_keeps_its_depth_direction(people):
    ps, Y = people
    mirrored = Y.clone()
    # the lift puts both shins the wrong way in depth (ankle mirrored about the knee's depth)
    for knee, ankle in ((2, 3), (5, 6)):
        dz = Y[:, ankle, 2] - Y[:, knee, 2]
        mirrored[:, ankle] = along_rays(Y[:, ankle:ankle + 1], ((Y[:, knee, 2] - dz) / Y[:, ankle, 2])[:, None])[:, 0]
    R = refine_bone_lengths(mirrored, np.asarray(ps.subject), PARENTS)
    for knee, ankle in ((2, 3), (5, 6)):
        clear = (Y[:, ankle, 2] - Y[:, knee, 2]).abs() > 0.15
        offset = R[:, ankle, 2] - R[:, knee, 2]
        same = torch.sign(offset) == torch.sign(mirrored[:, ankle, 2] - mirrored[:, knee, 2])
        # a few (1-2 %) end on the other side of a knee that moved in depth by more than the
        # shin's depth offset (the proportions of a pose with mirrored shins are off for every bone)
        assert float(same[clear].double().mean()) > 0.97


def test_missing_joints_small_groups_and_bad_input(people):
    ps, Y = people
    g = torch.Generator().manual_seed(1)
    noisy = Y * (1 + 0.03 * torch.rand(Y.shape[:2], generator=g, dtype=torch.float64))[..., None]
    valid = torch.ones(Y.shape[:2], dtype=torch.bool)
    valid[::7, 16] = False                                   # a wrist missing in some poses
    R = refine_bone_lengths(noisy, np.asarray(ps.subject), PARENTS, valid=valid)
    torch.testing.assert_close(R[::7, 16], noisy[::7, 16], rtol=0, atol=0)      # a missing joint stays
    assert not torch.equal(R[1::7, 16], noisy[1::7, 16])
    torch.testing.assert_close(R[:, 0], noisy[:, 0], rtol=0, atol=0)             # the root never moves
    # every pose its own person: groups of one are below min_group and stay
    alone = refine_bone_lengths(noisy[:50], np.arange(50), PARENTS)
    torch.testing.assert_close(alone, noisy[:50], rtol=0, atol=0)
    assert refine_bone_lengths(noisy[:0], np.arange(0), PARENTS).shape == (0, 17, 3)
    with pytest.raises(ValueError, match="z > 0"):
        refine_bone_lengths(Y - Y[:, :1], np.asarray(ps.subject), PARENTS)       # root-centred: no rays
    with pytest.raises(ValueError, match="groups"):
        refine_bone_lengths(Y, np.asarray(ps.subject)[:-1], PARENTS)
    bad = Y.clone()
    bad[3, 5, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        refine_bone_lengths(bad, np.asarray(ps.subject), PARENTS)
    with pytest.raises(ValueError, match="parents"):
        refine_bone_lengths(Y, np.asarray(ps.subject), PARENTS[:-1])
    out = refine_bone_lengths(Y.float(), np.asarray(ps.subject), PARENTS)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_refine_groups(people):
    ps, _ = people
    labels, how = refine_groups(ps)
    assert how == "per subject" and (labels == np.asarray(ps.subject)).all()
    labels, how = refine_groups(ps, "sequence")
    assert how == "per sequence" and (labels == np.asarray(ps.sequence)).all()
    assert refine_groups(ps, "none") == (None, "off")
    from fastlift.data import PoseSet
    bare = PoseSet(keypoints_2d=np.asarray(ps.keypoints_2d[:20]))
    assert refine_groups(bare)[0] is None and refine_groups(bare, "subject")[0] is None
    with pytest.raises(ValueError, match="refine_bones"):
        refine_groups(ps, "person")


def test_lifter_lift_with_groups_keeps_the_projection(tmp_path, people):
    from tests.test_evaluate import make_checkpoint
    from fastlift.evaluation.inference import Lifter
    ps, _ = people
    make_checkpoint(tmp_path / "ck.pt")
    lifter = Lifter.from_checkpoint(str(tmp_path / "ck.pt"), device="cpu")
    k = np.asarray(ps.keypoints_2d[:600])
    plain = lifter.lift(k)
    refined = lifter.lift(k, groups=np.asarray(ps.subject[:600]))
    assert refined.shape == plain.shape and np.isfinite(refined).all()
    assert np.abs(refined - plain).max() > 1e-4
    torch.testing.assert_close(torch.from_numpy(refined[:, 0]), torch.zeros(600, 3))   # root-relative
    with pytest.raises(ValueError, match="groups"):
        lifter.lift(k, groups=np.arange(5))
