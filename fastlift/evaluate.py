"""Score a trained lifter on a 3D-labelled pose file.

    python -m fastlift.evaluate --checkpoint runs/x/checkpoints/last.pt --data test.npz [--json out.json]

Lifts every usable pose of the file (any format :func:`fastlift.data.load_poses` reads that has 3D
labels: a fastlift pose file, VideoPose3D, MPI-INF-3DHP), and prints MPJPE (after the scale
alignment it states), P-MPJPE, N-MPJPE, PCK@150mm and AUC in mm / %, with per-action rows when the
file has actions. ``--json`` writes the same numbers (keys ``mpjpe``, ``p_mpjpe``, ``n_mpjpe``,
``pck150``, ``auc``, ``n_poses``, plus the protocol and the tables). See docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from fastlift.evaluation.pck import ALIGNMENTS

    p = argparse.ArgumentParser(prog="python -m fastlift.evaluate",
                                description="Score a trained lifter on a 3D-labelled pose file (errors in mm).")
    p.add_argument("--checkpoint", "-c", required=True, help="training checkpoint (.pt) or run folder")
    p.add_argument("--data", "-d", required=True, help="3D-labelled pose file (fastlift .npz, VideoPose3D, MPI-INF-3DHP)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the numbers to this JSON file")
    p.add_argument("--mpjpe-align", default="global_scale", choices=ALIGNMENTS,
                   help="alignment before MPJPE (default global_scale: root + one least-squares scale for the set)")
    p.add_argument("--pck-align", default="procrustes", choices=ALIGNMENTS,
                   help="alignment before PCK/AUC (default procrustes)")
    p.add_argument("--per-subject", action="store_true", help="add per-subject rows")
    p.add_argument("--per-joint", action="store_true", help="add per-joint rows")
    p.add_argument("--diagnostics", action="store_true",
                   help="also P-MPJPE of the depth-flipped prediction (mirror check) and of a zero-depth lift (baseline)")
    p.add_argument("--batch-size", type=int, default=65536, help="poses per forward pass (default 65536)")
    p.add_argument("--max-poses", type=int, default=None, help="evaluate only the first N usable poses")
    p.add_argument("--flip-test", action="store_true",
                   help="also lift each pose mirrored and average the two (test-time flip augmentation; 2x the work)")
    p.add_argument("--refine-bones", default="auto", choices=("auto", "subject", "sequence", "none"),
                   help="also score the lifts refined to one skeleton per person (auto: per subject when the file "
                        "names subjects, else per sequence; none: off)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="network precision (auto: the checkpoint's training precision)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from fastlift.data.errors import PoseDataError
    from fastlift.evaluation.inference import CheckpointError, Lifter
    from fastlift.evaluation.report import evaluate_lifter

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        lifter = Lifter.from_checkpoint(args.checkpoint, device=args.device, precision=args.precision,
                                        flip_test=args.flip_test)
        rep = evaluate_lifter(lifter, args.data, batch_size=args.batch_size, mpjpe_align=args.mpjpe_align,
                              pck_align=args.pck_align, per_joint=args.per_joint, per_subject=args.per_subject,
                              diagnostics=args.diagnostics, max_poses=args.max_poses, refine_bones=args.refine_bones)
    except (CheckpointError, PoseDataError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(rep.format_table())
    if args.json_out:
        try:
            rep.to_json(args.json_out)
        except OSError as exc:
            print(f"error: cannot write {args.json_out}: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
