"""fastlift.training: config, losses, the engine (tiny networks, few steps), checkpoints, resume,
signals, bad input."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fastlift.data import PoseSet
from fastlift.data.errors import PoseDataError
from fastlift.data.synthetic import generate
from fastlift.training import losses as L
from fastlift.training.config import (PRESETS, ConfigError, TrainConfig, config_to_toml, load_config_file,
                                      resolve_config)
from fastlift.training.engine import Trainer
from fastlift.training.inputs import supervised_targets

TINY = dict(preset="tiny", threads=1, tensorboard=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("poses")
    out = {}
    for split, n in (("train", 1500), ("val", 300)):
        ps = generate(n, seed=3, split=split, seq_len=50)
        out[split] = ps.save(str(d / f"{split}.npz"))
    out["dir"] = d
    return out


def cfg_for(files, tmp_path, **kw):
    values = dict(TINY, data=files["train"], val=files["val"], test=files["val"], out=str(tmp_path / "run"))
    values.update(kw)
    return resolve_config(cli_values=values)


# ------------------------------------------------------------------------------------ config
def test_unknown_key_names_the_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'widht'.*did you mean 'width'"):
        resolve_config(cli_values={"widht": 3})


def test_config_file_toml_and_precedence(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('preset = "tiny"\n[model]\nwidth = 48\nbatch_norm = false\n[loss]\nw_2d = 3.5\n')
    vals = load_config_file(str(p))
    assert vals == {"preset": "tiny", "width": 48, "batch_norm": False, "w_2d": 3.5}
    cfg = resolve_config(vals, {"w_2d": "7"})
    assert cfg.width == 48 and cfg.batch_norm is False and cfg.w_2d == 7.0
    assert cfg.d_width == PRESETS["tiny"]["d_width"]
    bad = tmp_path / "bad.toml"
    bad.write_text("lerning_rate = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'lerning_rate'"):
        load_config_file(str(bad))


def test_config_values_are_checked():
    with pytest.raises(ConfigError, match="gan_loss"):
        resolve_config(cli_values={"gan_loss": "bcee"})
    with pytest.raises(ConfigError, match="dropout"):
        resolve_config(cli_values={"dropout": 1.5})
    with pytest.raises(ConfigError, match="width"):
        resolve_config(cli_values={"width": "wide"})
    with pytest.raises(ConfigError, match="preset"):
        resolve_config(cli_values={"preset": "papr"})


def test_config_roundtrip_through_toml(tmp_path):
    cfg = resolve_config(cli_values={"preset": "paper", "azimuth_range": "-90,90", "val": "x.npz"})
    assert (cfg.width, cfg.blocks, cfg.dropout, cfg.batch_norm) == (1024, 4, 0.5, True)
    assert (cfg.w_adv, cfg.w_2d, cfg.w_3d, cfg.w_temporal) == (1.0, 10.0, 0.001, 1.0)
    p = tmp_path / "r.toml"
    p.write_text(config_to_toml(cfg))
    again = resolve_config(load_config_file(str(p)))
    assert again == cfg


def test_cli_flags(tmp_path):
    from fastlift.train import parse_config
    cfg, _ = parse_config(["--preset", "tiny", "--no-batch-norm", "--use-discriminator", "false", "--width", "40",
                           "--azimuth-range", "-90", "90", "--elevation-range=-10,5"])
    assert cfg.batch_norm is False and cfg.use_discriminator is False and cfg.width == 40
    assert cfg.azimuth_range == [-90.0, 90.0] and cfg.elevation_range == [-10.0, 5.0]
    with pytest.raises(ConfigError, match="did you mean '--width'"):
        parse_config(["--widht", "3"])


# ------------------------------------------------------------------------------------ losses
@pytest.mark.parametrize("kind", ["bce", "lsgan", "wgan-gp"])
def test_gan_losses_order_real_above_fake(kind):
    good, bad = torch.full((8,), 3.0), torch.full((8,), -3.0)
    assert L.d_loss(kind, good, bad) < L.d_loss(kind, bad, good)
    assert L.g_loss(kind, good) < L.g_loss(kind, bad)


def test_depth_stretch_is_the_median_ratio_of_depth_to_image_radius():
    g = torch.Generator().manual_seed(6)
    Y = torch.randn(9, 17, 3, generator=g, dtype=torch.float64)
    rel = Y - Y[:, :1]
    ratio = rel[..., 2].abs().amax(1) / rel[..., :2].norm(dim=-1).amax(1)
    assert float(L.depth_stretch(Y, 0)) == pytest.approx(float(ratio.median()), rel=1e-5)
    stretched = Y.clone()
    stretched[..., 2] *= 3.0                  # three times as deep: three times the stretch
    assert float(L.depth_stretch(stretched, 0)) == pytest.approx(3 * float(ratio.median()), rel=1e-5)
    assert float(L.depth_stretch(Y * 4.1 + 2.0, 0)) == pytest.approx(float(ratio.median()), rel=1e-5)  # scale-free
    flat = Y.clone()
    flat[..., 2] = 10.0
    assert float(L.depth_stretch(flat, 0)) == 0.0


def _leg_pose(flex_deg, rot_deg):
    """One h36m17 pose (1, 17, 3) facing -z (the camera) whose right knee is flexed by
    ``flex_deg`` about an axis turned by ``rot_deg`` (about the vertical thigh) from the hip axis;
    every other joint at a fixed, generic place."""
    g = torch.Generator().manual_seed(1)
    Y = torch.randn(1, 17, 3, generator=g, dtype=torch.float64)
    Y[0, 0] = torch.tensor([0.0, 0.0, 0.0])
    Y[0, 1] = torch.tensor([-1.0, 0.0, 0.0])     # right hip (x right, y down): right hip -> left hip is +x
    Y[0, 4] = torch.tensor([1.0, 0.0, 0.0])
    Y[0, 2] = Y[0, 1] + torch.tensor([0.0, 4.0, 0.0], dtype=torch.float64)  # thigh straight down
    f, r = math.radians(flex_deg), math.radians(rot_deg)
    # a flexed knee moves the foot backwards (+z, away from a camera the person faces); the
    # hip's rotation turns that direction about the thigh
    back = torch.tensor([math.sin(r), 0.0, math.cos(r)], dtype=torch.float64)
    Y[0, 3] = Y[0, 2] + 4.2 * (math.cos(f) * torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64) + math.sin(f) * back)
    return Y


def test_knee_hinge_loss_measures_the_knee_axis_against_the_hip_axis():
    legs = torch.tensor([[1, 2, 3], [4, 5, 6]])
    hips = (1, 4)

    def right_leg(flex, rot, margin=45.0):
        Y = _leg_pose(flex, rot)
        return float(L.knee_hinge_loss(Y, legs[:1], hips, margin))

    # the knee's axis turned by rot from the hip axis: sin(flex) relu(cos(margin) - cos(rot))
    for flex, rot in ((60.0, 0.0), (60.0, 30.0), (90.0, 44.0), (0.0, 170.0)):
        assert right_leg(flex, rot) == pytest.approx(0.0, abs=1e-12)
    for flex, rot in ((60.0, 70.0), (90.0, 180.0), (35.0, 120.0)):
        expected = math.sin(math.radians(flex)) * (math.cos(math.radians(45)) - math.cos(math.radians(rot)))
        assert right_leg(flex, rot) == pytest.approx(expected, rel=1e-9)
    assert right_leg(60.0, 70.0, margin=80.0) == pytest.approx(0.0, abs=1e-12)
    # the shin's depth mirrored (the knee bent forward): the cue's largest value for that flexion
    bent_forward = right_leg(60.0, 180.0)
    assert bent_forward == pytest.approx(math.sin(math.radians(60)) * (1 + math.cos(math.radians(45))), rel=1e-9)
    # frame-free: a rotation about any axis, a scale and a shift leave it; so does the mirror
    # world of flip_augment (x -> -x with left and right swapped)
    Y = _leg_pose(70.0, 110.0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    q = q * torch.sign(torch.linalg.det(q))              # a rotation, not a reflection
    base = float(L.knee_hinge_loss(Y, legs, hips))
    assert base > 0
    assert float(L.knee_hinge_loss(Y @ q.T * 2.5 + 1.0, legs, hips)) == pytest.approx(base, rel=1e-9)
    from fastlift.data.layouts import get_layout
    perm = torch.as_tensor(get_layout("h36m17").flip_index)
    mirrored = Y[:, perm] * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    # the right leg is now the left one: both legs' mean is the same
    assert float(L.knee_hinge_loss(mirrored, legs, hips)) == pytest.approx(base, rel=1e-9)
    # missing joints: the leg is left out; no valid leg gives 0
    valid = torch.ones(1, 17, dtype=torch.bool)
    valid[0, 3] = False
    assert float(L.knee_hinge_loss(Y, legs, hips, valid=valid)) == pytest.approx(
        float(L.knee_hinge_loss(Y, legs[1:], hips)), abs=1e-12)
    valid[0, 1] = False
    assert float(L.knee_hinge_loss(Y, legs, hips, valid=valid)) == 0.0
    # degenerate legs (a straight knee, coincident joints) give a finite gradient
    D = _leg_pose(0.0, 0.0).repeat(2, 1, 1)
    D[1, 3] = D[1, 2]
    D.requires_grad_(True)
    L.knee_hinge_loss(D, legs, hips).backward()
    assert torch.isfinite(D.grad).all()
    Yg = _leg_pose(60.0, 150.0).requires_grad_(True)
    L.knee_hinge_loss(Yg, legs, hips).backward()
    assert float(Yg.grad[0, 3].abs().sum()) > 0      # the ankle is pushed


def test_knee_hinge_loss_is_near_zero_on_synthetic_people():
    from fastlift.data.layouts import get_layout
    ps = generate(2000, seed=4, split="val")
    c = list(get_layout("h36m17").canonical)
    legs = torch.tensor([[c.index(f"{s}_{n}") for n in ("hip", "knee", "ankle")] for s in "rl"])
    Y = torch.as_tensor(ps.keypoints_3d).double()
    assert float(L.knee_hinge_loss(Y, legs, (c.index("r_hip"), c.index("l_hip")))) < 1e-4
    flat = Y.clone()
    flat[..., 2] = Y[:, :1, 2]                           # the same people with no depth
    assert float(L.knee_hinge_loss(flat, legs, (c.index("r_hip"), c.index("l_hip")))) > 0.05


def _bones_and_moved_poses(n, seed, scale, shift):
    """h36m17 (parents, child, parent indices), n random poses and the same poses turned by random
    rotations about their roots, scaled and shifted: the same bones."""
    from fastlift.data.layouts import get_layout
    par = get_layout("h36m17").parents
    child = torch.tensor([i for i in range(17) if par[i] >= 0])
    parent = torch.tensor([par[i] for i in range(17) if par[i] >= 0])
    g = torch.Generator().manual_seed(seed)
    Y = torch.randn(n, 17, 3, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    return par, child, parent, Y, (Y - Y[:, :1]) @ q * scale + shift


def test_bone_constancy_loss_compares_bone_proportions():
    _, child, parent, Y, moved = _bones_and_moved_poses(5, 8, 3.7, 1.0)
    assert float(L.bone_constancy_loss(Y, moved, child, parent)) == pytest.approx(0.0, abs=1e-12)
    longer = Y.clone()
    longer[2, 3] = Y[2, 2] + 2.0 * (Y[2, 3] - Y[2, 2])   # one pose's right shin twice as long
    v = L.bone_constancy_loss(Y, longer, child, parent)
    b = (Y[2, child] - Y[2, parent]).norm(dim=-1)
    b2 = b.clone()
    b2[2] *= 2                                  # bone 2 is r_knee -> r_ankle
    expected = ((b / b.sum() - b2 / b2.sum()) ** 2).sum() / 5
    assert float(v) == pytest.approx(float(expected), rel=1e-5) and float(v) > 0
    valid = torch.ones(5, 17, dtype=torch.bool)
    valid[2, 3] = False                         # the ankle missing in that pair: the shin is left out
    assert float(L.bone_constancy_loss(Y, longer, child, parent, valid=valid)) == pytest.approx(0.0, abs=1e-12)


def test_bone_log_ratio_loss_is_scale_free_and_weighs_bones_alike():
    par, child, parent, Y, moved = _bones_and_moved_poses(4, 9, 0.3, -2.0)
    assert float(L.bone_log_ratio_loss(Y, moved, child, parent)) == pytest.approx(0.0, abs=1e-12)
    nb = len(child)

    def one_bone_longer(j, p, k):  # bone p -> j of pose 1 longer by the factor k, its subtree moved with it
        Z = Y.clone()
        sub = [j] + [i for i in range(17) if i != j and _has_ancestor(par, i, j)]
        Z[1, sub] += (k - 1) * (Y[1, j] - Y[1, p])
        return Z

    # one bone of one pair 20 % longer: d = log 1.2 on it, minus the mean over the pair's bones
    a = math.log(1.2)
    expected = ((a - a / nb) ** 2 + (nb - 1) * (a / nb) ** 2) / nb / 4
    for j in (3, 10, 16):                   # a shin, the head, a wrist: alike
        v = L.bone_log_ratio_loss(Y, one_bone_longer(j, par[j], 1.2), child, parent)
        assert float(v) == pytest.approx(expected, rel=1e-9)
    valid = torch.ones(4, 17, dtype=torch.bool)
    valid[1, 16] = False                    # the wrist missing: the forearm is left out
    assert float(L.bone_log_ratio_loss(Y, one_bone_longer(16, 15, 1.2), child, parent, valid=valid)) \
        == pytest.approx(0.0, abs=1e-12)
    Yg = Y.clone().requires_grad_(True)
    L.bone_log_ratio_loss(Yg, one_bone_longer(3, 2, 1.2), child, parent).backward()
    assert torch.isfinite(Yg.grad).all() and float(Yg.grad[1].abs().sum()) > 0 and float(Yg.grad[0].abs().sum()) == 0


def _has_ancestor(parents, i, a):
    while parents[i] >= 0:
        i = parents[i]
        if i == a:
            return True
    return False


def test_depth_extent_loss_penalises_only_poses_deeper_than_wide():
    g = torch.Generator().manual_seed(5)
    Y = torch.randn(17, 17, 3, generator=g)
    Y[..., 2] *= 0.05                       # shallow poses: every depth offset well inside the radius
    assert float(L.depth_extent_loss(Y, 0, 1.0)) == 0.0
    deep = Y.clone()
    deep[3, 7, 2] = deep[3, 0, 2] + 5.0 * (deep[3, :, :2] - deep[3, :1, :2]).norm(dim=-1).amax()
    v = L.depth_extent_loss(deep, 0, 1.0)
    # one joint 5 radii deep: (5 - 1)^2 over 17 * 17 elements
    assert float(v) == pytest.approx(16.0 / (17 * 17), rel=1e-4)
    assert float(L.depth_extent_loss(deep * 7.3, 0, 1.0)) == pytest.approx(float(v), rel=1e-4)  # scale-free
    deep.requires_grad_(True)
    L.depth_extent_loss(deep, 0, 1.0).backward()
    gz = deep.grad[3, 7, 2]
    assert torch.isfinite(deep.grad).all() and float(gz) > 0  # pulls the joint back toward the root
    assert float(deep.grad[torch.arange(17) != 3].abs().sum()) == 0.0


def test_gradient_penalty_is_zero_for_unit_slope_critic():
    w = torch.zeros(34)
    w[0] = 1.0
    critic = lambda x: x.reshape(x.shape[0], -1) @ w  # noqa: E731
    gp = L.gradient_penalty(critic, torch.randn(4, 17, 2), torch.randn(4, 17, 2))
    assert gp.abs() < 1e-10


def test_r1_penalty_of_a_linear_critic_is_its_squared_weight_norm():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(17, 2, generator=g, dtype=torch.float64)
    v = torch.randn(17, 2, generator=g, dtype=torch.float64)
    x = torch.randn(5, 17, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    p = torch.randn(5, 17, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    out = (x * w).sum((1, 2))
    pen = L.r1_penalty(out, x, unit=0.1)
    assert float(pen) == pytest.approx(float((w * 0.1).square().sum()), rel=1e-12)
    two = (x * w).sum((1, 2)) + (p * v).sum((1, 2))
    pen2 = L.r1_penalty(two, (x, p), unit=0.1)
    assert float(pen2) == pytest.approx(float((w * 0.1).square().sum() + (v * 0.1).square().sum()), rel=1e-12)
    # differentiable: the penalty of a quadratic critic has a gradient for its parameters
    a = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    q = a * (x * x).sum((1, 2))
    L.r1_penalty(q, x).backward()
    # |d q / d x|^2 = 4 a^2 |x|^2, so d pen / d a = 8 a mean |x|^2
    assert float(a.grad) == pytest.approx(float(8 * 2.0 * x.detach().square().sum((1, 2)).mean()), rel=1e-9)


def test_supervised_targets_recover_perspective_depth():
    """The lift of the derived depth offsets matches the 3D pose up to a similarity (to the
    anisotropy the fixed lift depth implies: a few mm), far better than the flat lift."""
    from fastlift.training.evaluate import p_mpjpe
    g = torch.Generator().manual_seed(0)
    P = torch.randn(64, 17, 3, generator=g) * 250
    P[:, 0] = 0
    cam = P + torch.tensor([0.0, 0.0, 5000.0])
    x = cam[..., :2] / cam[..., 2:]
    x = x - x[:, :1]
    x = x / (10 * x[:, 10].norm(dim=-1))[:, None, None]
    d = supervised_targets(x, P, 11.0)
    Y = torch.cat([x * (11.0 + d)[..., None], (11.0 + d)[..., None]], -1)
    flat = torch.cat([x, torch.zeros_like(x[..., :1])], -1)
    assert p_mpjpe(Y, P) < 0.1 * p_mpjpe(flat, P)


# ------------------------------------------------------------------------------------ engine
def test_tiny_unsupervised_run_writes_everything(files, tmp_path):
    pytest.importorskip("matplotlib")
    cfg = cfg_for(files, tmp_path, steps=12, val_every=6, ckpt_every=6, log_every=3, plots=True)
    s = Trainer(cfg, log=lambda *a: None).fit()
    out = cfg.out
    assert s["steps"] == 12 and s["stopped_by"] == "steps"
    for f in ("config.toml", "config.json", "metrics.csv", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt",
              "curves.png", "val_samples.png"):
        assert os.path.isfile(os.path.join(out, f)), f
    for f in ("curves.png", "val_samples.png"):
        with open(os.path.join(out, f), "rb") as fh:
            data = fh.read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f
    assert sorted(os.path.basename(p) for p in s["plots"]) == ["curves.png", "val_samples.png"]
    assert resolve_config(load_config_file(os.path.join(out, "config.toml"))) == cfg
    rows = open(os.path.join(out, "metrics.csv")).read().splitlines()
    header = rows[0].split(",")
    assert "val_p_mpjpe_flip" in header and "loss_adv" in header and "loss_dt" in header
    assert len(rows) > 5
    t = s["test"]["test"]
    for k in ("p_mpjpe", "n_mpjpe", "mpjpe_scaled", "p_mpjpe_flip", "p_mpjpe_flat"):
        assert math.isfinite(t[k]) and t[k] > 0


def test_plots_are_skipped_with_a_message_without_matplotlib(files, tmp_path, monkeypatch):
    from fastlift.evaluation import render

    def no_matplotlib():
        raise ImportError("matplotlib is not installed")
    monkeypatch.setattr(render, "_plt", no_matplotlib)
    lines = []
    cfg = cfg_for(files, tmp_path, steps=4, val_every=2, plots=True)
    s = Trainer(cfg, log=lines.append).fit()
    assert s["plots"] == [] and s["test"]["test"]["p_mpjpe"] > 0
    assert any("plots skipped" in str(m) and "viz" in str(m) for m in lines)
    assert not os.path.exists(os.path.join(cfg.out, "curves.png"))


@pytest.mark.parametrize("kw", [
    dict(mode="supervised"),
    dict(use_discriminator=False),
    dict(use_l2d=False, use_l3d=False, use_temporal=False),
    dict(gan_loss="wgan-gp", d_steps=2),
    dict(gan_loss="lsgan", label_smoothing=0.1, d_spectral_norm=True, w_bone_sym=0.1, w_bone_temporal=0.1),
    dict(dropout=0.5, depth_floor="hard", projection_floor="hard", consistency="l1", amp="bf16"),
    dict(amp="fp16", d_bend_negatives=1.0, d_warmup=2, flip_augment=False, consistency="huber"),
    dict(rotation_axis="camera"),
    dict(cycle_views=3, amp="bf16"),
    dict(w_depth_extent=10.0, depth_extent_margin=0.1),
])
def test_modes_and_ablations_train(files, tmp_path, kw):
    cfg = cfg_for(files, tmp_path, steps=4, val_every=0, ckpt_every=0, **kw)
    tr = Trainer(cfg, log=lambda *a: None)
    before = {k: v.clone() for k, v in tr.lifter.state_dict().items()}
    s = tr.fit()
    assert s["steps"] == 4
    changed = any(not torch.equal(before[k], v) for k, v in tr.lifter.state_dict().items())
    assert changed


def test_cycle_views_tile_the_batch_with_fresh_rotations(files, tmp_path, monkeypatch):
    """cycle_views K: the cycle losses see each pose K times, each time under its own rotation;
    the discriminator update still sees one fake per pose."""
    from fastlift.training import engine
    cfg = cfg_for(files, tmp_path, steps=1, val_every=0, ckpt_every=0, cycle_views=3, batch_size=64)
    tr = Trainer(cfg, log=lambda *a: None)
    seen = {}
    real_loss, real_d = engine.geo.cycle_reprojection_loss, tr._d_update

    def spy_loss(x, Y_re, R, Y_rot, **kw):
        seen.update(x=x.detach().clone(), R=R.detach().clone(), n=Y_re.shape[0])
        return real_loss(x, Y_re, R, Y_rot, **kw)

    def spy_d(real, fake):
        seen.update(d_real=real.shape[0], d_fake=fake.shape[0])
        return real_d(real, fake)

    monkeypatch.setattr(engine.geo, "cycle_reprojection_loss", spy_loss)
    monkeypatch.setattr(tr, "_d_update", spy_d)
    out = tr.unsupervised_step(next(tr._iterate()))
    B = 64
    assert seen["n"] == 3 * B and seen["d_real"] == B and seen["d_fake"] == B
    x = seen["x"]
    torch.testing.assert_close(x[:B], x[B:2 * B], rtol=0, atol=0)
    torch.testing.assert_close(x[:B], x[2 * B:], rtol=0, atol=0)
    R = seen["R"]
    for a, b in ((0, 1), (0, 2), (1, 2)):  # every view its own rotation
        assert (R[a * B:(a + 1) * B] - R[b * B:(b + 1) * B]).abs().amax(dim=(1, 2)).min() > 1e-4
    assert torch.isfinite(out["loss_3d"]) and float(out["loss_3d"]) > 0
    with pytest.raises(ConfigError, match="cycle_views must be >= 1"):
        cfg_for(files, tmp_path, cycle_views=0)


@pytest.mark.parametrize("target", ["lift", "detached"])
def test_l3d_target_decides_whether_l3d_moves_the_rotated_lift(files, tmp_path, monkeypatch, target):
    """l3d_target: 'lift' passes the rotated lift to L_3D with its graph (the consistency pulls
    both lifts), 'detached' passes it as a constant (the re-lift regresses onto it); the loss's
    value is the same either way."""
    from fastlift.training import engine
    cfg = cfg_for(files, tmp_path, steps=1, val_every=0, ckpt_every=0, l3d_target=target, seed=3)
    tr = Trainer(cfg, log=lambda *a: None)
    seen = {}
    real_loss = engine.geo.cycle_reprojection_loss

    def spy_loss(x, Y_re, R, Y_rot, **kw):
        seen.update(target_grad=Y_rot.requires_grad, relift_grad=Y_re.requires_grad)
        return real_loss(x, Y_re, R, Y_rot, **kw)

    monkeypatch.setattr(engine.geo, "cycle_reprojection_loss", spy_loss)
    out = tr.unsupervised_step(next(tr._iterate()))
    assert seen["relift_grad"]
    assert seen["target_grad"] == (target == "lift")
    other = Trainer(cfg_for(files, tmp_path / "o", steps=1, val_every=0, ckpt_every=0, seed=3,
                            l3d_target="detached" if target == "lift" else "lift"), log=lambda *a: None)
    out_other = other.unsupervised_step(next(other._iterate()))
    assert float(out["loss_3d"]) > 0
    assert float(out["loss_3d"]) == pytest.approx(float(out_other["loss_3d"]), rel=1e-6)


def test_sign_check_negates_the_depth_head_when_d_prefers_the_mirrors(files, tmp_path):
    """sign_check: D's margin (lifts minus depth mirrors) decides; after sign_check_patience
    checks won by the mirrors the lifter, its moving average and Adam's first moments of the head
    change sign, so every depth offset is negated; a check won by the lifts resets the count."""
    cfg = cfg_for(files, tmp_path, steps=2, val_every=0, ckpt_every=0, sign_check=True, sign_check_patience=2)
    tr = Trainer(cfg, log=lambda *a: None)
    batch = next(tr._iterate())
    tr.unsupervised_step(batch)                      # Adam has moments now
    x = batch["keypoints_2d"][:37]
    tr.lifter.eval()
    d0, d0_ema = tr.lifter(x).detach().clone(), tr.lifter_ema(x).detach().clone()
    m0 = tr.opt_g.state[tr.lifter.net.head.weight]["exp_avg"].clone()
    v0 = tr.opt_g.state[tr.lifter.net.head.weight]["exp_avg_sq"].clone()
    tr.lifter.train()
    seen = []

    def fake_d(prefer_mirror):
        def d(y):
            B = y.shape[0] // 2
            seen.append(torch.equal(y[:B], y[B:]))
            lifts, mirrors = torch.zeros(B, 1), torch.ones(B, 1)
            return torch.cat([lifts, mirrors] if prefer_mirror else [mirrors, lifts], 0)
        return d
    tr.d_fwd = fake_d(True)
    assert not tr._sign_check(batch) and tr._sign_margin == pytest.approx(-1.0)
    tr.d_fwd = fake_d(False)
    assert not tr._sign_check(batch) and tr._mirror_wins == 0      # the lifts won: count reset
    tr.d_fwd = fake_d(True)
    assert not tr._sign_check(batch)
    assert tr._sign_check(batch) and tr.sign_flips == 1 and tr._mirror_wins == 0
    assert not any(seen)                             # the mirrors re-project elsewhere than the lifts
    tr.lifter.eval()
    torch.testing.assert_close(tr.lifter(x), -d0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tr.lifter_ema(x), -d0_ema, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tr.opt_g.state[tr.lifter.net.head.weight]["exp_avg"], -m0)
    torch.testing.assert_close(tr.opt_g.state[tr.lifter.net.head.weight]["exp_avg_sq"], v0)
    assert tr.state_dict()["sign_flips"] == 1
    with pytest.raises(ConfigError, match="sign_check_every must be >= 1"):
        cfg_for(files, tmp_path, sign_check_every=0)
    with pytest.raises(ConfigError, match="sign_check_start must be >= 0"):
        cfg_for(files, tmp_path, sign_check_start=-1)


def test_sign_check_logs_its_margin_in_a_run(files, tmp_path):
    cfg = cfg_for(files, tmp_path, steps=6, val_every=0, ckpt_every=0, log_every=2, sign_check=True,
                  sign_check_every=2, sign_check_start=2)
    tr = Trainer(cfg, log=lambda *a: None)
    tr.fit()
    with open(os.path.join(tr.out, "metrics.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["sign_margin"]]
    assert len(rows) == 3 and all(math.isfinite(float(r["sign_margin"])) for r in rows)
    assert all(int(r["sign_flips"]) == tr.sign_flips for r in rows[-1:])


def test_adversarial_gain_follows_the_discriminator_accuracy(files, tmp_path):
    """adv_balance_target: log(gain) moves by rate * (accuracy - target) per step, within the
    range; the lifter's adversarial term is scaled by it; off, the gain stays 1."""
    cfg = cfg_for(files, tmp_path, steps=2, val_every=0, ckpt_every=0, adv_balance_target=0.7,
                  adv_balance_rate=0.1, adv_balance_range=[0.5, 2.0])
    tr = Trainer(cfg, log=lambda *a: None)
    assert tr._adv_gain(0.9) == pytest.approx(math.exp(0.1 * 0.2))
    assert tr._adv_gain(0.9) == pytest.approx(math.exp(0.1 * 0.4))
    assert tr._adv_gain(0.7) == pytest.approx(math.exp(0.1 * 0.4))      # at the target: unchanged
    for _ in range(200):
        tr._adv_gain(1.0)
    assert tr.adv_gain == 2.0                                           # clamped high
    for _ in range(400):
        tr._adv_gain(0.0)
    assert tr.adv_gain == 0.5                                           # clamped low
    # the adversarial term of the lifter's loss is scaled by the gain of its step
    seen = []
    real_g_loss = L.g_loss
    tr.adv_gain = 1.6
    tr._adv_gain = lambda acc: tr.adv_gain

    def spy(kind, logits):
        v = real_g_loss(kind, logits)
        seen.append(float(v.detach()))
        return v
    import fastlift.training.engine as engine
    orig = engine.L.g_loss
    engine.L.g_loss = spy
    try:
        tr.cfg.use_l2d = tr.cfg.use_l3d = False
        tr.cfg.w_bone_sym = 0.0
        out = tr.unsupervised_step(next(tr._iterate()))
    finally:
        engine.L.g_loss = orig
    expect = 1.6 * (cfg.w_adv * seen[0] + (cfg.w_temporal * seen[1] if len(seen) > 1 else 0.0))
    assert float(out["loss_g"]) == pytest.approx(expect, rel=1e-5)
    assert float(out["adv_gain"]) == pytest.approx(1.6)
    off = Trainer(cfg_for(files, tmp_path / "b", steps=2), log=lambda *a: None)
    assert off._adv_gain(0.99) == 1.0 and off.adv_gain == 1.0
    with pytest.raises(ConfigError, match="adv_balance_range"):
        cfg_for(files, tmp_path, adv_balance_range=[2.0, 4.0])
    with pytest.raises(ConfigError, match="adv_balance_target"):
        cfg_for(files, tmp_path, adv_balance_target=1.5)


