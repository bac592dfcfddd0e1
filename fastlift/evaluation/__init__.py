"""Evaluation of a trained lifter: metrics (:mod:`.pck`, :mod:`.report`), inference
(:mod:`.inference`, ``fastlift.Lifter``) and pictures (:mod:`.render`). See docs/evaluation.md.

Submodules are imported on use; this package imports nothing itself (``import fastlift`` stays light).
"""
