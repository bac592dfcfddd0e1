"""fastlift.Lifter.lift and python -m fastlift.lift: shapes, types, layouts, confidence, metric
scaling, batching, the CLI on pose files, COCO JSON and OpenPose folders, rendering, bad input."""
import warnings
from dataclasses import asdict

import numpy as np
import pytest
import torch

from fastlift.data import PoseDataError, save_poses
from fastlift.data.layouts import convert_keypoints
from fastlift.data.synthetic import generate
from fastlift.evaluation.inference import Lifter, skeleton_height
from fastlift.lift import main as lift_main


def make_checkpoint(path, seed=0, **cfg_over):
    from fastlift.training.checkpoint import save_checkpoint
    from fastlift.training.config import TrainConfig
    from fastlift.training.engine import build_lifter

    cfg = TrainConfig(**{"width": 32, "blocks": 1, "out_init_scale": 1.0, **cfg_over})
    torch.manual_seed(seed)
    model = build_lifter(cfg, 17)
    with torch.no_grad():
        model.set_input_stats(torch.randn(34) * 0.02, torch.rand(34) * 0.1 + 0.05)
    save_checkpoint({"config": asdict(cfg), "step": 0, "models": {"lifter": model.state_dict()}}, str(path))
    return model.eval()


def coco_like(ps):
    """h36m17 poses as a detector would give them in coco17: the face points (which h36m17 lacks)
    placed around the nose (h36m17's neck/nose joint) and the head top."""
    k = np.asarray(ps.keypoints_2d)
    coco, conf, _ = convert_keypoints(k, None, "h36m17", "coco17")
    nose, top = k[:, 9], k[:, 10]
    up = top - nose
    side = np.stack([-up[:, 1], up[:, 0]], -1)
    coco[:, 0] = nose
    coco[:, 1], coco[:, 2] = nose + 0.4 * up + 0.25 * side, nose + 0.4 * up - 0.25 * side   # eyes
    coco[:, 3], coco[:, 4] = nose + 0.3 * up + 0.6 * side, nose + 0.3 * up - 0.6 * side     # ears
    conf[:, :5] = 1.0
    return coco, conf


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("lift")
    model = make_checkpoint(d / "ckpt.pt")
    ps = generate(120, seed=2, split="val", seq_len=40)
    ps.save(str(d / "poses.npz"))
    return d, model, ps, Lifter.from_checkpoint(str(d / "ckpt.pt"), device="cpu")


def test_shapes_types_and_engine_equivalence(setup):
    d, model, ps, lifter = setup
    k = np.asarray(ps.keypoints_2d)
    Y = lifter.lift(k)
    assert isinstance(Y, np.ndarray) and Y.shape == (len(k), 17, 3) and Y.dtype == np.float32
    np.testing.assert_allclose(Y[:, 0], 0.0, atol=1e-6)  # root-relative
    # the engine's model on the engine's normalisation gives the same lift
    from fastlift.training.inputs import normalized_2d
    x, _, _ = normalized_2d(ps, 0, 10, 10.0)
    with torch.no_grad():
        ref = model.lift(torch.from_numpy(x))
    ref = (ref - ref[:, :1]).numpy()
    np.testing.assert_allclose(Y, ref, rtol=1e-4, atol=1e-5)
    # one pose
    y1 = lifter.lift(k[5])
    assert y1.shape == (17, 3)
    np.testing.assert_allclose(y1, Y[5], rtol=1e-5, atol=1e-6)
    # torch in, torch out
    Yt = lifter.lift(torch.from_numpy(k))
    assert isinstance(Yt, torch.Tensor) and Yt.device.type == "cpu"
    np.testing.assert_allclose(Yt.numpy(), Y, rtol=1e-6, atol=1e-7)
    # batching does not change anything
    np.testing.assert_allclose(lifter.lift(k, batch_size=7), Y, rtol=1e-5, atol=1e-6)
    # lift units: the 3D head-root distance is of order 1
    hr = np.linalg.norm(Y[:, 10] - Y[:, 0], axis=-1)
    assert 0.5 < np.median(hr) < 2.0


