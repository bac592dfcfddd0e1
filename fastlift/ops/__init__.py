"""Fused geometry ops of fastlift.

Each op is a ``torch.library`` custom op (``torch.ops.fastlift.*``) with a fake implementation and
a registered backward, so ``torch.compile`` and ``torch.export`` trace through it. The backend is
chosen per call, by ``FASTLIFT_BACKEND``, or automatically: see :func:`available_backends`.
"""
from fastlift.ops._backend import BACKENDS, BackendStatus, available_backends, resolve_backend
from fastlift.ops.normalize import normalize_2d, normalize_2d_reference
from fastlift.ops.procrustes import (ProcrustesResult, SimilarityTransform, procrustes_align,
                                      procrustes_align_reference)
from fastlift.ops.rotation import rotation_from_angles, sample_angles, sample_rotations
from fastlift.ops.projection import lift_to_3d, rotate_project, rotate_project_reference
from fastlift.ops.cycle_loss import (
    cycle_consistency_loss,
    cycle_consistency_loss_reference,
    cycle_reprojection_loss,
    cycle_reprojection_loss_reference,
    weighted_cycle_reprojection_loss,
)

__all__ = [
    "BACKENDS",
    "BackendStatus",
    "available_backends",
    "resolve_backend",
    "normalize_2d",
    "normalize_2d_reference",
    "procrustes_align",
    "procrustes_align_reference",
    "ProcrustesResult",
    "SimilarityTransform",
    "sample_rotations",
    "sample_angles",
    "rotation_from_angles",
    "lift_to_3d",
    "rotate_project",
    "rotate_project_reference",
    "cycle_consistency_loss",
    "cycle_consistency_loss_reference",
    "cycle_reprojection_loss",
    "cycle_reprojection_loss_reference",
    "weighted_cycle_reprojection_loss",
]