def test_discriminator_input_noise_and_lazy_r1(files, tmp_path):
    """d_input_noise: every pose D sees carries Gaussian noise of that std (none when off);
    d_r1 with d_r1_every K: the penalty is applied (and logged) on every K-th step only."""
    cfg = cfg_for(files, tmp_path, steps=4, val_every=0, ckpt_every=0, d_input_noise=0.01, d_r1=1.0, d_r1_every=2,
                  batch_size=256)
    tr = Trainer(cfg, log=lambda *a: None)
    seen = []
    real_fwd = tr.d_fwd

    def spy(x):
        seen.append(x.detach().clone())
        return real_fwd(x)
    tr.d_fwd = spy
    batch = next(tr._iterate())
    x = batch["keypoints_2d"]
    out = tr._d_update(x, x.clone())
    d_in = seen[0]
    B = x.shape[0]
    noise = torch.cat([d_in[:B] - x, d_in[B:2 * B] - x])
    assert float(noise.std()) == pytest.approx(0.01, rel=0.05) and abs(float(noise.mean())) < 1e-3
    assert "loss_r1" in out and float(out["loss_r1"]) > 0          # step 0: due
    tr.step = 1
    assert "loss_r1" not in tr._d_update(x, x.clone())            # step 1: not due
    off = Trainer(cfg_for(files, tmp_path / "b", steps=1, batch_size=256), log=lambda *a: None)
    assert torch.equal(off._d_noise(x), x)
    with pytest.raises(ConfigError, match="d_r1_every must be >= 1"):
        cfg_for(files, tmp_path, d_r1_every=0)
    with pytest.raises(ConfigError, match="d_input_noise must be >= 0"):
        cfg_for(files, tmp_path, d_input_noise=-0.1)


