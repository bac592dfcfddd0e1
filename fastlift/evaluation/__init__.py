"""Evaluation of a trained lifter: metrics (:mod:`.metrics`: MPJPE, N-MPJPE, P-MPJPE and the
per-joint errors they are computed from; :mod:`.pck`, :mod:`.report`), inference
(:mod:`.inference`, ``fastlift.Lifter``) and pictures (:mod:`.render`). See docs/evaluation.md.

Submodules are imported on use; this package imports nothing itself (``import fastlift`` stays light).
The metrics are reachable from here (``from fastlift.evaluation import p_mpjpe``) and from
``fastlift.metrics``; both load :mod:`.metrics` on first use.
"""
_METRICS = ("ALIGNMENTS", "REDUCTIONS", "aligned_prediction", "joint_errors", "reduce_errors",
            "mpjpe", "n_mpjpe", "p_mpjpe")

__all__ = list(_METRICS)


def __getattr__(name):
    if name in _METRICS:
        from fastlift.evaluation import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module 'fastlift.evaluation' has no attribute {name!r}")
