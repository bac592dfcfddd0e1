"""Checkpoints: written atomically (temporary file in the same folder, fsync, ``os.replace``), read
back with a clear error when the file is not a fastlift checkpoint or comes from another config.

A checkpoint is one ``torch.save`` dict::

    format, version      "fastlift-train", 1
    config               the resolved TrainConfig as a dict
    step, epoch          optimisation steps done, data epoch
    models               {"lifter": state_dict, "disc": ..., "tdisc": ...}
    optimizers           {"g": ..., "d": ..., "t": ...}
    schedulers, scalers  learning-rate schedulers and AMP grad scalers
    loader               the data loader's position (PoseLoader.state_dict())
    rng                  torch (CPU and CUDA), numpy and python RNG states
    best                 {"metric": name, "value": float, "step": int}
    elapsed              training seconds so far
    world_size           processes that wrote it
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from fastlift._atomic import atomic_write
from fastlift.training.config import RESUME_FIELDS, STRUCTURAL_FIELDS, ConfigError, TrainConfig, structural_diff

__all__ = ["save_checkpoint", "load_checkpoint", "find_checkpoint", "rng_state", "set_rng_state",
           "check_compatible", "FORMAT"]

FORMAT = "fastlift-train"
VERSION = 1


def save_checkpoint(state: dict, path: str) -> str:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new one, never half."""
    state = dict(state, format=FORMAT, version=VERSION)
    return atomic_write(path, lambda f: torch.save(state, f))


def find_checkpoint(path: str) -> str:
    """``path`` itself, or for a run directory its ``checkpoints/last.pt``."""
    if os.path.isdir(path):
        for cand in (os.path.join(path, "checkpoints", "last.pt"), os.path.join(path, "last.pt")):
            if os.path.isfile(cand):
                return cand
        raise ConfigError(f"checkpoint: no checkpoints/last.pt in run directory {path!r}")
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint: {path!r} does not exist")
    return path


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Read a fastlift checkpoint (file or run directory); :class:`ConfigError` if it is not one."""
    path = find_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated, not a torch file, ...
        raise ConfigError(f"checkpoint {path!r} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"checkpoint {path!r} is not a fastlift training checkpoint")
    if state.get("version", 0) > VERSION:
        raise ConfigError(f"checkpoint {path!r} has version {state.get('version')}; this fastlift reads <= {VERSION}")
    state["path"] = path
    return state


def check_compatible(state: dict, cfg: TrainConfig, resume: bool) -> None:
    """Raise :class:`ConfigError` listing every field where checkpoint and config disagree."""
    keys = RESUME_FIELDS if resume else STRUCTURAL_FIELDS
    diff = structural_diff(state.get("config", {}), cfg, keys)
    if diff:
        what = "resumed" if resume else "loaded with --init"
        raise ConfigError(f"checkpoint {state.get('path', '')!r} was written under another config and cannot be {what}:\n  "
                          + "\n  ".join(diff))


def rng_state() -> dict:
    s = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