def test_r1_only_in_the_early_phase(files, tmp_path):
    """d_r1_until / d_r1_fade: the R1 weight is d_r1 (times d_r1_every) until the fade, falls
    linearly over it and is 0 from d_r1_until on, where the penalty is no longer computed."""
    cfg = cfg_for(files, tmp_path, steps=4, val_every=0, ckpt_every=0, d_r1=2.0, d_r1_every=2, d_r1_until=100,
                  d_r1_fade=40, batch_size=256)
    tr = Trainer(cfg, log=lambda *a: None)
    for step, want in ((0, 2.0), (60, 2.0), (70, 1.5), (90, 0.5), (100, 0.0), (500, 0.0)):
        tr.step = step
        assert tr._r1_weight() == pytest.approx(want), step
    x = next(tr._iterate())["keypoints_2d"]
    tr.step = 80
    assert float(tr._d_update(x, x.clone())["loss_r1"]) > 0
    tr.step = 100
    assert "loss_r1" not in tr._d_update(x, x.clone())
    always = Trainer(cfg_for(files, tmp_path / "b", steps=1, d_r1=2.0, batch_size=256), log=lambda *a: None)
    always.step = 10 ** 6
    assert always._r1_weight() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="d_r1_fade"):
        cfg_for(files, tmp_path, d_r1_until=10, d_r1_fade=20)
    with pytest.raises(ConfigError, match="d_r1_until must be >= 0"):
        cfg_for(files, tmp_path, d_r1_until=-1)


