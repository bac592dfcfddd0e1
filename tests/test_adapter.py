"""The 2D domain adapter (fastlift.training.adapter) and its synthetic wild source (fastlift.data.wild)."""
import numpy as np
import pytest
import torch

from fastlift.data import PoseSet, convert_keypoints, synthetic
from fastlift.data.layouts import COCO17, H36M17
from fastlift.data.normalize import normalize_2d_np
from fastlift.data.wild import render_coco17_3d, render_wild, rescale_bones, synthetic_wild
from fastlift.training import adapter as A

MOCAP = dict(hip_width=1.0, hip_raise=0.0, shoulder_raise=0.0)
SAME_BODY = {"mean": {}, "sd": 0.0}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def wild():
    return synthetic_wild(3000, seed=3, return_truth=True)


@pytest.fixture(scope="module")
def target():
    return synthetic.generate(3000, seed=5, split="train", n_subjects=3)


# ------------------------------------------------------------------------------ wild source
def test_wild_layout_fields_and_determinism(wild):
    ps, truth = wild
    assert ps.layout == "coco17" and ps.keypoints_2d.shape == (3000, 17, 2) and ps.keypoints_3d is None
    assert truth.layout == "h36m17" and truth.keypoints_3d.shape == (3000, 17, 3)
    assert np.array_equal(ps.sequence, truth.sequence) and np.array_equal(ps.frame, truth.frame)
    miss = ps.confidence == 0
    assert 0.01 < miss.mean() < 0.15
    assert np.all(ps.keypoints_2d[miss] == 0)
    present = ps.confidence[~miss]
    assert present.min() > 0 and present.max() <= 1
    assert str(ps.subject[0]).startswith("wild")
    again = synthetic_wild(3000, seed=3)
    assert np.array_equal(again.keypoints_2d, ps.keypoints_2d) and np.array_equal(again.confidence, ps.confidence)
    other = synthetic_wild(3000, seed=4)
    assert not np.allclose(other.keypoints_2d, ps.keypoints_2d)
    # the wild stream is not the generator's stream of the same seed
    gen = synthetic.generate(3000, seed=3)
    assert not np.allclose(truth.keypoints_2d, gen.keypoints_2d)


def test_wild_clean_mocap_rendering_matches_truth():
    ps, truth = synthetic_wild(500, seed=1, noise_scale=0.0, convention=MOCAP, body=SAME_BODY,
                               return_truth=True)
    assert (ps.confidence == 1).all()
    shared = [(COCO17.index(n), H36M17.index(n)) for n in
              ("l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist", "l_hip", "r_hip",
               "l_knee", "r_knee", "l_ankle", "r_ankle")]
    for c_i, h_i in shared:
        np.testing.assert_allclose(ps.keypoints_2d[:, c_i], truth.keypoints_2d[:, h_i], atol=1e-2)


def test_face_keypoints_have_the_right_chirality(wild):
    _, truth = wild
    k3 = truth.keypoints_3d
    coco = render_coco17_3d(k3)
    left_eye = coco[:, COCO17.index("l_eye")] - coco[:, COCO17.index("r_eye")]
    left_ear = coco[:, COCO17.index("l_ear")] - coco[:, COCO17.index("r_ear")]
    left_sho = k3[:, H36M17.index("l_shoulder")] - k3[:, H36M17.index("r_shoulder")]
    assert ((left_eye * left_sho).sum(-1) > 0).mean() > 0.97
    assert ((left_ear * left_sho).sum(-1) > 0).mean() > 0.97
    # the nose is in front of the body: along (left x up) of the torso
    up = k3[:, H36M17.index("thorax")] - k3[:, 0]
    fwd = np.cross(left_sho, up)
    nose = coco[:, COCO17.index("nose")] - k3[:, H36M17.index("neck")]
    assert ((nose * fwd).sum(-1) > 0).mean() > 0.95


