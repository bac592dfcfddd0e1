"""Distributed data parallel under torchrun: 2 CPU processes (gloo), tiny networks, few steps."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from fastlift.data.synthetic import generate


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_torchrun_two_processes(tmp_path):
    train = generate(1200, seed=5, split="train", seq_len=50).save(str(tmp_path / "train.npz"))
    val = generate(200, seed=5, split="val", seq_len=50).save(str(tmp_path / "val.npz"))
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    cmd = torchrun + ["--nproc_per_node", "2", "--standalone", "-m", "fastlift.train", "--preset", "tiny",
                      "--data", train, "--val", val, "--steps", "6", "--val-every", "3", "--ckpt-every", "3",
                      "--out", str(out), "--threads", "1", "--tensorboard", "false",
                      # the flow prior too: fitted by each process, rank 0's broadcast, checked with the rest
                      "--w-flow", "0.5", "--flow-steps", "5", "--flow-width", "16", "--flow-layers", "2",
                      # a low accuracy cap: the processes' batch accuracies straddle it, and they must
                      # skip or update together (each update all-reduces the gradients)
                      "--d-acc-cap", "0.6"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log
    st = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert st["world_size"] == 2 and st["step"] == 6
    assert st["loader"]["world_size"] == 2
    assert bool(st["models"]["flow"]["trained"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and "test" in summary
    # the replicas are checked for bitwise agreement at the end of fit (RuntimeError otherwise)
    assert "diverged" not in log
