"""fastlift.Lifter.from_checkpoint + python -m fastlift.evaluate: the engine's own numbers are
reproduced, the JSON has the documented keys, bad input gives clear errors naming the file."""
import json
import os
from dataclasses import asdict

import numpy as np
import pytest
import torch

from fastlift.data.synthetic import generate
from fastlift.evaluate import main as evaluate_main
from fastlift.evaluation.inference import CheckpointError, Lifter
from fastlift.evaluation.report import evaluate_lifter


def make_checkpoint(path, seed=0, **cfg_over):
    """A checkpoint as the engine writes it, with random (non-trivial) weights and BN statistics."""
    from fastlift.training.checkpoint import save_checkpoint
    from fastlift.training.config import TrainConfig
    from fastlift.training.engine import build_lifter

    cfg = TrainConfig(**{"width": 32, "blocks": 1, "out_init_scale": 1.0, **cfg_over})
    torch.manual_seed(seed)
    model = build_lifter(cfg, 17)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        model.set_input_stats(torch.randn(34) * 0.02, torch.rand(34) * 0.1 + 0.05)
    save_checkpoint({"config": asdict(cfg), "step": 0, "models": {"lifter": model.state_dict()}}, str(path))
    return model.eval(), cfg


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaluate")
    ps = generate(1500, seed=0, split="test", seq_len=50, drop_prob=0.05)
    ps.save(str(d / "test.npz"))
    model, cfg = make_checkpoint(d / "ckpt.pt")
    return d, ps, model, cfg


def engine_numbers(model, ps, c=10.0):
    """What the engine's validation computes (training.inputs + training.evaluate)."""
    from fastlift.training.evaluate import pose_metrics
    from fastlift.training.inputs import check_pose_set, make_eval_set
    from fastlift.training.config import TrainConfig
    ps = check_pose_set(ps, TrainConfig(), "test data", 0, 10, need_3d=True, min_poses=1)
    ev = make_eval_set(ps, 0, 10, c, 0)
    with torch.no_grad():
        Y = model.eval().lift(ev.x)
    return pose_metrics(Y - Y[:, :1], ev.target, ev.x), len(ev)


def test_from_checkpoint_reproduces_engine_metrics(files):
    d, ps, model, _ = files
    lifter = Lifter.from_checkpoint(str(d / "ckpt.pt"), device="cpu")
    assert lifter._fast is not None  # the folded network is used and was checked
    ref, n = engine_numbers(model, ps)
    rep = evaluate_lifter(lifter, str(d / "test.npz"), diagnostics=True, batch_size=400)
    assert rep.n_poses == n and rep.n_skipped == len(ps) - n
    assert rep.p_mpjpe == pytest.approx(ref["p_mpjpe"], rel=1e-4)
    assert rep.n_mpjpe == pytest.approx(ref["n_mpjpe"], rel=1e-4)
    assert rep.mpjpe == pytest.approx(ref["mpjpe_scaled"], rel=1e-4)
    assert rep.extra["p_mpjpe_flip"] == pytest.approx(ref["p_mpjpe_flip"], rel=1e-4)
    assert rep.extra["p_mpjpe_flat"] == pytest.approx(ref["p_mpjpe_flat"], rel=1e-4)
    # eager (unfolded) and folded paths agree
    eager = Lifter.from_checkpoint(str(d / "ckpt.pt"), device="cpu", fold=False)
    k = np.asarray(ps.keypoints_2d[:50])
    np.testing.assert_allclose(lifter.lift(k), eager.lift(k), rtol=1e-4, atol=1e-5)


def test_from_checkpoint_takes_the_moving_average_of_the_weights(files, tmp_path):
    """A checkpoint holds the raw weights and their moving average; the engine validates and tests
    the average, so every user of the checkpoint (evaluate, lift, export) must get it too."""
    from fastlift.training.checkpoint import save_checkpoint
    raw, cfg = make_checkpoint(tmp_path / "raw.pt", seed=1)
    avg, _ = make_checkpoint(tmp_path / "avg.pt", seed=2)
    save_checkpoint({"config": asdict(cfg), "step": 0,
                     "models": {"lifter": raw.state_dict(), "lifter_ema": avg.state_dict()}}, str(tmp_path / "both.pt"))
    x = torch.from_numpy(np.asarray(files[1].keypoints_2d[:40], dtype=np.float32))
    x = (x - x[:, :1]) / (x[:, 10:11] - x[:, :1]).norm(dim=-1, keepdim=True) / 10.0
    got = Lifter.from_checkpoint(str(tmp_path / "both.pt"), device="cpu", fold=False).model(x)
    with torch.no_grad():
        torch.testing.assert_close(got, avg(x))
        assert (got - raw(x)).abs().max() > 1e-3


