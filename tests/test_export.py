"""python -m fastlift.export: TorchScript and ONNX files give the eager lifter's output."""
import importlib.util
from dataclasses import asdict

import numpy as np
import pytest
import torch

from fastlift.evaluation.inference import Lifter
from fastlift.export import check_export, main as export_main, run_exported


def make_checkpoint(path, seed=0, **cfg_over):
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
        model.set_input_stats(torch.randn(34) * 0.02, torch.rand(34) * 0.1 + 0.05)
    save_checkpoint({"config": asdict(cfg), "step": 0, "models": {"lifter": model.state_dict()}}, str(path))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    make_checkpoint(d / "ckpt.pt")
    make_checkpoint(d / "hard.pt", seed=1, depth_floor="hard", activation="gelu")
    return d


@pytest.mark.parametrize("name", ["ckpt.pt", "hard.pt"])
def test_torchscript_matches_eager(ckpt, tmp_path, name, capsys):
    out = tmp_path / "lifter.pt"
    assert export_main(["--checkpoint", str(ckpt / name), "--format", "torchscript", "--output", str(out)]) == 0
    assert "matches the eager lifter" in capsys.readouterr().out
    lifter = Lifter.from_checkpoint(str(ckpt / name), device="cpu")
    # an independent check on other poses and another batch size
    rng = np.random.default_rng(3)
    kp = (500 + 60 * rng.normal(size=(5, 17, 2))).astype(np.float32)
    kp[:, 10] = kp[:, 0] + np.array([0.0, -300.0])  # a head above the root
    got = run_exported(str(out), kp, np.ones((5, 17), np.float32))
    np.testing.assert_allclose(got, lifter.lift(kp), rtol=1e-4, atol=1e-5)


def test_onnx_matches_eager(ckpt, tmp_path):
    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None:
        pytest.skip("ONNX export needs the onnx and onnxscript packages (pip install onnx onnxscript)")
    out = tmp_path / "lifter.onnx"
    assert export_main(["--checkpoint", str(ckpt / "ckpt.pt"), "--format", "onnx", "--output", str(out)]) == 0
    import onnx
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["keypoints_2d", "confidence"]
    lifter = Lifter.from_checkpoint(str(ckpt / "ckpt.pt"), device="cpu")
    assert check_export(str(out), lifter, n=7) < 1e-4   # a batch size other than the traced one


def test_export_errors(ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_text("nope")
    assert export_main(["--checkpoint", str(bad), "--format", "torchscript", "--output", str(tmp_path / "x.pt")]) == 2
    assert "bad.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_main(["--checkpoint", str(ckpt / "ckpt.pt"), "--format", "tflite", "--output", "x"])
