"""Lift 2D keypoints to 3D with a trained lifter, optionally rendering the result.

    python -m fastlift.lift --checkpoint CKPT --input FILE --output OUT.npz [--render OUT.png|OUT.gif|OUT.mp4]

``--input`` is anything :func:`fastlift.data.load_poses` reads: a fastlift pose file, a COCO
keypoint JSON, an OpenPose output folder (one JSON per frame), VideoPose3D or MPI-INF-3DHP files;
its layout (coco17, openpose25, ...) is converted to h36m17. The output ``.npz`` holds:

===============  ==============  ==============================================================
``poses_3d``     (N, 17, 3) f4   lifted h36m17 poses, root-relative, camera frame (x right, y
                                 down, z forward), in ``unit`` (NaN where ``valid`` is False)
``unit``         () str          ``"lift"`` (the method's normalised unit, see docs/evaluation.md)
                                 or ``"mm"`` with ``--height`` / ``--bone``
``valid``        (N,) bool       pose could be normalised (root and head present)
``keypoints_2d`` (N, 17, 2) f4   the 2D input converted to h36m17, pixels
``confidence``   (N, 17) f4      its per-joint confidence (0 = missing)
``layout``       () str          ``"h36m17"``; ``source_layout`` the input's layout
``sequence``, ``frame``, and ``subject`` / ``action`` when the input has them
===============  ==============  ==============================================================

``--render`` draws the 2D input beside the lifted 3D skeleton (``--azim`` / ``--elev`` in degrees
relative to the input camera): a ``.png`` of frame ``--frame``, or every frame (up to
``--max-frames``) as an animated ``.gif`` (Pillow) or ``.mp4`` (needs ffmpeg).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

__all__ = ["main", "build_parser", "lift_file"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fastlift.lift",
                                description="Lift 2D keypoints (pose file, COCO JSON, OpenPose folder) to 3D.")
    p.add_argument("--checkpoint", "-c", required=True, help="training checkpoint (.pt) or run folder")
    p.add_argument("--input", "-i", required=True, help="pose file, COCO keypoint JSON or OpenPose JSON folder")
    p.add_argument("--output", "-o", required=True, help="output .npz (poses_3d, valid, keypoints_2d, ...)")
    p.add_argument("--format", default=None, help="input format if it cannot be told from the name "
                                                  "(fastlift, coco, openpose, videopose3d, mpi_inf_3dhp)")
    p.add_argument("--layout", default=None, help="override the input's layout (e.g. coco17, openpose25)")
    p.add_argument("--height", type=float, default=None,
                   help="scale every pose so its head-to-ankle chain is this long (e.g. 1650 for mm)")
    p.add_argument("--bone", nargs=3, metavar=("JOINT_A", "JOINT_B", "LENGTH"), default=None,
                   help="scale every pose so this h36m17 bone has this length, e.g. --bone l_hip l_knee 440")
    p.add_argument("--render", default=None, help="also draw the 2D input and the 3D lift: .png, .gif or .mp4")
    p.add_argument("--azim", type=float, default=30.0, help="3D view azimuth, degrees from the input camera (default 30)")
    p.add_argument("--elev", type=float, default=15.0, help="3D view elevation, degrees (default 15)")
    p.add_argument("--frame", type=int, default=0, help="pose drawn in a .png (default 0)")
    p.add_argument("--max-frames", type=int, default=300, help="at most this many frames in a .gif/.mp4 (default 300)")
    p.add_argument("--fps", type=float, default=25.0, help="animation frames per second (default 25)")
    p.add_argument("--batch-size", type=int, default=65536)
    p.add_argument("--flip-test", action="store_true",
                   help="also lift each pose mirrored and average the two (test-time flip augmentation; 2x the work)")
    p.add_argument("--refine-bones", default="none", choices=("none", "auto", "subject", "sequence"),
                   help="give each person's lifts one set of bone proportions (auto: per subject when the file "
                        "names subjects, else per sequence; default none)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    return p


def lift_file(lifter, path: str, out: str, *, format: str | None = None, layout: str | None = None,
              height: float | None = None, bone=None, batch_size: int = 65536, refine_bones: str = "none") -> dict:
    """Lift every pose of ``path`` and write ``out`` (see the module docstring). Returns the arrays.
    ``refine_bones``: refine the lifts to one skeleton per person
    (:func:`fastlift.evaluation.refine.refine_groups` says who is who)."""
    import warnings

    from fastlift.data import PoseDataError, load_poses
    from fastlift.data.layouts import H36M17, convert_keypoints

    ps = load_poses(path, format=format)
    if layout is not None and layout != ps.layout:
        from dataclasses import replace
        ps = replace(ps, layout=layout)  # re-validated: the joint count must fit
    if len(ps) == 0:
        raise PoseDataError(f"{path}: holds no poses to lift")
    k2, conf, _ = convert_keypoints(np.asarray(ps.keypoints_2d), np.asarray(ps.confidence), ps.layout, H36M17)
    from fastlift.evaluation.refine import refine_groups
    groups, how = refine_groups(ps, refine_bones)
    if refine_bones != "none":
        print(f"refine bones: {how}", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Y = lifter.lift(k2, layout=H36M17.name, confidence=conf, height=height, bone=bone, batch_size=batch_size,
                        groups=groups)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    valid = np.isfinite(Y).all(axis=(1, 2))
    arrays = {
        "poses_3d": Y.astype(np.float32),
        "unit": np.array("mm" if (height is not None or bone is not None) else "lift"),
        "valid": valid,
        "keypoints_2d": k2.astype(np.float32),
        "confidence": conf.astype(np.float32),
        "layout": np.array(H36M17.name),
        "source_layout": np.array(ps.layout),
        "sequence": np.asarray(ps.sequence),
        "frame": np.asarray(ps.frame),
    }
    for name in ("subject", "action"):
        v = getattr(ps, name)
        if v is not None:
            arrays[name] = np.asarray(v)
    from fastlift._atomic import atomic_write
    atomic_write(out, lambda fh: np.savez(fh, **arrays))
    arrays["_poses"] = ps
    return arrays


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from fastlift.data.errors import PoseDataError
    from fastlift.evaluation.inference import CheckpointError, Lifter
    from fastlift.evaluation.render import RenderError, render_lift

    if not args.output.endswith(".npz"):
        print(f"error: --output must end in .npz, got {args.output!r}", file=sys.stderr)
        return 2
    if args.height is not None and args.bone is not None:
        print("error: give --height or --bone, not both", file=sys.stderr)
        return 2
    bone = None
    if args.bone is not None:
        try:
            bone = (args.bone[0], args.bone[1], float(args.bone[2]))
        except ValueError:
            print(f"error: --bone LENGTH must be a number, got {args.bone[2]!r}", file=sys.stderr)
            return 2
    if args.render is not None:
        ext = os.path.splitext(args.render)[1].lower()
        if ext not in (".png", ".gif", ".mp4"):
            print(f"error: --render must end in .png, .gif or .mp4, got {args.render!r}", file=sys.stderr)
            return 2
        if ext == ".mp4":
            from matplotlib import animation
            if not animation.writers.is_available("ffmpeg"):
                print(f"error: {args.render}: writing .mp4 needs ffmpeg, which is not installed; "
                      f"use a .gif (Pillow) instead", file=sys.stderr)
                return 2
    try:
        lifter = Lifter.from_checkpoint(args.checkpoint, device=args.device, precision=args.precision,
                                        flip_test=args.flip_test)
        arrays = lift_file(lifter, args.input, args.output, format=args.format, layout=args.layout,
                           height=args.height, bone=bone, batch_size=args.batch_size,
                           refine_bones=args.refine_bones)
    except (CheckpointError, PoseDataError, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n, nv = len(arrays["valid"]), int(arrays["valid"].sum())
    print(f"lifted {n} poses ({n - nv} could not be normalised) from {args.input} "
          f"[{arrays['source_layout']} -> h36m17]; wrote {args.output} (unit: {arrays['unit']})")
    if args.render is not None:
        ps = arrays["_poses"]
        sl = slice(0, max(1, args.max_frames)) if not args.render.lower().endswith(".png") else slice(None)
        try:
            render_lift(np.asarray(ps.keypoints_2d)[sl], arrays["poses_3d"][sl], args.render, layout_2d=ps.layout,
                        confidence=np.asarray(ps.confidence)[sl], azim=args.azim, elev=args.elev, frame=args.frame,
                        fps=args.fps, title=os.path.basename(os.path.normpath(args.input)),
                        unit="lift unit" if str(arrays["unit"]) == "lift" else "mm")
        except RenderError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.render}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