def test_engine_run_end_to_end(tmp_path):
    """A real (tiny) training run: evaluate reproduces the test numbers in its summary.json."""
    from fastlift.training.config import resolve_config
    from fastlift.training.engine import train
    for split, n in (("train", 1500), ("val", 300), ("test", 400)):
        generate(n, seed=1, split=split, seq_len=50).save(str(tmp_path / f"{split}.npz"))
    cfg = resolve_config(cli_values={"preset": "tiny", "out": str(tmp_path / "run"), "tensorboard": False,
                                     "data": str(tmp_path / "train.npz"), "val": str(tmp_path / "val.npz"),
                                     "test": str(tmp_path / "test.npz"), "steps": 4, "val_every": 2,
                                     "use_temporal": False, "progress": False})
    summary = train(cfg, log=lambda *a, **k: None)
    ref = summary["test"]["test"]
    out = tmp_path / "e.json"
    assert evaluate_main(["--checkpoint", str(tmp_path / "run"), "--data", str(tmp_path / "test.npz"),
                          "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    # evaluate runs the BN-folded float32 network, the engine the eager one: summation order differs,
    # and a clean-clone CI run saw 1.1e-4 relative (0.012 mm) between them.
    assert got["p_mpjpe"] == pytest.approx(ref["p_mpjpe"], rel=1e-3)
    assert got["n_mpjpe"] == pytest.approx(ref["n_mpjpe"], rel=1e-3)
    assert got["mpjpe"] == pytest.approx(ref["mpjpe_scaled"], rel=1e-3)
    # the test file names its subjects: both refine the lifts to one skeleton per subject
    assert got["refine_bones"] == "per subject"
    assert got["p_mpjpe_refined"] == pytest.approx(ref["p_mpjpe_refined"], rel=1e-3)
    assert got["n_mpjpe_refined"] == pytest.approx(ref["n_mpjpe_refined"], rel=1e-3)
    assert evaluate_main(["--checkpoint", str(tmp_path / "run"), "--data", str(tmp_path / "test.npz"),
                          "--json", str(out), "--refine-bones", "none"]) == 0
    assert "p_mpjpe_refined" not in json.loads(out.read_text())


def test_cli_table_and_json(files, capsys):
    d, ps, _, _ = files
    out = d / "out.json"
    rc = evaluate_main(["--checkpoint", str(d / "ckpt.pt"), "--data", str(d / "test.npz"), "--json", str(out),
                        "--per-joint", "--per-subject", "--batch-size", "512"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "P-MPJPE" in text and "MPJPE*" in text and "one least-squares scale" in text
    for a in np.unique(ps.action):
        assert a in text
    got = json.loads(out.read_text())
    for key in ("mpjpe", "p_mpjpe", "n_mpjpe", "pck150", "auc", "n_poses"):
        assert key in got
    assert got["n_poses"] > 0 and 0 <= got["pck150"] <= 100 and 0 <= got["auc"] <= 100
    assert got["p_mpjpe"] <= got["n_mpjpe"] + 1e-6  # Procrustes can only do better than scale alone
    assert set(got["per_action"]) == set(np.unique(ps.action))
    assert sum(r["n_poses"] for r in got["per_action"].values()) == got["n_poses"]
    assert "pelvis" in got["per_joint"] and got["per_joint"]["pelvis"]["mpjpe"] == pytest.approx(0.0, abs=1e-6)
    assert "protocol" in got and "procrustes" in got["protocol"]["pck150"]


def test_no_actions_no_per_action_rows(files, tmp_path):
    d, ps, _, _ = files
    from dataclasses import replace
    replace(ps.subset(slice(0, 200)), action=None, subject=None).save(str(tmp_path / "na.npz"))
    rep = evaluate_lifter(Lifter.from_checkpoint(str(d / "ckpt.pt")), str(tmp_path / "na.npz"))
    assert rep.per_action is None and rep.n_poses > 0
    assert "\naction " not in rep.format_table()


def test_bad_inputs_name_the_file(files, tmp_path, capsys):
    d, ps, _, _ = files
    ckpt, data = str(d / "ckpt.pt"), str(d / "test.npz")
    # a checkpoint that is not one
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="bogus.pt"):
        Lifter.from_checkpoint(str(bogus))
    torch.save({"hello": 1}, str(tmp_path / "other.pt"))
    with pytest.raises(CheckpointError, match="other.pt"):
        Lifter.from_checkpoint(str(tmp_path / "other.pt"))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):
        Lifter.from_checkpoint(str(empty))
    with pytest.raises(CheckpointError, match="missing.pt"):
        Lifter.from_checkpoint(str(tmp_path / "missing.pt"))
    # weights that do not fit the config
    st = torch.load(ckpt, weights_only=False)
    st["config"]["width"] = 64
    torch.save(st, str(tmp_path / "mismatch.pt"))
    with pytest.raises(CheckpointError, match="mismatch.pt"):
        Lifter.from_checkpoint(str(tmp_path / "mismatch.pt"))
    # CLI: clear one-line errors, exit status 2
    assert evaluate_main(["--checkpoint", str(bogus), "--data", data]) == 2
    assert "bogus.pt" in capsys.readouterr().err
    # data without 3D labels
    from dataclasses import replace
    replace(ps.subset(slice(0, 10)), keypoints_3d=None).save(str(tmp_path / "no3d.npz"))
    assert evaluate_main(["--checkpoint", ckpt, "--data", str(tmp_path / "no3d.npz")]) == 2
    err = capsys.readouterr().err
    assert "no3d.npz" in err and "3D" in err
    # an empty pose file
    replace(ps.subset(slice(0, 0))).save(str(tmp_path / "empty.npz"))
    assert evaluate_main(["--checkpoint", ckpt, "--data", str(tmp_path / "empty.npz")]) == 2
    assert "empty.npz" in capsys.readouterr().err
    # an empty file that is not even a zip
    (tmp_path / "zero.npz").write_bytes(b"")
    assert evaluate_main(["--checkpoint", ckpt, "--data", str(tmp_path / "zero.npz")]) == 2
    assert "zero.npz" in capsys.readouterr().err
    # a missing data file
    assert evaluate_main(["--checkpoint", ckpt, "--data", str(tmp_path / "nope.npz")]) == 2
    assert "nope.npz" in capsys.readouterr().err


def test_run_folder_and_bf16(files, tmp_path):
    d, ps, _, _ = files
    run = tmp_path / "run"
    os.makedirs(run / "checkpoints")
    os.link(d / "ckpt.pt", run / "checkpoints" / "last.pt")
    fp32 = Lifter.from_checkpoint(str(run))
    bf16 = Lifter.from_checkpoint(str(run), precision="bf16")
    k = np.asarray(ps.keypoints_2d[:64])
    a, b = fp32.lift(k), bf16.lift(k)
    assert np.isfinite(b).all() and np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_flip_test_averages_the_lift_and_its_mirror(files, tmp_path):
    """flip_test = mean of the lift and the mirrored lift of the mirrored input; still reprojects
    onto the input; a mirror-symmetric network gives the same pose; the CLI flag reaches it."""
    d, ps, model, _ = files
    from fastlift.data.layouts import get_layout
    plain = Lifter.from_checkpoint(str(d / "ckpt.pt"), device="cpu")
    flip = Lifter.from_checkpoint(str(d / "ckpt.pt"), device="cpu", flip_test=True)
    perm = torch.as_tensor(get_layout("h36m17").flip_index)
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(23, 17, 2, generator=g) - 0.5) * 0.2
    x[:, 0] = 0
    Y, Yf = plain.lift_normalized(x), flip.lift_normalized(x)
    mirrored = plain.lift_normalized(x[:, perm] * torch.tensor([-1.0, 1.0]))[:, perm] * torch.tensor([-1.0, 1.0, 1.0])
    torch.testing.assert_close(Yf, 0.5 * (Y + mirrored))
    assert not torch.allclose(Y, Yf, atol=1e-3)  # the random network is not mirror-symmetric
    # it still reprojects onto the input: with x_root = 0, X_j = x_j (Z_j + z_root) for every joint,
    # i.e. X_j / x_j - Z_j is the same (the root's depth) for all joints of a pose
    zr = Yf[:, 1:, 0] / x[:, 1:, 0] - Yf[:, 1:, 2]
    torch.testing.assert_close(zr, zr[:, :1].expand_as(zr), rtol=1e-3, atol=1e-3)
    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    assert evaluate_main(["--checkpoint", str(d / "ckpt.pt"), "--data", str(d / "test.npz"), "--json", str(out1)]) == 0
    assert evaluate_main(["--checkpoint", str(d / "ckpt.pt"), "--data", str(d / "test.npz"), "--json", str(out2),
                          "--flip-test"]) == 0
    a, b = json.loads(out1.read_text()), json.loads(out2.read_text())
    assert a["p_mpjpe"] != b["p_mpjpe"] and np.isfinite(b["p_mpjpe"])