def test_r1_over_a_subset_of_the_real_poses(files, tmp_path):
    """d_r1_samples n: R1 is the squared input gradient of D's logits at the first n real poses,
    from a forward of their own; the update's forward inputs then need no grad. 0: over all of
    them, from the update's forward (the same number as a separate forward over all)."""
    from fastlift.training import losses as L
    cfg = cfg_for(files, tmp_path, steps=2, val_every=0, ckpt_every=0, d_r1=1.0, d_r1_samples=7, batch_size=64)
    tr = Trainer(cfg, log=lambda *a: None)
    x = next(tr._iterate())["keypoints_2d"].float()
    (real_in,), r1 = tr._real_inputs(x)
    assert r1 and not real_in.requires_grad
    got = tr._r1_penalty(tr.d_fwd, (real_in,), None)
    sub = x[:7].clone().requires_grad_(True)
    want = L.r1_penalty(tr.d_fwd(sub), sub, 1.0 / cfg.c)
    assert float(got.detach()) > 0 and torch.allclose(got, want, rtol=1e-5)
    full = x.clone().requires_grad_(True)
    assert not torch.allclose(got, L.r1_penalty(tr.d_fwd(full), full, 1.0 / cfg.c), rtol=1e-3)
    assert float(tr._d_update(x, x.flip(0))["loss_r1"]) > 0
    if tr.temporal:
        b = next(tr._iterate())
        prev = b["keypoints_2d_prev"].float()
        assert "dt_acc" in tr._t_update(x, prev, x.flip(0), prev.flip(0))
    whole = Trainer(cfg_for(files, tmp_path / "b", steps=2, d_r1=1.0, batch_size=64), log=lambda *a: None)
    whole.disc.load_state_dict(tr.disc.state_dict())
    (w_in,), _ = whole._real_inputs(x)
    assert w_in.requires_grad
    assert torch.allclose(whole._r1_penalty(whole.d_fwd, (w_in,), whole.d_fwd(w_in)),
                          L.r1_penalty(tr.d_fwd(full), full, 1.0 / cfg.c), rtol=1e-5)
    with pytest.raises(ConfigError, match="d_r1_samples must be >= 0"):
        cfg_for(files, tmp_path, d_r1_samples=-1)


