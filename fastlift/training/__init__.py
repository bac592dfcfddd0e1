"""The training engine of fastlift (``python -m fastlift.train``; docs/training.md).

* :class:`TrainConfig` (:mod:`fastlift.training.config`): every knob, presets, TOML/YAML/CLI.
* :class:`Trainer` (:mod:`fastlift.training.engine`): the lift-reproject-lift cycle with its
  discriminators, the supervised reference, validation, checkpoints, resume, signals, DDP.
* :mod:`fastlift.training.losses`: GAN losses (BCE, LSGAN, WGAN-GP) and anatomical cues.
* :mod:`fastlift.training.checkpoint`: atomic checkpoints and compatibility checks.
"""
from fastlift.training.checkpoint import load_checkpoint, save_checkpoint
from fastlift.training.config import PRESETS, ConfigError, TrainConfig, load_config_file, resolve_config

__all__ = ["TrainConfig", "PRESETS", "ConfigError", "resolve_config", "load_config_file", "Trainer", "train",
           "load_checkpoint", "save_checkpoint"]


def __getattr__(name):  # the engine imports the data layer and models: load it on first use
    if name in ("Trainer", "train"):
        from fastlift.training import engine
        return getattr(engine, name)
    raise AttributeError(f"module 'fastlift.training' has no attribute {name!r}")