def test_rescale_bones():
    k3 = synthetic.generate(50, seed=0).keypoints_3d
    np.testing.assert_allclose(rescale_bones(k3, np.ones((50, 17), np.float32)), k3, atol=1e-4)
    r = np.ones((50, 17), np.float32)
    r[:, 2] = 2.0  # r_knee's bone (thigh): doubled, the shin keeps its length and direction
    out = rescale_bones(k3, r)
    thigh = lambda k: np.linalg.norm(k[:, 2] - k[:, 1], axis=-1)  # noqa: E731
    np.testing.assert_allclose(thigh(out), 2 * thigh(k3), rtol=1e-4)
    np.testing.assert_allclose(out[:, 3] - out[:, 2], k3[:, 3] - k3[:, 2], atol=1e-3)


def test_wild_other_layout():
    ps = synthetic_wild(300, seed=0, layout="openpose18")
    assert ps.layout == "openpose18" and ps.num_joints == 18


# ------------------------------------------------------------------------------ the adapter network
def test_base_map_is_the_conversion_of_complete_poses(wild):
    ps, _ = wild
    M = A.base_map("coco17").numpy()
    ok = (ps.confidence > 0).all(1)
    kp = ps.keypoints_2d[ok][:200]
    ref, _, _ = convert_keypoints(kp, None, "coco17", "h36m17")
    np.testing.assert_allclose(np.einsum("ds,nsk->ndk", M, kp), ref, rtol=1e-5, atol=1e-2)


def test_prepare_source_normalisation_and_drops(wild):
    ps, _ = wild
    sd = A.prepare_source(ps)
    assert sd.dropped + len(sd) == len(ps) and sd.dropped > 0
    assert np.allclose(sd.base[:, 0], 0)
    np.testing.assert_allclose(np.linalg.norm(sd.base[:, 10], axis=-1), 0.1, rtol=1e-4)
    assert np.all(sd.x[sd.conf == 0] == 0)
    # every kept pose has both hips (its root is their midpoint)
    assert (sd.conf[:, [COCO17.index("l_hip"), COCO17.index("r_hip")]] > 0).all()


def test_untrained_adapter_is_the_conversion_and_ignores_missing_coordinates(wild):
    ps, _ = wild
    sd = A.prepare_source(ps)
    ad = A.SourceAdapter("coco17", width=32, blocks=1, out_init_scale=0.0)
    x, c = torch.from_numpy(sd.x[:64]), torch.from_numpy(sd.conf[:64])
    y = ad(x, c)  # base computed inside
    np.testing.assert_allclose(y.detach().numpy(), sd.base[:64], atol=1e-6)
    ad = A.SourceAdapter("coco17", width=32, blocks=1, out_init_scale=1.0)
    c0 = c.clone()
    c0[:, 9] = 0.0  # l_wrist missing: its coordinates must not matter
    x2 = x.clone()
    x2[:, 9] += 0.3
    base = torch.from_numpy(convert_keypoints(x.numpy(), c0.numpy(), "coco17", "h36m17", allow_missing=True)[0])
    torch.testing.assert_close(ad(x, c0, base), ad(x2, c0, base))
    yn = ad.normalized(ad(x, c))
    torch.testing.assert_close(yn[:, 0], torch.zeros(64, 2))
    torch.testing.assert_close(yn[:, 10].norm(dim=-1), torch.full((64,), 0.1))
    assert isinstance(ad, A.DomainAdapter)
    assert sorted(ad.shared[:, 0].tolist()) == [1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16]


# ------------------------------------------------------------------------------ distances
def test_mmd_and_classifier_separate_shifted_sets():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (600, 17, 2)).astype(np.float32) * 0.05
    b = rng.normal(0, 1, (600, 17, 2)).astype(np.float32) * 0.05
    shifted = b + 0.05
    assert abs(A.mmd2(a, b)) < 0.02 < A.mmd2(a, shifted)
    assert A.domain_classifier_accuracy(a, shifted, steps=80) > 0.9
    assert A.domain_classifier_accuracy(a, b, steps=80) < 0.65