def test_collapse_guard_rolls_back_to_a_healthy_snapshot_with_fresh_rotations(files, tmp_path):
    """collapse_guard: D accuracy forced to 1 from step 25 on; with a window of 10 the guard
    snapshots at steps 10, 20 and 30 (window means below 0.85), detects the collapse at step 33
    (mean 0.9) and restores the older of the last two, step 20's state (networks and data
    position), counts the rollback, and the rotations of the repeated steps differ from the first
    pass; collapsing again from that snapshot sends the next rollback to the run's first state
    (with a third stream); after guard_max_rollbacks it lets the run go on."""
    cfg = cfg_for(files, tmp_path, steps=60, val_every=0, ckpt_every=0, log_every=5, collapse_guard=True,
                  guard_window=10, guard_max_rollbacks=2, guard_acc=0.85, batch_size=64)
    logs = []
    tr = Trainer(cfg, log=logs.append)
    real_d = tr._d_update
    snap_lifter = {}

    def forced(real, fake):
        out = real_d(real, fake)
        if tr.step >= 25:
            out["d_acc"] = torch.tensor(1.0)
        return out
    tr._d_update = forced
    rots = {}
    real_rot = tr._rotations

    def spy_rot(n, Y=None):
        R = real_rot(n, Y)
        rots.setdefault(tr.step, []).append(R.clone())
        return R
    tr._rotations = spy_rot
    seen_steps = []
    real_step = tr.unsupervised_step

    def spy_step(batch):
        seen_steps.append(tr.step)
        if tr.step == 20 and not snap_lifter:           # the state the guard snapshots after step 20
            snap_lifter.update({k: v.clone() for k, v in tr.lifter.state_dict().items()})
        elif tr.step == 20 and seen_steps.count(20) == 2:  # the first step after the first rollback
            for k, v in tr.lifter.state_dict().items():
                assert torch.equal(v, snap_lifter[k]), k
        return real_step(batch)
    tr.unsupervised_step = spy_step
    tr.fit()
    assert tr.rollbacks == 2 and tr.step == 60
    back = seen_steps.index(32) + 1                       # the step that ends at 33
    assert seen_steps[back] == 20                         # rolled back to the older snapshot
    assert any("collapse guard" in str(m) and "at step 33; rolled back to step 20" in str(m) for m in logs)
    # it collapses again from that snapshot, so the second rollback goes to the run's first state
    assert any("rolled back to step 0" in str(m) and "rollback 2 of at most 2" in str(m) for m in logs)
    assert seen_steps.count(22) == 3 and len(rots[22]) == 3
    r = rots[22]
    for a, b in ((0, 1), (0, 2), (1, 2)):                 # each pass a fresh rotation stream
        assert (r[a] - r[b]).abs().max() > 1e-3
    assert seen_steps.count(45) == 1                      # then no more (guard_max_rollbacks)
    st = torch.load(os.path.join(tr.out, "checkpoints", "last.pt"), weights_only=False)
    assert st["rollbacks"] == 2
    with pytest.raises(ConfigError, match="guard_acc"):
        cfg_for(files, tmp_path, guard_acc=0.3)


def test_collapse_guard_with_guard_stretch_waits_for_stretched_lifts(files, tmp_path):
    """guard_stretch: D's accuracy forced to 1 from step 5 on is not a collapse while the lifts'
    depth stretch stays low, but no snapshot is taken while D wins (only step 10's, whose window
    mean is still below guard_acc); once the stretch is forced to 5 from step 35 on, its window
    mean passes 2 and the guard rolls back to step 10 (not to 20 or 30)."""
    cfg = cfg_for(files, tmp_path, steps=50, val_every=0, ckpt_every=0, log_every=5, collapse_guard=True,
                  guard_window=10, guard_max_rollbacks=1, guard_stretch=2.0, batch_size=64)
    logs = []
    tr = Trainer(cfg, log=logs.append)
    real_d, real_step = tr._d_update, tr.unsupervised_step
    stretches = []

    def forced_d(real, fake):
        out = real_d(real, fake)
        out["d_acc"] = torch.tensor(1.0 if tr.step >= 5 else 0.5)
        return out

    def forced_step(batch):
        out = real_step(batch)
        stretches.append(float(out["depth_stretch"]))
        if tr.step >= 35:
            out["depth_stretch"] = torch.tensor(5.0)
        return out
    tr._d_update, tr.unsupervised_step = forced_d, forced_step
    tr.fit()
    assert tr.rollbacks == 1
    msg = [str(m) for m in logs if "collapse guard" in str(m)]
    assert len(msg) == 1 and "rolled back to step 10" in msg[0], msg
    at = int(msg[0].split(" at step ")[1].split(";")[0])
    assert 37 <= at <= 41, at                       # not before the stretch window passes 2
    assert all(0 <= v < 2.0 for v in stretches[:35]), stretches[:35]
    with open(os.path.join(tr.out, "metrics.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["depth_stretch"]]
    assert rows and all(float(r["depth_stretch"]) >= 0 for r in rows)
    with pytest.raises(ConfigError, match="guard_stretch must be >= 0"):
        cfg_for(files, tmp_path, guard_stretch=-1.0)


def test_renorm_floor_bounds_the_rotated_views(files, tmp_path):
    """renorm_floor f: a rotated lift whose projected head-root distance falls below f / c is
    scaled as if it were f / c, so its normalised head-root distance is below 1 / c instead of
    the pose being blown up; views above the floor are normalised exactly as without it, and
    both the 2D and the rotated 3D (returned at the same scale) follow."""
    from fastlift.training import geometry as geo
    cfg = cfg_for(files, tmp_path, steps=1, renorm_floor=0.4)
    tr = Trainer(cfg, log=lambda m: None)
    off = Trainer(cfg_for(files, tmp_path / "b", steps=1, renorm_floor=0.0), log=lambda m: None)
    assert TrainConfig().renorm_floor == 0.35 and resolve_config(cli_values={"preset": "paper"}).renorm_floor == 0.0
    g = torch.Generator().manual_seed(3)
    Y = torch.randn(64, 17, 3, generator=g) * 0.4
    Y[:, :, 2] += cfg.c
    Y[:32, 10] = Y[:32, 0] + torch.tensor([0.01, 0.02, 1.0])   # head straight toward the camera
    Y[32:, 10] = Y[32:, 0] + torch.tensor([0.1, -1.0, 0.2])     # upright
    R = torch.eye(3).expand(64, 3, 3).contiguous()
    x, Yr, s = tr._project(Y, R)
    x0, Yr0, s0 = off._project(Y, R)
    d = (x[:, 10] - x[:, 0]).norm(dim=-1)
    d0 = (x0[:, 10] - x0[:, 0]).norm(dim=-1)
    assert torch.allclose(d0, torch.full_like(d0, 1 / cfg.c), rtol=1e-4)
    short = d < 1 / cfg.c * (1 - 1e-4)
    assert short[:32].all() and not short[32:].any()
    assert x0[:32].abs().max() > 5 * x[:32].abs().max()             # the floor's whole point
    assert torch.allclose(s[:32], torch.full_like(s[:32], 1 / 0.4), rtol=1e-5)   # 1 / (c * floor / c)
    assert torch.allclose(x[32:], x0[32:]) and torch.allclose(Yr[32:], Yr0[32:]) and torch.equal(s[32:], s0[32:])
    raw, _ = geo.rotate_project(Y, R, c=cfg.c, root=0)
    assert torch.allclose(x[:32], (raw[:32] - raw[:32, :1]) * s[:32, None, None], atol=1e-6)
    with pytest.raises(ConfigError, match="renorm_floor must be >= 0"):
        cfg_for(files, tmp_path, renorm_floor=-0.1)


@pytest.mark.parametrize("axis", ["camera", "estimated"])
def test_rotation_warmup_widens_the_ranges_from_near_the_input_view(files, tmp_path, axis):
    """rotation_warmup: at step 0 the azimuth and elevation ranges are rotation_warmup_start of
    their size (here +-45 and +-5 degrees), half-way they are 0.625 of it, after the warm-up whole."""
    cfg = cfg_for(files, tmp_path, steps=2, rotation_warmup=100, rotation_warmup_start=0.25, rotation_axis=axis)
    tr = Trainer(cfg, log=lambda m: None)

    def max_angle(step):
        tr.step = step
        R = tr._rotations(4000).double()
        tr_ = R.diagonal(dim1=-2, dim2=-1).sum(-1)
        return math.degrees(float(torch.arccos(((tr_ - 1) / 2).clamp(-1, 1)).max()))
    assert 40 < max_angle(0) < 46 + 1e-3
    assert 0.625 * 180 - 8 < max_angle(50) < 0.625 * 180 + 1
    assert max_angle(100) > 170 and max_angle(500) > 170
    with pytest.raises(ConfigError, match="rotation_warmup_start"):
        cfg_for(files, tmp_path, rotation_warmup_start=1.5)
    with pytest.raises(ConfigError, match="rotation_warmup needs"):
        cfg_for(files, tmp_path, rotation_warmup=10, rotation_distribution="haar")


def test_elevation_anneal_shrinks_the_elevation_range_to_zero(files, tmp_path, monkeypatch):
    """elevation_anneal: the full elevation range until elevation_anneal_start, then linearly to
    0 over elevation_anneal steps; the azimuth range is untouched."""
    from fastlift.training import engine
    cfg = cfg_for(files, tmp_path, steps=2, elevation_anneal=400, elevation_anneal_start=200,
                  elevation_range=[-20.0, 20.0])
    tr = Trainer(cfg, log=lambda m: None)
    seen = []
    real = engine.geo.sample_angles

    def spy(n, az_range, el_range, **kw):
        seen.append((az_range, el_range))
        return real(n, az_range, el_range, **kw)
    monkeypatch.setattr(engine.geo, "sample_angles", spy)
    got = {}
    for step in (0, 200, 300, 600, 5000):
        tr.step = step
        R = tr._rotations(500)
        got[step] = math.degrees(seen[-1][1][1])
        assert seen[-1][0] == pytest.approx(tuple(math.radians(a) for a in cfg.azimuth_range))
        assert torch.isfinite(R).all()
    assert got[0] == pytest.approx(20.0) and got[200] == pytest.approx(20.0)
    assert got[300] == pytest.approx(15.0) and got[600] == pytest.approx(0.0) and got[5000] == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="elevation_anneal needs"):
        cfg_for(files, tmp_path, elevation_anneal=10, rotation_distribution="haar")
    with pytest.raises(ConfigError, match="elevation_anneal_start must be >= 0"):
        cfg_for(files, tmp_path, elevation_anneal_start=-1)


@pytest.mark.parametrize("axis", ["camera", "estimated"])
def test_adv_level_views_keep_the_azimuth_and_drop_the_elevation(files, tmp_path, monkeypatch, axis):
    """adv_level_views: the rotation D's views come from has the cycle rotation's azimuth and no
    elevation offset (R_cycle R_level^T is a turn about the camera's x axis alone), and D's fakes
    are those level views, not the cycle's."""
    cfg = cfg_for(files, tmp_path, steps=1, val_every=0, ckpt_every=0, adv_level_views=True, rotation_axis=axis,
                  batch_size=64)
    tr = Trainer(cfg, log=lambda m: None)
    tr.step = 7
    R, R_level = tr._rotations(300).double(), tr._rotations(300, level=True).double()
    ex = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    turn = R @ R_level.transpose(1, 2)
    torch.testing.assert_close(turn[:, 0, :], ex.expand(300, 3), rtol=0, atol=1e-5)
    torch.testing.assert_close(turn[:, :, 0], ex.expand(300, 3), rtol=0, atol=1e-5)
    assert float(torch.acos(turn[:, 1, 1].clamp(-1, 1)).max()) > math.radians(10)   # the elevations differ
    seen, projections = {}, []
    real_project, real_d = tr._project, tr._d_update

    def spy_project(Y, R, transpose=False):
        y = real_project(Y, R, transpose)
        projections.append((R.detach().double().clone(), y[0].detach().clone()))
        return y

    def spy_d(real, fake):
        seen["fake"] = fake.detach().clone()
        return real_d(real, fake)
    monkeypatch.setattr(tr, "_project", spy_project)
    monkeypatch.setattr(tr, "_d_update", spy_d)
    tr.step = 0
    out = tr.unsupervised_step(next(tr._iterate()))
    assert torch.isfinite(out["loss_g"])
    (R_cycle, y_cycle), (R_adv, y_adv) = projections[:2]      # the cycle's views, then D's
    B = 64
    turn = R_cycle[:B] @ R_adv.transpose(1, 2)
    torch.testing.assert_close(turn[:, 0, :], ex.expand(B, 3), rtol=0, atol=1e-5)
    torch.testing.assert_close(turn[:, :, 0], ex.expand(B, 3), rtol=0, atol=1e-5)
    fake, shown = seen["fake"], seen["fake"] != 0               # missing joints are zeroed
    assert shown.any()
    torch.testing.assert_close(fake[shown], y_adv[shown])
    assert (fake[shown] - y_cycle[:B][shown]).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="adv_level_views needs"):
        cfg_for(files, tmp_path, adv_level_views=True, rotation_distribution="haar")


