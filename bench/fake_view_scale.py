"""How large the rotated, re-normalised lifts (the discriminator's fakes) get, against the real
poses, for trained runs: the largest absolute coordinate of each pose (normalised units, the
head-root distance is 1/c), its median, 99th and 99.9th percentile and maximum over 8 training
batches of the run's own config, with the run's last weights.

    python bench/fake_view_scale.py runs/a runs/b ... [--renorm-floor F]

``--renorm-floor`` replaces the runs' own value (0: the re-normalisation without a floor).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import fields

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (config.json and checkpoints/last.pt)")
    ap.add_argument("--renorm-floor", type=float, default=None)
    ap.add_argument("--batches", type=int, default=8)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from fastlift.training.checkpoint import load_checkpoint
    from fastlift.training.config import TrainConfig, resolve_config
    from fastlift.training.engine import Trainer
    known = {f.name for f in fields(TrainConfig)}
    q = torch.tensor([0.5, 0.99, 0.999])
    for run in args.runs:
        with open(os.path.join(run, "config.json")) as fh:
            values = {k: v for k, v in json.load(fh).items() if k in known}
        if args.renorm_floor is not None:
            values["renorm_floor"] = args.renorm_floor
        with tempfile.TemporaryDirectory() as tmp:
            values.update(out=tmp, resume=None, init=None, progress=False, plots=False, tensorboard=False)
            tr = Trainer(resolve_config(cli_values=values), log=lambda *a: None)
            tr._load_models(load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["models"])
            it = tr._iterate()
            fake, real = [], []
            with torch.no_grad():
                for _ in range(args.batches):
                    x = next(it)["keypoints_2d"]
                    Y = tr._lift(x)
                    y, _, _ = tr._project(Y, tr._rotations(x.shape[0], Y))
                    fake.append(y.abs().flatten(1).amax(1))
                    real.append(x.abs().flatten(1).amax(1))
        for name, v in (("fake", torch.cat(fake)), ("real", torch.cat(real))):
            p50, p99, p999 = (float(t) for t in v.quantile(q))
            print(f"{run[-30:]:30s} {name}: median {p50:.3f}  p99 {p99:.3f}  p99.9 {p999:.3f}  max {float(v.max()):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
