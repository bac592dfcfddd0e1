"""The procedural motion generator (fastlift.data.synthetic): determinism, splits, realism."""
import time

import numpy as np
import pytest

from fastlift.data import PoseDataError, synthetic
from fastlift.data.h36m import project
from fastlift.data.synthetic import BONE_LENGTHS_MM, MOTIONS, default_splits, generate


@pytest.fixture(scope="module")
def poses():
    return generate(n_sequences=240, seed=3, seq_len=100)


def test_shapes_and_fields(poses):
    N = 240 * 100
    assert len(poses) == N and poses.layout == "h36m17"
    assert poses.keypoints_2d.shape == (N, 17, 2) and poses.keypoints_3d.shape == (N, 17, 3)
    assert poses.camera.shape == (N, 4) and (poses.confidence == 1).all()
    assert set(poses.action) == set(MOTIONS)
    assert list(poses.frame[:3]) == [0, 1, 2] and len(np.unique(poses.sequence)) == 240
    assert len(generate(1234, seed=0)) == 1234


def test_deterministic_by_seed():
    a = generate(3000, seed=7, split="val")
    b = generate(3000, seed=7, split="val")
    c = generate(3000, seed=8, split="val")
    for f in ("keypoints_2d", "keypoints_3d", "camera", "subject", "action"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert not np.allclose(a.keypoints_3d, c.keypoints_3d)


def test_splits_use_disjoint_subjects():
    s = default_splits(seed=0, n_train=3000, n_val=1000, n_test=1000)
    subj = {k: set(v.subject) for k, v in s.items()}
    assert not subj["train"] & subj["val"] and not subj["train"] & subj["test"] and not subj["val"] & subj["test"]
    seqs = [set(v.sequence) for v in s.values()]
    assert not seqs[0] & seqs[1] and not seqs[1] & seqs[2]
    assert {k: len(v) for k, v in s.items()} == {"train": 3000, "val": 1000, "test": 1000}


def test_2d_is_the_projection_of_3d(poses):
    rep = project(poses.keypoints_3d, poses.camera)
    np.testing.assert_allclose(rep, poses.keypoints_2d, atol=0.05)


def test_human_proportions_and_placement(poses):
    k3 = poses.keypoints_3d.astype(np.float64)
    pairs = {"thigh": (2, 1), "shin": (3, 2), "upper_arm": (12, 11), "forearm": (13, 12), "spine": (7, 0),
             "chest": (8, 7), "head": (10, 9)}
    for bone, (c, p) in pairs.items():
        mean = np.linalg.norm(k3[:, c] - k3[:, p], axis=1).mean()
        assert abs(mean / BONE_LENGTHS_MM[bone] - 1) < 0.05, bone
    # left and right bones equal within a subject
    np.testing.assert_allclose(np.linalg.norm(k3[:, 2] - k3[:, 1], axis=1),
                               np.linalg.norm(k3[:, 5] - k3[:, 4], axis=1), rtol=1e-3)
    depth = k3[:, 0, 2]
    assert 4500 < np.median(depth) < 5500 and np.percentile(depth, 1) > 3400
    # up is up: y points down in the camera frame, so the head is above the ankles
    assert (k3[:, 10, 1] < np.minimum(k3[:, 3, 1], k3[:, 6, 1])).mean() > 0.97
    height = k3[:, [3, 6], 1].max(1) - k3[:, 10, 1]
    standing = np.isin(poses.action, ["walking", "turning"])
    assert 1450 < np.median(height[standing]) < 1850


def test_full_yaw_and_chirality(poses):
    k3 = poses.keypoints_3d.astype(np.float64)
    left = k3[:, 4] - k3[:, 1]
    up = k3[:, 8] - k3[:, 0]
    fwd = np.cross(left, up)       # the person's forward in a right-handed frame
    yaw = np.arctan2(fwd[:, 0], -fwd[:, 2])
    hist, _ = np.histogram(yaw, bins=8, range=(-np.pi, np.pi))
    assert hist.min() > 0.06 * len(yaw)            # every direction, front and back views
    for hip, knee, ankle in ((1, 2, 3), (4, 5, 6)):
        mid = (k3[:, hip] + k3[:, ankle]) / 2
        out = k3[:, knee] - mid
        bent = np.linalg.norm(out, axis=1) > 60
        assert ((out[bent] * fwd[bent]).sum(1) > 0).mean() > 0.97   # knees bend forward
    nose = ((k3[:, 9] - k3[:, 8]) * fwd).sum(1)
    assert (nose > 0).mean() > 0.9                                   # the face looks forward


def joint_angle(k3, a, b, c):
    u, v = k3[:, a] - k3[:, b], k3[:, c] - k3[:, b]
    cos = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    return 180 - np.degrees(np.arccos(np.clip(cos, -1, 1)))       # 0 = straight


def test_joint_limits_and_smoothness(poses):
    k3 = poses.keypoints_3d.astype(np.float64)
    for a, b, c in ((1, 2, 3), (4, 5, 6), (11, 12, 13), (14, 15, 16)):
        flex = joint_angle(k3, a, b, c)
        assert flex.max() <= 150.5 and flex.min() >= -0.5
    seq = k3.reshape(240, 100, 17, 3)
    speed = np.linalg.norm(np.diff(seq, axis=1), axis=-1) * 50 / 1000   # m/s at 50 fps
    assert speed.max() < 10 and np.median(speed) < 1.0


def test_noise_and_dropped_joints():
    clean = generate(5000, seed=1)
    noisy = generate(5000, seed=1, noise_px=2.0, drop_prob=0.1)
    kept = noisy.confidence > 0
    resid = (noisy.keypoints_2d - clean.keypoints_2d)[kept]
    assert 1.8 < resid.std() < 2.2
    assert 0.08 < 1 - kept.mean() < 0.1 and kept[:, [0, 10]].all()
    assert (noisy.keypoints_2d[~kept] == 0).all()
    np.testing.assert_array_equal(noisy.keypoints_3d, clean.keypoints_3d)


def test_motion_subset_and_argument_errors():
    p = generate(2000, seed=0, motions=["sitting"])
    assert set(p.action) == {"sitting"}
    with pytest.raises(PoseDataError, match="unknown or no motions"):
        generate(100, motions=["flying"])
    with pytest.raises(PoseDataError, match="split must be one of"):
        generate(100, split="dev")
    with pytest.raises(PoseDataError, match="exactly one of"):
        generate(100, n_sequences=2)


def test_fast_enough():
    t = time.perf_counter()
    generate(200_000, seed=0)
    assert time.perf_counter() - t < 20    # ~1.5 s on an idle 2-core machine; generous for CI noise