def test_knee_hinge_cue_joins_the_lifter_loss_from_its_start(files, tmp_path, monkeypatch):
    """w_knee_hinge: the cue on the lift switches on at knee_hinge_start, its value is logged as
    loss_knee and its weighted value is part of loss_bone (and of the lifter's loss)."""
    tr = Trainer(cfg_for(files, tmp_path, steps=1, w_knee_hinge=7.0, knee_hinge_start=3, use_temporal=False),
                 log=lambda m: None)
    assert tr._legs.tolist() == [[1, 2, 3], [4, 5, 6]] and tr._hips == (1, 4)
    seen = []
    real = L.knee_hinge_loss

    def spy(*a, **k):
        v = real(*a, **k)
        seen.append(float(v.detach()))
        return v
    monkeypatch.setattr(L, "knee_hinge_loss", spy)
    batch = next(tr._iterate())
    tr.step = 2
    out = tr.unsupervised_step(batch)
    assert seen == [] and "loss_knee" not in out
    tr.step = 3
    out = tr.unsupervised_step(batch)
    assert len(seen) == 1 and seen[0] > 0                      # a near-flat lift bends no knee right
    assert float(out["loss_knee"]) == pytest.approx(seen[0])
    assert float(out["loss_bone"]) == pytest.approx(7.0 * seen[0], rel=1e-6)


def test_moving_average_decay_is_min_of_ema_and_its_warmup(files, tmp_path):
    """The lifter's moving average moves by 1 - min(ema, (1 + s) / (ema_warmup + s)) at step s:
    with the default warm-up (10) a 0.998 decay does not bind at step 700, with 2 it does."""
    for warm, expected in ((10.0, 701.0 / 710.0), (2.0, 0.998)):
        tr = Trainer(cfg_for(files, tmp_path / f"w{warm}", steps=1, ema=0.998, ema_warmup=warm), log=lambda m: None)
        with torch.no_grad():
            for p in tr.lifter_ema.parameters():
                p.zero_()
            for p in tr.lifter.parameters():
                p.fill_(1.0)
        tr.step = 700
        tr._update_ema()
        for p in tr.lifter_ema.parameters():
            torch.testing.assert_close(p, torch.full_like(p, 1.0 - expected), rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="ema_warmup"):
        cfg_for(files, tmp_path, ema_warmup=1.0)


def test_d_acc_cap_decides_on_the_mean_accuracy_of_the_processes(files, tmp_path):
    """d_acc_cap under torchrun: an update all-reduces the gradients, so every process must skip
    or update together; the decision uses the processes' mean accuracy, not the local one."""
    tr = Trainer(cfg_for(files, tmp_path, steps=2, d_acc_cap=0.7), log=lambda m: None)
    seen = []

    def fake_mean(v):                      # as if the other process had a very different batch
        seen.append(float(v))
        return 0.5 if float(v) > 0.9 else 0.95
    tr._process_mean = fake_mean
    assert tr._d_may_update(torch.tensor(1.0)) is True     # local 1.0, mean 0.5: update
    assert tr._d_may_update(torch.tensor(0.6)) is False    # local 0.6, mean 0.95: skip
    assert seen == [1.0, pytest.approx(0.6)]
    tr1 = Trainer(cfg_for(files, tmp_path, steps=2), log=lambda m: None)
    tr1._process_mean = lambda v: pytest.fail("no cap: no all-reduce")
    assert tr1._d_may_update(torch.tensor(1.0)) is True


def test_w_3d_ramp_moves_the_weight_linearly(files, tmp_path):
    cfg = cfg_for(files, tmp_path, steps=2, val_every=0, ckpt_every=0, w_3d=30.0, w_3d_final=100.0, w_3d_ramp=1000)
    tr = Trainer(cfg, log=lambda *a: None)
    for step, w in ((0, 30.0), (250, 47.5), (1000, 100.0), (5000, 100.0)):
        tr.step = step
        assert tr._w_3d() == pytest.approx(w)
    flat = Trainer(cfg_for(files, tmp_path / "b", steps=2, w_3d=30.0), log=lambda *a: None)
    flat.step = 800
    assert flat._w_3d() == 30.0
    # from zero: the cycle still runs (and its loss is reported) while w_3d itself is 0
    zero = Trainer(cfg_for(files, tmp_path / "c", steps=2, w_3d=0.0, w_3d_final=10.0, w_2d=0.0), log=lambda *a: None)
    out = zero.unsupervised_step(next(zero._iterate()))
    assert float(out["loss_3d"]) > 0
    with pytest.raises(ConfigError, match="w_3d_ramp must be >= 0"):
        cfg_for(files, tmp_path, w_3d_ramp=-1)
    # a delayed ramp: w_3d until w_3d_ramp_start, then the ramp; a zero-length ramp is a step
    late = Trainer(cfg_for(files, tmp_path / "d", steps=2, w_3d=30.0, w_3d_final=100.0, w_3d_ramp=200,
                           w_3d_ramp_start=750), log=lambda *a: None)
    for step, w in ((0, 30.0), (749, 30.0), (750, 30.0), (850, 65.0), (950, 100.0), (4000, 100.0)):
        late.step = step
        assert late._w_3d() == pytest.approx(w)
    jump = Trainer(cfg_for(files, tmp_path / "e", steps=2, w_3d=30.0, w_3d_final=100.0, w_3d_ramp=0,
                           w_3d_ramp_start=750), log=lambda *a: None)
    for step, w in ((749, 30.0), (750, 100.0)):
        jump.step = step
        assert jump._w_3d() == pytest.approx(w)
    with pytest.raises(ConfigError, match="w_3d_ramp_start must be >= 0"):
        cfg_for(files, tmp_path, w_3d_ramp_start=-5)


