"""Export a trained lifter to TorchScript or ONNX.

    python -m fastlift.export --checkpoint CKPT --format torchscript --output lifter.pt
    python -m fastlift.export --checkpoint CKPT --format onnx --output lifter.onnx

The exported graph is the whole pixel-to-3D path of :meth:`fastlift.Lifter.lift` for h36m17
input, with a dynamic batch dimension::

    inputs   keypoints_2d (N, 17, 2) float32, pixels, h36m17 layout
             confidence   (N, 17)    float32, 0 = missing joint
    output   poses_3d     (N, 17, 3) float32, root-relative, camera frame, the method's normalised
                                     unit (NaN rows for poses whose root or head is missing)

(per-sample normalisation, missing joints at the root, the folded network, the lift
``z = floor(c + d)``, root subtraction). Layout conversion (COCO, OpenPose) stays outside: convert
with :func:`fastlift.data.layouts.convert_keypoints` first. Every export is checked against the
eager :class:`fastlift.Lifter` on random poses (TorchScript by running it; ONNX with onnxruntime
when installed, else with ``onnx.reference``); ``--no-check`` skips that.

TorchScript needs nothing extra. ONNX needs ``pip install onnx onnxscript`` (the exporter of
torch >= 2.9 goes through ``torch.export`` and onnxscript).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from torch import nn

__all__ = ["LiftModule", "build_export_module", "export_torchscript", "export_onnx", "check_export", "main",
           "ExportError"]


class ExportError(RuntimeError):
    """An export that cannot be made or does not reproduce the eager lifter."""


class LiftModule(nn.Module):
    """Pixels (N, 17, 2) + confidence (N, 17) -> root-relative 3D (N, 17, 3), as plain torch ops."""

    def __init__(self, lifter):
        super().__init__()
        from fastlift.evaluation.inference import _FoldedMLP
        self.net = _FoldedMLP(lifter.model).cpu().eval()
        self.c = float(lifter.c)
        self.min_depth = float(lifter.min_depth)
        self.soft = lifter.depth_floor == "soft"
        self.root, self.head = int(lifter.root), int(lifter.head)
        self.per_sample = lifter.normalization == "per_sample"
        self.dataset_distance = float(lifter.dataset_distance or 1.0)

    def forward(self, keypoints_2d: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        k = keypoints_2d.float()
        conf = confidence.float()
        r = k[:, self.root:self.root + 1]
        d = torch.sqrt(((k[:, self.head] - k[:, self.root]) ** 2).sum(-1))
        valid = (conf[:, self.root] > 0) & (conf[:, self.head] > 0)
        if self.per_sample:
            valid = valid & (d > 1e-6)
            s = 1.0 / (self.c * torch.clamp(d, min=1e-6))
        else:
            s = torch.full_like(d, 1.0 / (self.c * self.dataset_distance))
        x = (k - r) * s[:, None, None]
        keep = (conf > 0) & valid[:, None]
        x = torch.where(keep[..., None], x, torch.zeros_like(x))
        dep = self.net(x)
        t = dep + self.c
        z = (torch.nn.functional.softplus(t) if self.soft else torch.relu(t)) + self.min_depth
        z = z[..., None]
        Y = torch.cat([x * z, z], dim=-1)
        Y = Y - Y[:, self.root:self.root + 1]
        return torch.where(valid[:, None, None], Y, torch.full_like(Y, float("nan")))


def build_export_module(lifter) -> LiftModule:
    """The :class:`LiftModule` of a :class:`fastlift.Lifter` (on the CPU, eval mode)."""
    return LiftModule(lifter).eval()


def _example(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Plausible h36m17 pixel poses: synthetic when available, else random around a T-pose."""
    try:
        from fastlift.data.synthetic import generate
        ps = generate(n, seed=seed, split="test", seq_len=max(2, n))
        return torch.from_numpy(np.asarray(ps.keypoints_2d)), torch.ones(n, 17)
    except Exception:  # noqa: BLE001
        g = torch.Generator().manual_seed(seed)
        base = torch.tensor([[0, 0], [-15, 0], [-15, 45], [-15, 90], [15, 0], [15, 45], [15, 90], [0, -25],
                             [0, -50], [0, -60], [0, -75], [20, -50], [40, -35], [55, -20], [-20, -50],
                             [-40, -35], [-55, -20]], dtype=torch.float32) * 4 + 500
        return base + 8 * torch.randn(n, 17, 2, generator=g), torch.ones(n, 17)