# ------------------------------------------------------------------------------ training
def test_train_adapter_closes_a_systematic_gap():
    """Unpaired halves of one target-domain set, the second rendered in COCO-17 without noise or
    body changes: the gap is the layout and the COCO hip convention only. The adapter must bring
    the source poses closer to their (never seen) target-domain truth, and closer in distribution."""
    both = synthetic.generate(8000, seed=5, split="train", n_subjects=3)
    target = both.subset(slice(0, 4000))
    src, truth = render_wild(both.subset(slice(4000, 8000)), seed=2, noise_scale=0.0, body=SAME_BODY,
                             return_truth=True)
    ad, rep = A.train_adapter(target, src, steps=300, batch_size=128, width=64, blocks=1, d_width=64, d_blocks=1,
                              eval_samples=600, classifier_steps=0, log=None)
    assert rep["steps"] == 300 and rep["source_used"] == 4000 and not ad.training
    assert rep["after"]["mmd2"] < rep["before"]["mmd2"], rep
    y, sd = A.adapt_arrays(ad, src)
    t, _ = normalize_2d_np(truth.keypoints_2d[sd.index])
    before = np.linalg.norm((sd.base - t) * 10, axis=-1).mean()
    after = np.linalg.norm((y - t) * 10, axis=-1).mean()
    assert after < 0.75 * before, (before, after)  # measured: 0.067 -> 0.038 head-root units


def test_adapt_poses_and_convert_only(wild):
    ps, _ = wild
    ad = A.SourceAdapter("coco17", width=16, blocks=1, out_init_scale=0.0)
    out = A.adapt_poses(ad, ps, imputed_confidence=0.3)
    conv = A.convert_only(ps)
    assert out.layout == conv.layout == "h36m17" and len(out) == len(conv)
    assert out.keypoints_3d is None and conv.keypoints_3d is None
    present = conv.confidence > 0
    np.testing.assert_allclose(out.keypoints_2d[present], conv.keypoints_2d[present], atol=0.05)
    assert np.all(out.confidence[~present] == pytest.approx(0.3))
    assert np.array_equal(out.sequence, conv.sequence)