@pytest.mark.parametrize("k", [1, 2])
def test_bone_sequence_cue_lifts_a_partner_frame_of_the_same_sequence(files, tmp_path, monkeypatch, k):
    """w_bone_sequence: each pose's partner (a random frame of its sequence) rides along in the
    lift's forward, the bone-proportion loss between them joins the lifter's loss (loss_bone), and
    data without sequences turns the cue off with a message."""
    from fastlift.training import engine
    cfg = cfg_for(files, tmp_path, steps=1, val_every=0, ckpt_every=0, w_bone_sequence=5.0, batch_size=64,
                  use_temporal=False, seed=2, bone_sequence_partners=k, bone_sequence_start=0, bone_sequence_ramp=0)
    tr = Trainer(cfg, log=lambda *a: None)
    assert tr.use_bone_sequence and tr.loader.sequence_partners == k
    batch = next(tr._iterate())
    assert batch["keypoints_2d_partner"].shape == (k * 64, 17, 2)
    sizes, seen = [], {}
    real_lift, real_loss = tr._lift, engine.L.bone_log_ratio_loss
    monkeypatch.setattr(tr, "_lift", lambda x: (sizes.append(x.shape[0]), real_lift(x))[1])

    def spy_loss(a, b, child, parent, valid=None):
        v = real_loss(a, b, child, parent, valid=valid)
        seen.update(value=float(v.detach()), n=a.shape[0])
        return v

    monkeypatch.setattr(engine.L, "bone_log_ratio_loss", spy_loss)
    out = tr.unsupervised_step(batch)
    assert sizes[0] == (1 + k) * 64 and seen["n"] == k * 64
    assert float(out["loss_bone"]) == pytest.approx(5.0 * seen["value"], rel=1e-5) and seen["value"] > 0
    # no sequences (every pose its own): off, said once
    ps = PoseSet.load(files["train"])
    lone = PoseSet(keypoints_2d=ps.keypoints_2d, confidence=ps.confidence, keypoints_3d=ps.keypoints_3d,
                   sequence=np.arange(len(ps)), frame=np.zeros(len(ps), dtype=np.int64))
    path = lone.save(str(tmp_path / "lone.npz"))
    msgs = []
    tr2 = Trainer(cfg_for(files, tmp_path / "lone", data=path, steps=1, val_every=0, ckpt_every=0,
                          w_bone_sequence=5.0), log=msgs.append)
    assert not tr2.use_bone_sequence and not tr2.loader.sequence_partners
    assert any("bone-length cue across sequences: off" in m for m in msgs)


def test_bone_sequence_group_subject_and_its_fallback(files, tmp_path):
    """Partners come from the same subject by default, from the sequence when asked or when the
    data has no subject names."""
    kw = dict(steps=1, val_every=0, ckpt_every=0)
    tr = Trainer(cfg_for(files, tmp_path, **kw), log=lambda *a: None)
    assert tr.use_bone_sequence and tr.loader.partner_key == "subject"
    tr_seq = Trainer(cfg_for(files, tmp_path / "seq", bone_sequence_group="sequence", **kw), log=lambda *a: None)
    assert tr_seq.use_bone_sequence and tr_seq.loader.partner_key == "sequence"
    ps = PoseSet.load(files["train"])
    nameless = PoseSet(keypoints_2d=ps.keypoints_2d, confidence=ps.confidence, keypoints_3d=ps.keypoints_3d,
                       sequence=ps.sequence, frame=ps.frame)
    msgs = []
    tr2 = Trainer(cfg_for(files, tmp_path / "n", data=nameless.save(str(tmp_path / "nameless.npz")), **kw),
                  log=msgs.append)
    assert tr2.use_bone_sequence and tr2.loader.partner_key == "sequence"
    assert any("no subject names; partners come from each pose's sequence" in m for m in msgs)


def test_bone_sequence_cue_waits_for_its_start_then_ramps(files, tmp_path):
    cfg = cfg_for(files, tmp_path, steps=1, val_every=0, ckpt_every=0, w_bone_sequence=8.0,
                  bone_sequence_start=10, bone_sequence_ramp=4)
    tr = Trainer(cfg, log=lambda *a: None)
    got = []
    for step in (0, 9, 10, 11, 13, 50):
        tr.step = step
        got.append(tr._w_bone_sequence())
    assert got == [0.0, 0.0, 2.0, 4.0, 8.0, 8.0]
    tr.step = 0
    assert "loss_bone" not in tr.unsupervised_step(next(tr._iterate()))   # nothing added before the start
    with pytest.raises(ConfigError, match="bone_sequence_start must be >= 0"):
        cfg_for(files, tmp_path, bone_sequence_start=-1)


def test_no_discriminator_ablation_leaves_d_untouched(files, tmp_path):
    cfg = cfg_for(files, tmp_path, steps=3, use_discriminator=False, val_every=0)
    tr = Trainer(cfg, log=lambda *a: None)
    d0 = [p.clone() for p in tr.disc.parameters()]
    tr.fit()
    assert all(torch.equal(a, b) for a, b in zip(d0, tr.disc.parameters()))


def _final_state(tr):
    return {k: v.clone() for k, v in tr.lifter.state_dict().items()} | \
           {f"d.{k}": v.clone() for k, v in tr.disc.state_dict().items()}


@pytest.mark.parametrize("mode", ["unsupervised", "supervised"])
def test_resume_is_exact(files, tmp_path, mode):
    """2K steps in one go == K steps, checkpoint, resume, K steps (bitwise)."""
    K = 5
    # adv_balance_target on: the adversarial gain is state that a resume must restore
    # w_bone_sequence on: the partner frames must be drawn again as they were
    kw = dict(steps=2 * K, val_every=0, ckpt_every=0, mode=mode, dropout=0.2, batch_size=256, adv_balance_target=0.6,
              w_bone_sequence=1.0, bone_sequence_start=2, bone_sequence_ramp=3)
    full = Trainer(cfg_for(files, tmp_path / "a", **kw), log=lambda *a: None)
    full.fit()
    first = Trainer(cfg_for(files, tmp_path / "b", **kw), log=lambda *a: None)
    first.fit(stop_at=K)
    assert first.step == K
    resumed = Trainer(cfg_for(files, tmp_path / "c", resume=str(tmp_path / "b" / "run"), **kw), log=lambda *a: None)
    assert resumed.step == K
    resumed.fit()
    a, b = _final_state(full), _final_state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert full.loader.state_dict() == resumed.loader.state_dict()
    assert full.adv_gain == resumed.adv_gain and (mode == "supervised" or full.adv_gain != 1.0)


def test_checkpoint_from_another_config_is_refused(files, tmp_path):
    tr = Trainer(cfg_for(files, tmp_path / "a", steps=2), log=lambda *a: None)
    tr.fit()
    ck = os.path.join(tr.out, "checkpoints", "last.pt")
    with pytest.raises(ConfigError, match=r"width: checkpoint 32, config 48"):
        Trainer(cfg_for(files, tmp_path / "b", resume=ck, width=48), log=lambda *a: None)
    with pytest.raises(ConfigError, match="blocks"):
        Trainer(cfg_for(files, tmp_path / "b", init=ck, blocks=2), log=lambda *a: None)
    junk = tmp_path / "junk.pt"
    torch.save({"a": 1}, junk)
    with pytest.raises(ConfigError, match="not a fastlift training checkpoint"):
        Trainer(cfg_for(files, tmp_path / "b", resume=str(junk)), log=lambda *a: None)
    ok = Trainer(cfg_for(files, tmp_path / "b", init=ck, steps=1), log=lambda *a: None)  # same shapes: fine
    torch.testing.assert_close(ok.lifter.state_dict()["net.head.weight"], tr.eval_lifter.state_dict()["net.head.weight"])


def test_a_supervised_lifter_initialises_an_unsupervised_run_but_does_not_resume_one(files, tmp_path):
    """--init across modes: the unsupervised run starts from the supervised lifter's depths
    (its output standardisation comes along); --resume keeps to the checkpoint's mode."""
    sup = Trainer(cfg_for(files, tmp_path / "s", steps=3, mode="supervised"), log=lambda *a: None)
    sup.fit()
    ck = os.path.join(sup.out, "checkpoints", "last.pt")
    assert float(sup.eval_lifter.out_std.sub(1).abs().max()) > 1e-3      # a real standardisation
    un = Trainer(cfg_for(files, tmp_path / "u", init=ck, steps=1), log=lambda *a: None)
    x = next(un._iterate())["keypoints_2d"][:29]
    sup.eval_lifter.eval()
    un.lifter.eval()
    torch.testing.assert_close(un.lifter(x), sup.eval_lifter(x))
    with pytest.raises(ConfigError, match=r"mode: checkpoint 'supervised', config 'unsupervised'"):
        Trainer(cfg_for(files, tmp_path / "u2", resume=ck), log=lambda *a: None)


def _save(ps_kwargs, path):
    return PoseSet(**ps_kwargs).save(str(path))


