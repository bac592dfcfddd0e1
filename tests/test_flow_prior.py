"""The flow prior: PoseFlow's density, its training on 2D poses, and its use in the engine."""
import math
import os

import numpy as np
import pytest
import torch

from fastlift.data.layouts import get_layout
from fastlift.data.synthetic import generate
from fastlift.models.flow import PoseFlow
from fastlift.training.config import ConfigError, resolve_config
from fastlift.training.engine import Trainer
from fastlift.training.inputs import normalized_2d
from fastlift.training.prior import capped_nll, flow_training_poses, train_pose_flow

H36M = get_layout("h36m17")


def _poses(n, split="train", seed=3):
    ps = generate(n, seed=seed, split=split, seq_len=50)
    x, conf, _ = normalized_2d(ps, 0, 10, 10.0)
    return torch.from_numpy(x), torch.from_numpy(conf)


def test_untrained_flow_is_the_gaussian_of_the_whitened_poses():
    """Couplings start as the identity, so the density is the Gaussian with the poses' mean and
    covariance: the NLL must match torch's multivariate normal (well-conditioned correlated
    coordinates, so that no eigenvalue is floored)."""
    g = torch.Generator().manual_seed(4)
    mix = torch.randn(32, 32, generator=g, dtype=torch.float64) + 3 * torch.eye(32, dtype=torch.float64)
    v = 0.05 * torch.randn(2000, 32, generator=g, dtype=torch.float64) @ mix + 0.1
    x = torch.cat([torch.zeros(2000, 1, 2, dtype=torch.float64), v.view(2000, 16, 2)], 1)
    f = PoseFlow(17, 0, width=16, layers=4).double()
    f.fit_whitening(x)
    mvn = torch.distributions.MultivariateNormal(v.mean(0), covariance_matrix=torch.cov((v - v.mean(0)).T))
    probe = x[:37] + 0.05 * torch.randn(37, 17, 2, generator=g, dtype=torch.float64)
    probe[:, 0] = 0.0
    expect = -mvn.log_prob(probe[:, 1:].reshape(37, -1)) / 32
    torch.testing.assert_close(f.nll(probe), expect, rtol=1e-9, atol=1e-9)


def test_coupling_log_determinant_matches_the_jacobian():
    torch.manual_seed(0)
    x, _ = _poses(300)
    f = PoseFlow(17, 0, width=24, layers=5, seed=2).double()
    f.fit_whitening(x)
    for p in f.parameters():             # random couplings, not the identity start
        torch.nn.init.normal_(p, std=0.3)
    for pose in x[:3].double():
        flat = pose[1:].reshape(-1)

        def latent(v):
            full = torch.cat([torch.zeros(1, 2, dtype=v.dtype), v.view(16, 2)]).unsqueeze(0)
            return f(full)[0][0]
        jac = torch.autograd.functional.jacobian(latent, flat)
        _, log_det = f(pose.unsqueeze(0))
        torch.testing.assert_close(log_det[0], torch.linalg.slogdet(jac)[1], rtol=1e-8, atol=1e-8)


def test_flow_rejects_a_wrong_shape():
    f = PoseFlow(17, 0)
    with pytest.raises(ValueError, match=r"PoseFlow expects poses \(B, 17, 2\)"):
        f.nll(torch.randn(4, 16, 2))
    with pytest.raises(ValueError, match="layers >= 2"):
        PoseFlow(17, 0, layers=1)


def test_training_learns_real_poses_and_rejects_their_chirality_mirror():
    """Fitted on real 2D poses, the flow scores its training poses better than the Gaussian it
    starts as, and scores held-out real poses better than the same poses mirrored in x with their
    labels kept (the projections of depth-mirrored lifts)."""
    torch.manual_seed(0)
    x, conf = _poses(20000)
    xv, _ = _poses(1000, split="val")
    data = flow_training_poses(x, conf, H36M.flip_index)
    assert data.shape[0] == 2 * len(x)
    f = PoseFlow(17, 0, width=64, layers=4)
    f.fit_whitening(data)
    mirror = lambda p: p * torch.tensor([-1.0, 1.0])  # noqa: E731
    with torch.no_grad():
        train_before = float(f.nll(data[:4000]).mean())
    info = train_pose_flow(f, data, steps=300, batch_size=512, lr=2e-3, noise=0.002, seed=1, progress=False,
                           log=lambda *a: None)
    assert bool(f.trained) and all(not p.requires_grad for p in f.parameters())
    with torch.no_grad():
        train_after = float(f.nll(data[:4000]).mean())
        sep_after = float((f.nll(mirror(xv)) > f.nll(xv)).float().mean())
    assert math.isfinite(info["nll"]) and info["seconds"] > 0
    assert train_after < train_before - 0.1
    assert sep_after > 0.85


