"""Command line of the data layer.

    python -m fastlift.data convert IN OUT [--format F] [--to F] [--layout L] [--with-3d data_3d_h36m.npz]
    python -m fastlift.data info FILE [--format F]
    python -m fastlift.data synth OUT [--poses N | --sequences S] [--split train|val|test|all] [--seed 0] ...
    python -m fastlift.data synth OUT --wild [coco17] [--poses N] [--seed 0]   # the adapter's wild source
    python -m fastlift.data plot FILE OUT.png [--n 12] [--seed 0]

``convert`` reads any supported format (autodetected) and writes a fastlift pose file (or, with
``--to``, another format); it keeps the source layout unless ``--layout`` is given. Exit status 2
and a one-line message on a data error.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

from fastlift.data.errors import PoseDataError
from fastlift.data.formats import FORMATS, detect_format, load_poses, save_poses
from fastlift.data.layouts import LAYOUTS, conversion_info


def _reader_kwargs(args) -> dict:
    kw = {}
    if getattr(args, "with_3d", None):
        kw["path_3d"] = args.with_3d
    return kw


def cmd_convert(args) -> int:
    fmt = args.format or detect_format(args.input)
    poses = load_poses(args.input, format=fmt, mmap=True, **_reader_kwargs(args))
    if args.layout and args.layout != poses.layout:
        info = conversion_info(poses.layout, args.layout)
        poses, synth = poses.to_layout(args.layout)
        if synth:
            print(f"synthesised {args.layout} joints: {', '.join(synth)}")
        if info["missing"]:
            print(f"joints with no source (confidence 0): {', '.join(info['missing'])}")
    out_fmt = args.to or "fastlift"
    kw = {"compress": True} if (out_fmt == "fastlift" and args.compress) else {}
    save_poses(poses, args.output, format=out_fmt, **kw)
    print(f"{args.input} ({fmt}) -> {args.output} ({out_fmt}): {len(poses)} poses, layout {poses.layout}"
          f"{', with 3D' if poses.has_3d else ''}")
    return 0


def cmd_info(args) -> int:
    fmt = args.format or detect_format(args.input)
    poses = load_poses(args.input, format=fmt, **_reader_kwargs(args))
    print(f"file: {args.input}\nformat: {fmt}")
    print(poses.summary())
    return 0


def cmd_synth(args) -> int:
    from fastlift.data import synthetic
    splits = ["train", "val", "test"] if args.split == "all" else [args.split]
    kw = dict(seed=args.seed, seq_len=args.seq_len, fps=args.fps, noise_px=args.noise_px, drop_prob=args.drop_prob)
    if args.motions:
        kw["motions"] = args.motions.split(",")
    if args.wild:
        from fastlift.data.wild import synthetic_wild
        if args.sequences is not None:
            raise SystemExit("synth --wild takes --poses, not --sequences")
        n = args.poses if args.poses is not None else 50_000
        t0 = time.perf_counter()
        poses = synthetic_wild(n, seed=args.seed, layout=args.wild, split=args.split if args.split != "all" else "train")
        poses.save(args.output, compress=args.compress)
        print(f"{args.output}: {len(poses)} synthetic wild {args.wild} poses, 2D only (seed {args.seed}) "
              f"in {time.perf_counter() - t0:.1f} s")
        return 0
    for split in splits:
        out = args.output
        if len(splits) > 1:
            root, ext = os.path.splitext(args.output)
            out = f"{root}_{split}{ext or '.npz'}"
        t0 = time.perf_counter()
        if args.sequences is not None:
            poses = synthetic.generate(n_sequences=args.sequences, split=split, **kw)
        else:
            n = args.poses if args.poses is not None else {"train": 200_000, "val": 20_000, "test": 20_000}[split]
            poses = synthetic.generate(n, split=split, **kw)
        dt = time.perf_counter() - t0
        poses.save(out, compress=args.compress)
        print(f"{out}: {len(poses)} synthetic {split} poses (seed {args.seed}) in {dt:.1f} s")
    return 0


def cmd_plot(args) -> int:
    from fastlift.data.plot import plot_poses
    poses = load_poses(args.input, format=args.format, **_reader_kwargs(args))
    plot_poses(poses, args.output, n=args.n, seed=args.seed, title=os.path.basename(args.input))
    print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m fastlift.data", description="fastlift pose data tools")
    sub = ap.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert any supported pose format to a fastlift pose file")
    c.add_argument("input", help="input file or OpenPose folder")
    c.add_argument("output", help="output path (.npz for a fastlift pose file)")
    c.add_argument("--format", choices=FORMATS, help="input format (default: autodetect)")
    c.add_argument("--to", choices=FORMATS, help="output format (default: fastlift)")
    c.add_argument("--layout", choices=sorted(LAYOUTS), help="convert keypoints to this layout (default: keep)")
    c.add_argument("--with-3d", dest="with_3d", help="VideoPose3D data_3d_h36m.npz to pair with a data_2d file")
    c.add_argument("--compress", action="store_true", help="compressed pose file (cannot be memory-mapped)")
    c.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="summarise a pose file (any supported format)")
    i.add_argument("input")
    i.add_argument("--format", choices=FORMATS)
    i.add_argument("--with-3d", dest="with_3d")
    i.set_defaults(func=cmd_info)

    s = sub.add_parser("synth", help="write synthetic poses (procedural motion) to a pose file")
    s.add_argument("output", help="output .npz (with --split all: OUT_train.npz, OUT_val.npz, OUT_test.npz)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--poses", type=int, help="number of poses (default 200k train, 20k val/test)")
    g.add_argument("--sequences", type=int, help="number of whole sequences")
    s.add_argument("--split", default="train", choices=["train", "val", "test", "all"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--seq-len", dest="seq_len", type=int, default=250)
    s.add_argument("--fps", type=float, default=50.0)
    s.add_argument("--noise-px", dest="noise_px", type=float, default=0.0)
    s.add_argument("--drop-prob", dest="drop_prob", type=float, default=0.0)
    s.add_argument("--motions", help="comma-separated subset of walking,reaching,bending,sitting,turning,random")
    s.add_argument("--compress", action="store_true")
    s.add_argument("--wild", nargs="?", const="coco17", default=None, metavar="LAYOUT",
                   help="2D poses 'in the wild' instead (another layout, default coco17; other bodies, cameras, "
                        "detector noise and missing joints; no 3D): the 2D domain adapter's synthetic source "
                        "(default 50k poses)")
    s.set_defaults(func=cmd_synth)

    p = sub.add_parser("plot", help="draw sampled poses to a PNG")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--with-3d", dest="with_3d")
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_plot)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            return args.func(args)
    except PoseDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
