"""Training the flow prior (:class:`fastlift.models.flow.PoseFlow`) on the real 2D poses.

The flow is fitted once, before the lifter trains, by maximum likelihood on the normalised 2D
training poses (and their mirror images with left and right swapped, valid poses of the mirrored
world, when the run mirrors its batches), then frozen: the lifter's re-projections are scored by
its negative log-likelihood (``w_flow``).
"""
from __future__ import annotations

import math
import sys
import time

import torch

from fastlift.models.flow import PoseFlow

__all__ = ["flow_training_poses", "train_pose_flow", "capped_nll"]


def capped_nll(nll: torch.Tensor, cap: float) -> torch.Tensor:
    """``nll`` where it is at most ``cap``, ``cap + log(1 + nll - cap)`` above: the same ordering and
    gradient direction, with the magnitude of poses far outside the data tamed."""
    excess = (nll - cap).clamp_min(0.0)
    return torch.where(nll > cap, cap + torch.log1p(excess), nll)


def flow_training_poses(x: torch.Tensor, conf: torch.Tensor, flip_index=None) -> torch.Tensor:
    """The poses the flow is fitted on: the normalised 2D poses ``x`` (N, J, 2) with every joint
    present (``conf`` (N, J) > 0; missing joints sit at the root and are not a pose shape), plus
    their mirror images (x -> -x, left and right swapped) when ``flip_index`` is given."""
    full = (conf > 0).all(-1)
    x = x[full]
    if flip_index is not None:
        perm = torch.as_tensor(flip_index, dtype=torch.long, device=x.device)
        x = torch.cat([x, x[:, perm] * torch.tensor([-1.0, 1.0], device=x.device, dtype=x.dtype)], 0)
    return x


def train_pose_flow(flow: PoseFlow, poses: torch.Tensor, steps: int = 1000, batch_size: int = 1024, lr: float = 1e-3,
                    noise: float = 0.0, seed: int = 0, progress: bool = True, log=print) -> dict:
    """Fit ``flow`` to ``poses`` (N, J, 2) by maximum likelihood: whitening from the poses' PCA, then
    ``steps`` Adam updates (cosine-annealed ``lr``) on batches drawn with a generator seeded by
    ``seed``, each pose jittered by Gaussian ``noise`` (normalised units) to smooth the density.
    Marks the flow trained and returns ``{"nll": mean NLL of the last 50 updates (nats per
    coordinate), "seconds": wall time}``. Raises ``ValueError`` with fewer than 2(J-1)+1 poses
    (the whitening needs a full-rank covariance)."""
    n = poses.shape[0]
    if n <= flow.dim:
        raise ValueError(f"flow prior: {n} complete 2D poses to fit it on; it needs more than {flow.dim} "
                         "(poses with every joint present)")
    t0 = time.perf_counter()
    flow.fit_whitening(poses)
    flow.train()
    params = [p for p in flow.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc="flow prior", dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
    recent = []
    try:
        for _ in range(steps):
            idx = torch.randint(n, (min(batch_size, n),), generator=gen).to(poses.device)
            xb = poses[idx]
            if noise > 0:
                xb = xb + noise * torch.randn(xb.shape, generator=gen).to(xb.device)
            loss = flow.nll(xb).mean()
            if not torch.isfinite(loss):
                raise RuntimeError("flow prior: the training loss became non-finite (lower flow_lr)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            recent = (recent + [float(loss.detach())])[-50:]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(nll=f"{recent[-1]:.3f}")
    finally:
        if bar is not None:
            bar.close()
    flow.eval()
    for p in flow.parameters():
        p.requires_grad_(False)
    flow.trained.fill_(True)
    out = {"nll": sum(recent) / max(len(recent), 1), "seconds": time.perf_counter() - t0}
    log(f"flow prior: {steps} updates on {n} poses in {out['seconds']:.1f} s, NLL {out['nll']:.3f} nats per coordinate")
    return out
