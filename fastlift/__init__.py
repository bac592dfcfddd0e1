"""fastlift: unsupervised 3D human pose lifting by geometric self-supervision.

Train a lifter from 2D keypoints alone (``python -m fastlift.train``), score it
(``python -m fastlift.evaluate``) and apply it (``python -m fastlift.lift``). The geometry runs in
fused kernels (:mod:`fastlift.ops`): C++ on the CPU, Triton and CUDA on the GPU.
"""
__version__ = "0.1.0"

from fastlift import _extension, ops  # noqa: E402

if not _extension.extension_available():
    _extension.warn_if_missing()

__all__ = ["ops", "__version__", "Lifter"]


def __getattr__(name):  # lazy: ``import fastlift`` stays light; fastlift.Lifter loads on first use
    if name == "Lifter":
        from fastlift.evaluation.inference import Lifter
        return Lifter
    raise AttributeError(f"module 'fastlift' has no attribute {name!r}")