def test_other_layouts_are_converted(setup):
    d, _, ps, lifter = setup
    k = np.asarray(ps.keypoints_2d)
    coco, cconf = coco_like(ps)
    Y = lifter.lift(coco, layout="coco17", confidence=cconf)
    back, bconf, synth = convert_keypoints(coco, cconf, "coco17", "h36m17")
    assert "head" in synth and "spine" in synth
    np.testing.assert_allclose(Y, lifter.lift(back, confidence=bconf), rtol=1e-5, atol=1e-6)
    assert np.isfinite(Y).all()
    # openpose25 works too
    op, opc, _ = convert_keypoints(coco, cconf, "coco17", "openpose25")
    assert np.isfinite(lifter.lift(op, layout="openpose25", confidence=opc)).all()


def test_layout_mismatch_and_bad_shapes(setup):
    _, _, ps, lifter = setup
    k25 = np.zeros((3, 25, 2), np.float32)
    with pytest.raises(PoseDataError, match="25 joints.*coco17.*openpose25"):
        lifter.lift(k25, layout="coco17")
    with pytest.raises(PoseDataError, match="25 joints"):
        lifter.lift(k25)
    with pytest.raises(PoseDataError, match="unknown layout"):
        lifter.lift(np.zeros((3, 17, 2)), layout="h37m")
    with pytest.raises(PoseDataError, match="shape"):
        lifter.lift(np.zeros((3, 17, 3)))
    with pytest.raises(PoseDataError, match="confidence"):
        lifter.lift(np.asarray(ps.keypoints_2d[:3]), confidence=np.ones((3, 16)))


def test_missing_joints(setup):
    _, _, ps, lifter = setup
    k = np.array(ps.keypoints_2d[:6])
    conf = np.ones((6, 17), np.float32)
    conf[1, 13] = 0           # a wrist: lifted, its coordinates do not matter
    conf[2, 0] = 0            # the root: cannot be normalised
    k[3, 10] = np.nan         # NaN head: counts as missing
    with pytest.warns(RuntimeWarning, match="2 of 6 poses"):
        Y = lifter.lift(k, confidence=conf)
    assert np.isnan(Y[2]).all() and np.isnan(Y[3]).all()
    assert np.isfinite(Y[[0, 1, 4, 5]]).all()
    k2 = k.copy()
    k2[1, 13] += 500.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(lifter.lift(k2, confidence=conf)[1], Y[1], rtol=1e-6)


def test_metric_scaling(setup):
    _, _, ps, lifter = setup
    k = np.asarray(ps.keypoints_2d[:20])
    Y = lifter.lift(k, height=1700.0)
    np.testing.assert_allclose(skeleton_height(Y), 1700.0, rtol=1e-4)
    Yb = lifter.lift(k, bone=("l_hip", "l_knee", 440.0))
    np.testing.assert_allclose(np.linalg.norm(Yb[:, 4] - Yb[:, 5], axis=-1), 440.0, rtol=1e-4)
    # same shape as the unscaled lift
    Y0 = lifter.lift(k)
    ratio = np.linalg.norm(Y[:, 1:], axis=-1) / np.linalg.norm(Y0[:, 1:], axis=-1)
    assert np.std(ratio / ratio.mean(1, keepdims=True)) < 1e-4
    with pytest.raises(ValueError, match="not connected"):
        lifter.lift(k, bone=("l_hip", "r_knee", 400.0))
    # the synthetic ground truth's chain length is close to a real body's
    g = np.asarray(ps.keypoints_3d[:20])
    assert 1400 < np.median(skeleton_height(g)) < 1900