def test_extend_training_data(tmp_path, target, wild):
    ps, _ = wild
    path = str(tmp_path / "wild.npz")
    # a file whose layout key says h36m17 although it holds COCO keypoints: --extra-layout fixes it
    PoseSet(keypoints_2d=ps.keypoints_2d, confidence=ps.confidence, sequence=ps.sequence, frame=ps.frame,
            layout="h36m17").save(path)
    logs = []
    conv = A.extend_training_data(target, path, "coco17", adapt=False, target_fraction=0.0, log=logs.append)
    n_extra = len(A.convert_only(ps))
    assert len(conv) == len(target) + n_extra and conv.layout == "h36m17"
    assert len(np.intersect1d(conv.sequence[:len(target)], conv.sequence[len(target):])) == 0
    assert conv.keypoints_3d is None
    np.testing.assert_array_equal(conv.keypoints_2d[:len(target)], target.keypoints_2d)
    cache = str(tmp_path / "adapted.npz")
    small = dict(steps=5, batch_size=32, width=16, blocks=1, d_width=16, d_blocks=1, eval_samples=100,
                 classifier_steps=5)
    ext, rep = A.extend_training_data(target, ps, seed=1, log=logs.append, cache=cache, return_report=True,
                                      target_fraction=0.0, **small)
    n_complete = int((A.prepare_source(ps).base_conf > 0).all(1).sum())
    assert len(ext) == len(target) + n_complete < len(target) + rep["source_used"]
    assert (ext.confidence[len(target):] > 0).all()  # complete poses only (the default)
    assert {"before", "after", "reference"} <= set(rep)
    every = A.extend_training_data(target, ps, seed=1, complete_only=False, smooth_sigma=0.0, target_fraction=0.0,
                                   log=None, **small)
    assert len(every) == len(target) + rep["source_used"]
    # the default mixes target and extra about half and half: the target rows come in whole copies
    few = target.subset(slice(0, 500))
    mixed = A.extend_training_data(few, ps, adapt=False, log=None)
    k = A.target_repeats(len(few), n_extra, 0.5)
    assert k == -(-n_extra // len(few)) > 1 and len(mixed) == k * len(few) + n_extra
    np.testing.assert_array_equal(mixed.keypoints_2d[len(few):2 * len(few)], few.keypoints_2d)
    assert len(np.unique(mixed.sequence)) == k * len(np.unique(few.sequence)) + len(np.unique(ps.sequence))
    assert any("distance to the target" in line for line in logs)
    again = A.extend_training_data(target, ps, cache=cache, target_fraction=0.0, log=None)
    np.testing.assert_array_equal(again.keypoints_2d, ext.keypoints_2d)
    with pytest.raises(A.PoseDataError):
        A.extend_training_data(target, str(tmp_path / "missing.npz"), log=None)
    with pytest.raises(A.PoseDataError):
        A.load_extra(ps, "openpose25")


def test_engine_trains_on_extended_data(tmp_path, target, wild):
    from fastlift.training import TrainConfig
    from fastlift.training.engine import Trainer
    ps, _ = wild
    ext = A.extend_training_data(target, ps, adapt=False, target_fraction=0.0, log=None)
    data = ext.save(str(tmp_path / "train.npz"))
    val = synthetic.generate(300, seed=0, split="val").save(str(tmp_path / "val.npz"))
    cfg = TrainConfig(preset="tiny", data=data, val=val, test=val, out=str(tmp_path / "run"), steps=3,
                      width=32, blocks=1, d_width=32, d_blocks=1, t_width=32, t_blocks=1, batch_size=64,
                      val_every=0, val_samples=128, progress=False, tensorboard=False, max_minutes=0.0, threads=1)
    summary = Trainer(cfg, log=lambda *a, **k: None, install_signal_handlers=False).fit()
    assert summary["steps"] == 3 and np.isfinite(summary["test"]["test"]["p_mpjpe"])


def test_target_repeats():
    assert A.target_repeats(5000, 27000, 0.0) == 1
    assert A.target_repeats(5000, 27000, 0.5) == 6     # 30000 target rows >= 27000 extra
    assert A.target_repeats(5000, 1000, 0.5) == 1
    assert A.target_repeats(1000, 3000, 0.25) == 1
    with pytest.raises(ValueError):
        A.target_repeats(1, 1, 1.0)


def test_temporal_smooth():
    rng = np.random.default_rng(0)
    T, J = 40, 17
    t = np.arange(T, dtype=np.float32)
    line = np.stack([np.stack([100 + 2 * t + j, 50 - t], -1) for j in range(J)], 1)  # (T, J, 2), linear motion
    kp = np.concatenate([line, line + 1000])                     # two sequences, far apart
    seq = np.repeat([7, 9], T)
    frame = np.tile(np.arange(T), 2)
    conf = np.ones((2 * T, J), np.float32)
    conf[5, 3] = 0.0
    kp[5, 3] = 0.0                                               # a missing joint stays missing ...
    ps = PoseSet(keypoints_2d=kp, confidence=conf, sequence=seq, frame=frame)
    assert A.temporal_smooth(ps, 0.0) is ps
    sm = A.temporal_smooth(ps, 1.5)
    inner = np.r_[11:T - 6, T + 6:2 * T - 6]  # away from the ends and from the missing joint (frame 5)
    np.testing.assert_allclose(sm.keypoints_2d[inner], kp[inner], atol=1e-3)  # ... and is not smeared in
    assert np.all(sm.keypoints_2d[5, 3] == 0) and np.array_equal(sm.confidence, conf)
    assert np.abs(sm.keypoints_2d[:T] - kp[:T]).max() < 10           # sequences are not mixed
    noisy = replace_kp(ps, kp + rng.normal(0, 3, kp.shape).astype(np.float32) * (conf[..., None] > 0))
    err = lambda k: np.abs(k[inner] - kp[inner]).mean()  # noqa: E731
    assert err(A.temporal_smooth(noisy, 1.5).keypoints_2d) < 0.5 * err(noisy.keypoints_2d)
    perm = rng.permutation(2 * T)
    shuffled = A.temporal_smooth(noisy.subset(perm), 1.5)
    np.testing.assert_allclose(shuffled.keypoints_2d, A.temporal_smooth(noisy, 1.5).keypoints_2d[perm], atol=1e-4)


def replace_kp(ps, kp):
    from dataclasses import replace
    return replace(ps, keypoints_2d=kp)