def test_bad_data_fails_before_training(files, tmp_path):
    ps = generate(200, seed=1, split="train", seq_len=50)
    few = ps.subset(slice(0, 10)).save(str(tmp_path / "few.npz"))
    with pytest.raises(PoseDataError, match=r"only 10 of 10 poses are usable.*at least 64"):
        Trainer(cfg_for(files, tmp_path, data=few), log=lambda *a: None)
    k = np.array(ps.keypoints_2d)
    k[:] = np.nan
    nan = _save(dict(keypoints_2d=k), tmp_path / "nan.npz")
    with pytest.raises(PoseDataError, match="all joints of all 200 poses are missing"):
        Trainer(cfg_for(files, tmp_path, data=nan), log=lambda *a: None)
    k = np.array(ps.keypoints_2d)
    k[:150, 10] = np.nan  # heads missing: those poses cannot be normalised
    part = _save(dict(keypoints_2d=k), tmp_path / "part.npz")
    with pytest.raises(PoseDataError, match=r"only 50 of 200 poses are usable"):
        Trainer(cfg_for(files, tmp_path, data=part), log=lambda *a: None)
    no3d = _save(dict(keypoints_2d=np.array(ps.keypoints_2d)), tmp_path / "no3d.npz")
    with pytest.raises(PoseDataError, match="no keypoints_3d"):
        Trainer(cfg_for(files, tmp_path, val=no3d), log=lambda *a: None)
    with pytest.raises(PoseDataError, match="no keypoints_3d"):
        Trainer(cfg_for(files, tmp_path, data=no3d, mode="supervised"), log=lambda *a: None)
    # 2D-only training data is fine for the unsupervised method
    Trainer(cfg_for(files, tmp_path, data=no3d, steps=1), log=lambda *a: None).fit()


def test_cli_reports_errors_with_status_2(files, tmp_path, capsys):
    from fastlift.train import main
    assert main(["--preset", "tiny", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    assert main(["--preset", "tiny", "--bogus-flag", "1"]) == 2
    assert main(["--print-config", "--preset", "paper"]) == 0
    assert "width = 1024" in capsys.readouterr().out


def test_sigterm_checkpoints_and_resumes(files, tmp_path):
    """A run killed with SIGTERM writes a checkpoint, exits 143, and resumes from it."""
    out = tmp_path / "sig"
    args = [sys.executable, "-m", "fastlift.train", "--preset", "tiny", "--data", files["train"], "--val", files["val"],
            "--steps", "100000", "--val-every", "0", "--ckpt-every", "0", "--ckpt-minutes", "0", "--out", str(out),
            "--threads", "1", "--tensorboard", "false", "--log-every", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    csv_path = out / "metrics.csv"
    t0 = time.time()
    while time.time() - t0 < 60:  # wait until training steps are being logged
        if csv_path.exists() and len(csv_path.read_text().splitlines()) > 3:
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    log, _ = p.communicate(timeout=60)
    assert p.returncode == 143, log
    assert (out / "checkpoints" / "last.pt").exists(), log
    st = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert st["step"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["steps"] == st["step"]
    cfg = resolve_config(cli_values=dict(TINY, resume=str(out), steps=st["step"] + 2, data=files["train"],
                                         val=files["val"], out=str(out)))
    tr = Trainer(cfg, log=lambda *a: None)
    assert tr.step == st["step"]
    assert tr.fit()["steps"] == st["step"] + 2


# ------------------------------------------------------------------------------------ --extra-2d
@pytest.fixture(scope="module")
def wild_file(tmp_path_factory):
    from fastlift.data.wild import synthetic_wild
    ps = synthetic_wild(600, seed=5)
    assert ps.layout == "coco17"
    return ps.save(str(tmp_path_factory.mktemp("wild") / "wild_coco.npz"))


def test_extra_2d_is_adapted_into_the_training_data_and_cached_for_resume(files, wild_file, tmp_path):
    lines = []
    cfg = cfg_for(files, tmp_path, steps=6, val_every=3, ckpt_every=3, extra_2d=wild_file, adapter_steps=20,
                  extra_target_fraction=0.5)
    tr = Trainer(cfg, log=lines.append)
    n_train = len(PoseSet.load(files["train"]))
    # target repeated to at least half of the mix, plus the adapted (complete) extra poses
    assert len(tr.data.train) > n_train
    assert tr.data.train.layout == "h36m17" and np.isfinite(np.asarray(tr.data.train.keypoints_2d)).all()
    cache = os.path.join(cfg.out, "extra_2d_adapted.npz")
    assert os.path.isfile(cache)
    assert any("extra" in str(m) and "adapted" in str(m) for m in lines)
    tr.fit()
    # resume reads the cached poses: the same training set, no adapter training
    lines.clear()
    cfg2 = cfg_for(files, tmp_path, steps=8, val_every=3, ckpt_every=3, extra_2d=wild_file, adapter_steps=20,
                   resume=cfg.out)
    tr2 = Trainer(cfg2, log=lines.append)
    assert any("read from" in str(m) for m in lines)
    np.testing.assert_array_equal(np.asarray(tr2.data.train.keypoints_2d), np.asarray(tr.data.train.keypoints_2d))
    assert tr2.fit()["steps"] == 8


def test_extra_2d_errors_are_clear(files, wild_file, tmp_path):
    from fastlift.train import main
    with pytest.raises(ConfigError, match="unsupervised"):
        Trainer(cfg_for(files, tmp_path, mode="supervised", extra_2d=wild_file), log=lambda *a: None)
    with pytest.raises(PoseDataError, match="does not exist"):
        Trainer(cfg_for(files, tmp_path, extra_2d=str(tmp_path / "nope.json")), log=lambda *a: None)
    assert main(["--preset", "tiny", "--data", files["train"], "--extra-2d", str(tmp_path / "nope.json"),
                 "--out", str(tmp_path / "o")]) == 2


# ------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("kind", ["mse", "l1"])
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_engine_fused_reprojection_equals_the_two_step_cycle(kind, backend):
    """The engine's fused steps 5-6 give the losses and gradients of project + consistency loss."""
    from fastlift.training import geometry as geo
    g = torch.Generator().manual_seed(7)
    B, J = 37, 17
    x = torch.randn(B, J, 2, generator=g) * 0.05
    Y_re = torch.cat([torch.randn(B, J, 2, generator=g), 10 + torch.randn(B, J, 1, generator=g)], -1)
    Y_rot = torch.randn(B, J, 3, generator=g)
    R = geo.sample_rotations(B, seed=3)
    w = torch.rand(B, J, generator=g) + 0.1
    w[::5, 3] = 0  # excluded joints
    geo.set_backend(backend)
    try:
        results = []
        for fused in (True, False):
            ins = [t.clone().requires_grad_(True) for t in (x, Y_re, Y_rot)]
            if fused:
                l2, l3 = geo.cycle_reprojection_loss(ins[0], ins[1], R, ins[2], weights=w, kind=kind, root=0, head=10)
            else:
                xb, _, _ = geo.project_normalized(ins[1], R, root=0, head=10, transpose=True)
                l2, l3 = geo.cycle_consistency_loss(ins[0], xb, ins[2], ins[1], weights=w, kind=kind, root=0)
            (3 * l2 + 0.5 * l3).backward()
            results.append((l2.detach(), l3.detach(), *[t.grad for t in ins]))
    finally:
        geo.set_backend("auto")
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=1e-7)


def test_torso_tilt_reads_the_camera_elevation():
    """An upright torso seen from a camera looking down by a has the up axis (0, -cos a, -sin a)."""
    from fastlift.training import geometry as geo
    a = torch.tensor([0.0, 0.3, -0.2, 1.2])
    Y = torch.randn(4, 17, 3, generator=torch.Generator().manual_seed(0))
    hips, shoulders = (1, 4), (14, 11)
    Y[:, 1] = Y[:, 4] = 0.25 * torch.randn(4, 3)[:, :1]  # any hip centre
    up = torch.stack((torch.zeros(4), -torch.cos(a), -torch.sin(a)), -1)
    Y[:, 11] = Y[:, 14] = Y[:, 1] + 0.5 * up
    t = geo.torso_tilt(Y, hips, shoulders)
    torch.testing.assert_close(t, torch.tensor([0.0, 0.3, -0.2, math.pi / 4]))  # the last one clipped


def test_rotations_about_vertical():
    from fastlift.training import geometry as geo
    az, el = geo.sample_angles(41, seed=5)
    # camera elevation 0: the method's R = R_x(el) R_y(az)
    torch.testing.assert_close(geo.rotations_about_vertical(az, el, 0.0), geo.sample_rotations(41, seed=5),
                               atol=1e-6, rtol=0)
    ce = torch.tensor(0.35)
    R = geo.rotations_about_vertical(az, el, ce)
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(41, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(41), atol=1e-6, rtol=0)
    # the world vertical as that camera sees it goes to the vertical tilted by ce + el: the azimuth
    # turns about it instead of about the camera's y axis
    up = torch.tensor([0.0, -torch.cos(ce), -torch.sin(ce)])
    want = torch.stack((torch.zeros(41), -torch.cos(ce + el), -torch.sin(ce + el)), -1)
    torch.testing.assert_close(R @ up, want, atol=1e-6, rtol=0)