def test_cli_pose_file_coco_openpose(setup, tmp_path, capsys):
    d, _, ps, lifter = setup
    ck = str(d / "ckpt.pt")
    out = tmp_path / "out.npz"
    assert lift_main(["-c", ck, "-i", str(d / "poses.npz"), "-o", str(out)]) == 0
    z = np.load(out)
    assert z["poses_3d"].shape == (len(ps), 17, 3) and str(z["unit"]) == "lift" and z["valid"].all()
    np.testing.assert_allclose(z["poses_3d"], lifter.lift(np.asarray(ps.keypoints_2d)), rtol=1e-5, atol=1e-6)
    for key in ("keypoints_2d", "confidence", "sequence", "frame", "subject", "action", "layout", "source_layout"):
        assert key in z.files
    # COCO JSON (coco17 layout: head, spine, thorax, pelvis synthesised)
    coco = tmp_path / "kp.json"
    from dataclasses import replace
    k, c = coco_like(ps)
    as_coco = replace(ps, keypoints_2d=k, confidence=c, keypoints_3d=None, layout="coco17")
    save_poses(as_coco.subset(slice(0, 30)), str(coco))
    assert lift_main(["-c", ck, "-i", str(coco), "-o", str(tmp_path / "coco.npz"), "--height", "1700"]) == 0
    z = np.load(tmp_path / "coco.npz")
    assert str(z["source_layout"]) == "coco17" and str(z["unit"]) == "mm" and z["poses_3d"].shape == (30, 17, 3)
    np.testing.assert_allclose(skeleton_height(z["poses_3d"]), 1700.0, rtol=1e-4)
    # OpenPose folder, rendered as an animated gif
    opf = tmp_path / "openpose"
    save_poses(as_coco.subset(slice(0, 4)), str(opf), format="openpose")
    gif = tmp_path / "seq.gif"
    assert lift_main(["-c", ck, "-i", str(opf), "-o", str(tmp_path / "op.npz"), "--render", str(gif),
                      "--azim", "60", "--elev", "5", "--fps", "10"]) == 0
    z = np.load(tmp_path / "op.npz")
    assert str(z["source_layout"]) == "openpose25" and len(z["poses_3d"]) == 4 and np.isfinite(z["poses_3d"]).all()
    from PIL import Image
    with Image.open(gif) as im:
        assert im.n_frames == 4
    assert "wrote" in capsys.readouterr().out


def test_cli_refine_bones(setup, tmp_path, capsys):
    """--refine-bones: each person's lifts get one set of bone proportions (Lifter.lift with
    groups), the default leaves the lifts as the network gives them."""
    d, _, ps, lifter = setup
    out = tmp_path / "ref.npz"
    assert lift_main(["-c", str(d / "ckpt.pt"), "-i", str(d / "poses.npz"), "-o", str(out),
                      "--refine-bones", "auto"]) == 0
    assert "refine bones: per subject" in capsys.readouterr().err
    got = np.load(out)["poses_3d"]
    k = np.asarray(ps.keypoints_2d)
    np.testing.assert_allclose(got, lifter.lift(k, groups=np.asarray(ps.subject)), rtol=1e-5, atol=1e-6)
    assert np.abs(got - lifter.lift(k)).max() > 1e-4


def test_cli_errors(setup, tmp_path, capsys):
    d, _, ps, _ = setup
    ck = str(d / "ckpt.pt")
    assert lift_main(["-c", ck, "-i", str(tmp_path / "missing.json"), "-o", str(tmp_path / "o.npz")]) == 2
    assert "missing.json" in capsys.readouterr().err
    (tmp_path / "empty.json").write_text("")
    assert lift_main(["-c", ck, "-i", str(tmp_path / "empty.json"), "-o", str(tmp_path / "o.npz")]) == 2
    assert "empty.json" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 10)
    assert lift_main(["-c", str(tmp_path / "bad.pt"), "-i", str(d / "poses.npz"), "-o", str(tmp_path / "o.npz")]) == 2
    assert "bad.pt" in capsys.readouterr().err
    assert lift_main(["-c", ck, "-i", str(d / "poses.npz"), "-o", str(tmp_path / "o.txt")]) == 2
    assert lift_main(["-c", ck, "-i", str(d / "poses.npz"), "-o", str(tmp_path / "o.npz"), "--render", "x.bmp"]) == 2
    assert lift_main(["-c", ck, "-i", str(d / "poses.npz"), "-o", str(tmp_path / "o.npz"), "--layout", "openpose25"]) == 2
    assert "joints" in capsys.readouterr().err
    from matplotlib import animation
    if not animation.writers.is_available("ffmpeg"):
        assert lift_main(["-c", ck, "-i", str(d / "poses.npz"), "-o", str(tmp_path / "o.npz"),
                          "--render", str(tmp_path / "x.mp4")]) == 2
        assert "ffmpeg" in capsys.readouterr().err


def test_fastlift_Lifter_is_exported():
    import fastlift
    assert fastlift.Lifter is Lifter
    with pytest.raises(AttributeError):
        fastlift.NoSuchThing  # noqa: B018
