"""Train a lifter: ``python -m fastlift.train [--config FILE] [--preset NAME] [--FIELD VALUE ...]``.

With no arguments it trains the unsupervised lifter on the embedded synthetic data (a few
minutes on a 2-core CPU) and writes ``runs/<timestamp>/``. Every field of
:class:`fastlift.training.TrainConfig` is a flag (``--width 512``, ``--no-batch-norm``,
``--azimuth-range -180 180``); precedence is defaults < preset < config file < flags.

Examples::

    python -m fastlift.train                                   # synthetic data, default recipe
    python -m fastlift.train --data my_2d.npz --val labelled.npz --out runs/mine
    python -m fastlift.train --mode supervised                 # the upper reference
    python -m fastlift.train --use-discriminator false         # the no-D ablation
    python -m fastlift.train --preset paper --amp bf16
    python -m fastlift.train --resume runs/mine                # continue exactly
    torchrun --nproc_per_node 2 -m fastlift.train --steps 500  # data parallel

Exit status: 0 done, 2 bad configuration or data (nothing trained), 130/143 stopped by
SIGINT/SIGTERM after writing a checkpoint (resume with --resume).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
import typing

__all__ = ["main", "build_parser"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    from fastlift.training.config import PRESETS, TrainConfig
    p = argparse.ArgumentParser(
        prog="python -m fastlift.train",
        description="Train a 3D pose lifter from 2D keypoints by geometric self-supervision (Chen et al. 2019).",
        epilog="Precedence: defaults < --preset < --config file < flags. docs/training.md describes every field.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, argument_default=argparse.SUPPRESS,
        allow_abbrev=False)
    p.add_argument("--config", metavar="FILE", help="TOML (or YAML/JSON) file of config fields")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    groups = {}
    for f in dataclasses.fields(TrainConfig):
        tp = hints[f.name]
        help_ = f.metadata.get("help", "") + f" (default: {getattr(defaults, f.name)!r})"
        kw = dict(help=help_.replace("%", "%%"))
        if "choices" in f.metadata:
            kw["choices"] = list(f.metadata["choices"])
        if f.name == "preset":
            kw["choices"] = list(PRESETS)
        if tp is bool:
            kw.update(nargs="?", const="true", metavar="BOOL")
            p.add_argument(_flag(f.name), dest=f.name, **kw)
            p.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_const", const="false",
                           help=argparse.SUPPRESS)
        elif typing.get_origin(tp) in (list, typing.List):  # --azimuth-range -90 90 or --azimuth-range=-90,90
            p.add_argument(_flag(f.name), dest=f.name, metavar=("LOW", "HIGH"), nargs="+", **kw)
        else:
            p.add_argument(_flag(f.name), dest=f.name, metavar=f.name.upper(), **kw)
        groups[f.name] = True
    return p


def _unknown_flag_message(arg: str, parser: argparse.ArgumentParser) -> str:
    opts = [o for a in parser._actions for o in a.option_strings]
    close = difflib.get_close_matches(arg.split("=")[0], opts, n=1, cutoff=0.5)
    return f"unknown option {arg!r}" + (f"; did you mean {close[0]!r}?" if close else "")


def parse_config(argv=None):
    """(TrainConfig, extra) from command-line arguments; raises ConfigError on bad input."""
    from fastlift.training.checkpoint import load_checkpoint
    from fastlift.training.config import ConfigError, load_config_file, resolve_config
    parser = build_parser()
    ns, unknown = parser.parse_known_args(argv)
    if unknown:
        raise ConfigError(_unknown_flag_message(unknown[0], parser))
    args = vars(ns)
    extra = {k: args.pop(k) for k in ("config", "print_config", "list_presets") if k in args}
    file_values = load_config_file(extra["config"]) if "config" in extra else {}
    base = None
    resume = args.get("resume", file_values.get("resume"))
    if resume:  # a resumed run starts from the checkpoint's config; flags may change safe fields
        base = dict(load_checkpoint(resume)["config"])
        base.pop("resume", None)
        base.pop("init", None)
    for k, v in list(args.items()):
        if isinstance(v, list):
            args[k] = ",".join(v)
    cfg = resolve_config(file_values, args, base=base)
    return cfg, extra


def main(argv=None) -> int:
    from fastlift.data.errors import PoseDataError
    from fastlift.training.config import PRESETS, ConfigError, config_to_toml
    try:
        cfg, extra = parse_config(argv)
        if extra.get("list_presets"):
            for name, values in PRESETS.items():
                print(f"{name}: {json.dumps(values) if values else '(the defaults)'}")
            return 0
        if extra.get("print_config"):
            print(config_to_toml(cfg), end="")
            return 0
        from fastlift.training.engine import Trainer
        trainer = Trainer(cfg)
    except (ConfigError, PoseDataError) as exc:
        print(f"fastlift.train: error: {exc}", file=sys.stderr)
        return 2
    summary = trainer.fit()
    if trainer.rank == 0:
        print(f"run directory: {summary['out']}  ({summary['steps']} steps, {summary['train_seconds']:.0f} s, "
              f"stopped by {summary['stopped_by']})")
    if summary.get("interrupted"):
        sig = summary["stopped_by"].split()[-1]
        print(f"checkpoint written; continue with: python -m fastlift.train --resume {summary['out']}", file=sys.stderr)
        return 143 if sig == "SIGTERM" else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
