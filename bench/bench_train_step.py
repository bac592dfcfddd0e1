"""Training-step throughput: fastlift's engine against a plain eager PyTorch step.

The step is one unsupervised lift-reproject-lift cycle with one discriminator update, at the
paper's sizes (``--preset paper``: lifter width 1024, 4 residual blocks, BatchNorm, dropout 0.5;
2D discriminator width 1024, 3 blocks, no BN; no temporal discriminator), batch 1024, on the CPU.

* ``plain-fp32``: :class:`PlainStep` below, the baseline: the method written directly in eager
  PyTorch, as a reimplementation would (geometry in torch ops, rotations from ``torch.rand``, D on
  real and fake in two forwards, the adversarial backward through D's weights, ``torch.optim.Adam``).
* ``fastlift-*``: :meth:`fastlift.training.engine.Trainer.unsupervised_step` with the fused
  geometry ops, D's weights frozen for the adversarial term, real and fake in one D forward, and
  the options ``amp=bf16`` and ``compile=True``.

The bound: the step's matrix-multiply FLOPs (counted below) at the machine's GEMM rate
(``bench/roofline.py``) gives the samples/s no implementation can beat; each row reports the
fraction of it reached.

Run: ``python bench/bench_train_step.py [--batch 1024] [--steps 5] [--variants ...]``.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from roofline import gemm_gflops, machine_description  # noqa: E402

J = 17


# ----------------------------------------------------------------------------- the baseline
class _Res(nn.Module):
    def __init__(self, w, bn, p, act):
        super().__init__()
        layers = []
        for _ in range(2):
            layers += [nn.Linear(w, w)] + ([nn.BatchNorm1d(w)] if bn else []) + [act()] + ([nn.Dropout(p)] if p else [])
        self.f = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.f(x)


def plain_mlp(i, o, w, blocks, bn, p, act):
    layers = [nn.Linear(i, w)] + ([nn.BatchNorm1d(w)] if bn else []) + [act()] + ([nn.Dropout(p)] if p else [])
    layers += [_Res(w, bn, p, act) for _ in range(blocks)] + [nn.Linear(w, o)]
    return nn.Sequential(*layers)


class PlainStep:
    """The unsupervised step in plain eager PyTorch, fp32 (the baseline)."""

    def __init__(self, width=1024, blocks=4, dropout=0.5, d_width=1024, d_blocks=3, lr=1e-4, c=10.0):
        self.c = c
        self.G = plain_mlp(2 * J, J, width, blocks, True, dropout, nn.ReLU)
        with torch.no_grad():
            self.G[-1].weight.mul_(0.01)
            self.G[-1].bias.zero_()
        self.D = plain_mlp(2 * J, 1, d_width, d_blocks, False, 0.0, lambda: nn.LeakyReLU(0.2))
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr, betas=(0.5, 0.9))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr / 4, betas=(0.5, 0.9))

    def lift(self, x):
        d = self.G(x.reshape(len(x), -1))
        z = F.softplus(self.c + d) + 1.0
        return torch.cat([x * z[..., None], z[..., None]], -1)

    def normalize(self, x):
        x = x - x[:, :1]
        return x / (self.c * (x[:, 10] - x[:, 0]).norm(dim=-1).clamp_min(1e-6))[:, None, None]

    def project(self, Y, R):
        Yr = (Y - Y[:, :1]) @ R.transpose(1, 2)
        z = 1.0 + F.softplus(Yr[..., 2:] + self.c - 1.0)
        return Yr, self.normalize(Yr[..., :2] / z)

    @staticmethod
    def rotations(n):
        az = (torch.rand(n) * 2 - 1) * math.pi
        el = (torch.rand(n) * 2 - 1) * math.pi / 9
        ca, sa, ce, se = az.cos(), az.sin(), el.cos(), el.sin()
        o, z = torch.ones(n), torch.zeros(n)
        Ry = torch.stack([ca, z, sa, z, o, z, -sa, z, ca], 1).view(n, 3, 3)
        Rx = torch.stack([o, z, z, z, ce, -se, z, se, ce], 1).view(n, 3, 3)
        return Rx @ Ry

    def step(self, x):
        B = len(x)
        Y = self.lift(x)
        R = self.rotations(B)
        Y_rot, fake = self.project(Y, R)
        Y2 = self.lift(fake)
        _, x_back = self.project(Y2, R.transpose(1, 2))
        s = fake.new_ones(())  # (the re-normalisation scale is folded into L_3D as in the engine)
        l2d = F.mse_loss(x_back, x)
        l3d = F.mse_loss(Y2 - Y2[:, :1], (Y_rot - Y_rot[:, :1]) * s)
        # discriminator
        d_real = self.D(x.reshape(B, -1))
        d_fake = self.D(fake.detach().reshape(B, -1))
        loss_d = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + \
            F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        self.opt_d.zero_grad()
        loss_d.backward()
        self.opt_d.step()
        # generator
        adv = F.binary_cross_entropy_with_logits(self.D(fake.reshape(B, -1)), torch.ones_like(d_fake))
        loss_g = adv + 10 * l2d + 0.001 * l3d
        self.opt_g.zero_grad()
        loss_g.backward()
        self.opt_g.step()
        return loss_g.item()


# ---------------------------------------------------------------------------------- FLOPs
def step_gemm_flops(B, width=1024, blocks=4, d_width=1024, d_blocks=3, frozen_d=True) -> float:
    """Multiply-add FLOPs (x2) of the step's matrix multiplies."""
    def mlp(i, o, w, nb):  # forward FLOPs per sample
        return 2 * (i * w + 2 * nb * w * w + w * o)
    g = mlp(2 * J, J, width, blocks)
    d = mlp(2 * J, 1, d_width, d_blocks)
    total = 2 * B * g * 3                 # two lifter forwards, each + backward (2x)
    total += 2 * B * d * 3                # D update: real + fake forward, backward
    total += B * d * (2 if frozen_d else 3)  # adversarial: forward + input-gradient backward (+ weight grads)
    return float(total)


