"""fastlift.models: shapes, initialisation, options, the domain adapter."""
import pytest
import torch

from fastlift.data.layouts import H36M17
from fastlift.models import DomainAdapter, KinematicFeatures, Lifter, PoseDiscriminator, ResidualMLP, TemporalDiscriminator


def poses(n=8, j=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, j, 2, generator=g) * 0.05
    x[:, 0] = 0
    return x


@pytest.mark.parametrize("bn,dropout", [(True, 0.0), (False, 0.5), (True, 0.5)])
def test_residual_mlp_layers(bn, dropout):
    m = ResidualMLP(10, 3, width=16, blocks=2, batch_norm=bn, dropout=dropout)
    kinds = [type(x).__name__ for x in m.modules()]
    assert ("BatchNorm1d" in kinds) == bn
    assert ("FastDropout" in kinds) == (dropout > 0)
    assert sum(k == "Linear" for k in kinds) == 1 + 2 * 2 + 1
    assert m(torch.randn(4, 10)).shape == (4, 3)


def test_residual_mlp_rejects_bad_sizes():
    with pytest.raises(ValueError):
        ResidualMLP(4, 1, width=0)
    with pytest.raises(ValueError):
        ResidualMLP(4, 1, dropout=1.0)


def test_lifter_starts_near_flat_and_reprojects_exactly():
    torch.manual_seed(0)
    g = Lifter(17, width=64, blocks=2, out_init_scale=0.01)
    x = poses(32)
    d = g(x)
    assert d.shape == (32, 17)
    assert d.abs().max() < 0.5, "the depth head must start near zero (method.md pitfalls)"
    Y = g.lift(x)
    assert Y.shape == (32, 17, 3)
    torch.testing.assert_close(Y[..., :2] / Y[..., 2:], x, rtol=1e-5, atol=1e-6)
    # the literal initialisation predicts much larger offsets
    torch.manual_seed(0)
    g1 = Lifter(17, width=64, blocks=2, out_init_scale=1.0)
    assert g1(x).abs().max() > 10 * d.abs().max()


def test_lifter_stats_buffers_are_saved_and_used():
    g = Lifter(17, width=16, blocks=1)
    g.eval()
    x = poses(4)
    base = g(x)
    g.set_input_stats(torch.full((34,), 0.01), torch.full((34,), 0.5))
    assert not torch.allclose(g(x), base)
    g.set_output_stats(torch.full((17,), 2.0), torch.full((17,), 3.0))
    torch.testing.assert_close(g(x), g.standardized_output(x) * 3 + 2)
    sd = g.state_dict()
    for k in ("in_mean", "in_std", "out_mean", "out_std"):
        assert k in sd
    g2 = Lifter(17, width=16, blocks=1)
    g2.load_state_dict(sd)
    g2.eval()
    torch.testing.assert_close(g2(x), g(x))


def test_lifter_depth_floors():
    x = poses(2)
    d = torch.full((2, 17), -12.0)
    from fastlift.training.geometry import lift_to_3d
    z_soft = lift_to_3d(x, d, c=10, floor="soft", min_depth=1.0)[..., 2]
    z_hard = lift_to_3d(x, d, c=10, floor="hard", min_depth=1.0)[..., 2]
    assert (z_soft > 1.0).all() and (z_hard == 1.0).all()
    with pytest.raises(ValueError):
        Lifter(17, depth_floor="bogus")


def test_discriminators_shapes_and_options():
    x = poses(6)
    d = PoseDiscriminator(17, width=32, blocks=3)
    assert d(x).shape == (6,)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in d.modules()), "ref: no BN in D"
    axes = [(1, 4), (14, 11)]
    dk = PoseDiscriminator(17, width=32, blocks=1, kinematic=True, parents=H36M17.parents, axes=axes,
                           spectral_norm=True)
    assert dk(x).shape == (6,)
    t = TemporalDiscriminator(17, width=32, blocks=1)
    assert t(x, poses(6, seed=1)).shape == (6,)
    t2 = TemporalDiscriminator(17, width=32, blocks=1, with_pose=False)
    assert t2(x, x).shape == (6,)


def test_kinematic_features_see_chirality():
    """A pose and its mirror image (x -> -x, labels kept) differ in the cross-product features."""
    kin = KinematicFeatures(H36M17.parents, [(1, 4), (14, 11), (0, 8)])
    x = poses(5)
    m = x.clone()
    m[..., 0] = -m[..., 0]
    f, fm = kin(x), kin(m)
    nb, na, npairs = len(H36M17.bones), 3, kin.num_pairs
    assert npairs == nb - 3  # every bone but the three leaving the pelvis has a parent bone
    cross = slice(2 * nb, 2 * nb + nb * na)
    torch.testing.assert_close(fm[:, cross], -f[:, cross])
    joint_cross = slice(2 * nb + 2 * nb * na, 2 * nb + 2 * nb * na + npairs)
    torch.testing.assert_close(fm[:, joint_cross], -f[:, joint_cross])
    assert f.shape == (5, kin.dim)


def test_domain_adapter_starts_at_the_layout_map():
    M = torch.zeros(17, 17)
    M[torch.arange(17), torch.arange(17)] = 1
    a = DomainAdapter(17, 17, M, width=32, blocks=1)
    x = poses(4)
    y = a(x)
    assert y.shape == (4, 17, 2)
    assert (y - x).abs().max() < 0.05
    assert a.shared.shape == (17, 2)
    assert a.shared_joint_penalty(x, x) == 0
    with pytest.raises(ValueError):
        DomainAdapter(17, 13)
    b = DomainAdapter(13, 17, torch.rand(17, 13), width=16, blocks=1)
    assert b(poses(3, j=13)).shape == (3, 17, 2)


def test_fast_dropout_matches_dropout_statistics():
    from fastlift.models import FastDropout
    torch.manual_seed(0)
    d = FastDropout(0.3)
    x = torch.ones(200, 500, requires_grad=True)
    y = d(x)
    kept = (y != 0).float().mean()
    assert abs(kept - 0.7) < 0.01
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() / 0.7)
    d.eval()
    assert torch.equal(d(x), x)