def test_training_poses_drop_incomplete_ones_and_too_few_are_refused():
    x, conf = _poses(200)
    conf[:150, 5] = 0
    assert flow_training_poses(x, conf).shape[0] == 50
    f = PoseFlow(17, 0)
    with pytest.raises(ValueError, match="20 complete 2D poses.*more than 32"):
        train_pose_flow(f, x[:20], steps=1, progress=False, log=lambda *a: None)


def test_capped_nll_keeps_order_and_tames_the_tail():
    n = torch.tensor([-5.0, -1.0, 0.0, 3.0, 1000.0], requires_grad=True)
    out = capped_nll(n, 0.0)
    torch.testing.assert_close(out[:3], n[:3].detach())
    torch.testing.assert_close(out[3:], torch.log1p(n[3:].detach()))
    assert torch.all(out[1:] > out[:-1])
    out.sum().backward()
    torch.testing.assert_close(n.grad, torch.tensor([1.0, 1.0, 1.0, 0.25, 1 / 1001]))


# ------------------------------------------------------------------------------------ engine
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("flowposes")
    out = {}
    for split, n in (("train", 1500), ("val", 300)):
        out[split] = generate(n, seed=3, split=split, seq_len=50).save(str(d / f"{split}.npz"))
    return out


def _cfg(files, tmp_path, **kw):
    values = dict(preset="tiny", threads=1, tensorboard=False, data=files["train"], val=files["val"],
                  test=files["val"], out=str(tmp_path / "run"), w_flow=0.5, flow_steps=20, flow_width=16,
                  flow_layers=2)
    values.update(kw)
    return resolve_config(cli_values=values)


def test_engine_trains_the_flow_once_logs_its_loss_and_resumes_without_refitting(files, tmp_path):
    tr = Trainer(_cfg(files, tmp_path / "a", steps=6, log_every=2), log=lambda *a: None)
    assert not bool(tr.flow.trained)
    tr.fit()
    assert bool(tr.flow.trained) and tr.elapsed > 0
    import csv
    rows = [r for r in csv.DictReader(open(os.path.join(tr.out, "metrics.csv"))) if r["loss_flow"]]
    assert rows and all(math.isfinite(float(r["loss_flow"])) for r in rows)
    saved = {k: v.clone() for k, v in tr.flow.state_dict().items()}
    # resuming loads the fitted flow and does not fit it again
    again = Trainer(_cfg(files, tmp_path / "b", steps=8, resume=tr.out), log=lambda *a: None)
    assert bool(again.flow.trained)
    called = []
    again._train_flow = lambda: called.append(1)
    again.fit()
    assert not called
    for k, v in saved.items():
        assert torch.equal(again.flow.state_dict()[k], v), k


def test_flow_loss_leaves_out_poses_with_missing_joints(files, tmp_path):
    tr = Trainer(_cfg(files, tmp_path, steps=1, use_discriminator=False), log=lambda *a: None)
    tr._train_flow()
    batch = next(tr._iterate())
    batch = {k: v.clone() for k, v in batch.items()}
    batch["confidence"][1:, 3] = 0.0          # every pose but the first misses a joint
    tr.cfg.flip_augment = False
    seen = {}
    real = tr.flow.nll

    def spy(y):
        out = real(y)
        seen["nll"] = out.detach()
        return out
    tr.flow.nll = spy
    out = tr.unsupervised_step(batch)
    # only the first pose is complete: the loss is its capped NLL alone
    torch.testing.assert_close(out["loss_flow"], capped_nll(seen["nll"], tr.cfg.flow_nll_cap)[0])


def test_too_few_complete_poses_for_the_flow_fail_before_training(files, tmp_path):
    from fastlift.data import PoseSet
    ps = generate(300, seed=1, split="train", seq_len=50)
    conf = np.ones((300, 17), dtype=np.float32)
    conf[20:, 4] = 0.0                         # only 20 poses have every joint
    holes = PoseSet(keypoints_2d=np.array(ps.keypoints_2d), confidence=conf).save(str(tmp_path / "holes.npz"))
    with pytest.raises(ConfigError, match="w_flow: the training data has 20 complete 2D poses"):
        Trainer(_cfg(files, tmp_path, data=holes), log=lambda *a: None)


def test_flow_config_is_checked():
    with pytest.raises(ConfigError, match="flow_layers must be >= 2"):
        resolve_config(cli_values={"flow_layers": 1})
    with pytest.raises(ConfigError, match="w_flow must be >= 0"):
        resolve_config(cli_values={"w_flow": -1})