# ---------------------------------------------------------------------------------- runners
def make_trainer(B, amp, compile_, ops_backend, data_path, threads):
    from fastlift.training.config import resolve_config
    from fastlift.training.engine import Trainer
    out = tempfile.mkdtemp(prefix="bench_train_step_")
    cfg = resolve_config(cli_values=dict(preset="paper", data=data_path, batch_size=B, use_temporal=False,
                                         amp=amp, compile=compile_, ops_backend=ops_backend, out=out,
                                         progress=False, tensorboard=False, threads=threads, min_poses=1))
    tr = Trainer(cfg, log=lambda *a: None, install_signal_handlers=False)
    return tr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--ops-backend", default="auto")
    ap.add_argument("--variants", nargs="+",
                    default=["plain-fp32", "fastlift-fp32", "fastlift-bf16", "fastlift-bf16-compile"])
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from fastlift.data.synthetic import generate
    tmp = tempfile.mkdtemp(prefix="bench_train_step_data_")
    data = generate(max(4 * args.batch, 8192), seed=0, split="train").save(os.path.join(tmp, "train.npz"))

    B = args.batch
    gf32 = gemm_gflops()
    gbf16 = gemm_gflops(dtype=torch.bfloat16)
    print(machine_description())
    print(f"GEMM 1024^3: fp32 {gf32:.0f} GFLOP/s, bf16 {gbf16:.0f} GFLOP/s")
    flops = step_gemm_flops(B)
    flops_plain = step_gemm_flops(B, frozen_d=False)
    print(f"step GEMM work (batch {B}): {flops / 1e9:.1f} GFLOP (plain step {flops_plain / 1e9:.1f}); "
          f"bound {B / (flops / 1e9 / gf32):.0f} samples/s fp32, {B / (flops / 1e9 / gbf16):.0f} bf16")
    # Build every variant, then time them round-robin (one step each per round): on a shared,
    # noisy machine every variant sees the same load.
    runners = {}
    for v in args.variants:
        torch.manual_seed(0)
        if v == "plain-fp32":
            st = PlainStep()
            from fastlift.data import load_poses
            from fastlift.data.normalize import normalize_2d_np
            ps = load_poses(data)
            x = torch.from_numpy(normalize_2d_np(ps.keypoints_2d[:B])[0])
            runners[v] = (lambda st=st, x=x: st.step(x)), gf32
        else:
            amp = "bf16" if "bf16" in v else "none"
            tr = make_trainer(B, amp, "compile" in v, args.ops_backend, data, args.threads)
            batch = next(tr._iterate())

            def one(tr=tr, batch=batch):
                tr.unsupervised_step(batch)
                tr.step += 1
            runners[v] = one, (gbf16 if amp == "bf16" else gf32)
        for _ in range(args.warmup + (2 if "compile" in v else 0)):
            runners[v][0]()
    times = {v: [] for v in runners}
    for _ in range(args.steps):
        for v, (fn, _) in runners.items():
            t = time.perf_counter()
            fn()
            times[v].append(time.perf_counter() - t)
    print(f"{'variant':<24}{'ms/step':>10}{'samples/s':>12}{'vs plain':>10}{'of bound':>10}")
    results = {}
    base = None
    for v, (fn, rate) in runners.items():
        med = statistics.median(times[v])
        sps = B / med
        if v == "plain-fp32":
            base = sps
        bound = B / (flops / 1e9 / rate)
        results[v] = sps
        rel = f"{sps / base:.2f}x" if base else "-"
        print(f"{v:<24}{med * 1e3:>10.0f}{sps:>12.0f}{rel:>10}{sps / bound:>10.0%}", flush=True)
    return results


if __name__ == "__main__":
    main()