def export_torchscript(lifter, path: str) -> str:
    """Trace :class:`LiftModule` and save it with ``torch.jit.save``. Load with ``torch.jit.load``."""
    mod = build_export_module(lifter)
    kp, conf = _example()
    import warnings
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still supported
        traced = torch.jit.trace(mod, (kp, conf), check_trace=False)
        _makedirs(path)
        traced.save(path)
    return path


def export_onnx(lifter, path: str, opset: int = 18) -> str:
    """Export :class:`LiftModule` to ONNX with a dynamic batch dimension (needs onnx + onnxscript)."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the onnx and onnxscript packages (pip install onnx onnxscript): {exc}") from None
    mod = build_export_module(lifter)
    kp, conf = _example()
    _makedirs(path)
    batch = torch.export.Dim("batch", min=1)
    import warnings
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            prog = torch.onnx.export(mod, (kp, conf), dynamo=True, opset_version=opset,
                                     input_names=["keypoints_2d", "confidence"], output_names=["poses_3d"],
                                     dynamic_shapes=({0: batch}, {0: batch}), verbose=False)
        prog.save(path)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"ONNX export to {path} failed: {type(exc).__name__}: {exc}") from exc
    return path


def _makedirs(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)


def run_exported(path: str, kp: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """Run an exported file (``.onnx``: onnxruntime if installed, else ``onnx.reference``; else TorchScript)."""
    kp = np.ascontiguousarray(kp, dtype=np.float32)
    conf = np.ascontiguousarray(conf, dtype=np.float32)
    if path.endswith(".onnx"):
        try:
            import onnxruntime as ort  # type: ignore
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            return sess.run(None, {"keypoints_2d": kp, "confidence": conf})[0]
        except ImportError:
            from onnx.reference import ReferenceEvaluator
            return ReferenceEvaluator(path).run(None, {"keypoints_2d": kp, "confidence": conf})[0]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        mod = torch.jit.load(path, map_location="cpu")
    with torch.no_grad():
        return mod(torch.from_numpy(kp), torch.from_numpy(conf)).numpy()


def check_export(path: str, lifter, n: int = 64, atol: float = 1e-4) -> float:
    """Max abs difference between the exported file and the eager ``lifter.lift`` on ``n`` poses
    (a few with missing joints, one with its head missing, and a batch size other than the
    traced one). :class:`ExportError` when it exceeds ``atol`` (relative to the pose size)."""
    kp, conf = _example(n, seed=1)
    conf = conf.clone()
    conf[1, 13] = 0        # a missing wrist
    conf[2, [3, 6]] = 0    # missing ankles
    conf[3, 10] = 0        # head missing: NaN row
    kp_np, conf_np = kp.numpy(), conf.numpy()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = lifter.lift(kp_np, confidence=conf_np)
    got = run_exported(path, kp_np, conf_np)
    if got.shape != ref.shape:
        raise ExportError(f"{path}: output shape {got.shape}, eager {ref.shape}")
    nan_ref, nan_got = ~np.isfinite(ref), ~np.isfinite(got)
    if not np.array_equal(nan_ref, nan_got):
        raise ExportError(f"{path}: NaN pattern differs from the eager lifter")
    ok = ~nan_ref
    diff = float(np.abs(got[ok] - ref[ok]).max()) if ok.any() else 0.0
    scale = float(np.abs(ref[ok]).max()) if ok.any() else 1.0
    if diff > atol * max(1.0, scale):
        raise ExportError(f"{path}: differs from the eager lifter by {diff:.3g} (tolerance {atol * max(1.0, scale):.3g})")
    return diff


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fastlift.export", description="Export a trained lifter.")
    p.add_argument("--checkpoint", "-c", required=True, help="training checkpoint (.pt) or run folder")
    p.add_argument("--format", "-f", required=True, choices=("torchscript", "onnx"))
    p.add_argument("--output", "-o", required=True, help="output file (.pt / .onnx)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with the eager lifter")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from fastlift.evaluation.inference import CheckpointError, Lifter
    try:
        lifter = Lifter.from_checkpoint(args.checkpoint, device="cpu", precision="fp32")
        if args.format == "torchscript":
            export_torchscript(lifter, args.output)
        else:
            export_onnx(lifter, args.output, opset=args.opset)
        msg = f"wrote {args.output} ({args.format})"
        if not args.no_check:
            diff = check_export(args.output, lifter)
            msg += f"; matches the eager lifter (max abs difference {diff:.2e})"
    except (CheckpointError, ExportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(msg)
    print("inputs: keypoints_2d (N, 17, 2) pixels h36m17, confidence (N, 17); output: poses_3d (N, 17, 3) "
          "root-relative, normalised lift unit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
