"""Pose-error metrics, re-exported from :mod:`fastlift.evaluation.metrics`::

    from fastlift.metrics import mpjpe, n_mpjpe, p_mpjpe
"""
from fastlift.evaluation.metrics import (ALIGNMENTS, REDUCTIONS, aligned_prediction, joint_errors, mpjpe,
                                         n_mpjpe, p_mpjpe, reduce_errors)

__all__ = ["ALIGNMENTS", "REDUCTIONS", "aligned_prediction", "joint_errors", "reduce_errors",
           "mpjpe", "n_mpjpe", "p_mpjpe"]
