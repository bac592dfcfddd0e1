"""PoseLoader: normalised batches, temporal pairs, sharding, seeded shuffling, exact resume."""
import numpy as np
import pytest
import torch

from fastlift.data import PoseDataError, PoseLoader, PoseSet, normalize_2d_np, normalize_2d_torch
from fastlift.data.synthetic import generate


@pytest.fixture(scope="module")
def poses():
    return generate(n_sequences=12, seq_len=50, seed=5, drop_prob=0.05)


def all_indices(loader):
    return np.concatenate([b["index"].numpy() for b in loader])


def test_batch_contents(poses):
    L = PoseLoader(poses, batch_size=64, shuffle=True, seed=0)
    b = next(iter(L))
    assert b["keypoints_2d"].shape == (64, 17, 2) and b["keypoints_2d"].dtype == torch.float32
    assert b["confidence"].shape == (64, 17) and b["scale"].shape == (64,) and b["index"].dtype == torch.int64
    idx = b["index"].numpy()
    assert (np.diff(idx) > 0).all()                      # increasing within a batch
    x = b["keypoints_2d"]
    assert torch.all(x[:, 0] == 0)                       # root at the origin
    torch.testing.assert_close(x[:, 10].norm(dim=-1), torch.full((64,), 0.1), rtol=1e-5, atol=1e-6)
    k3 = b["keypoints_3d"]
    assert torch.all(k3[:, 0] == 0)
    np.testing.assert_allclose(k3.numpy(), poses.keypoints_3d[idx] - poses.keypoints_3d[idx][:, :1], rtol=1e-6)
    np.testing.assert_array_equal(b["confidence"].numpy(), poses.confidence[idx])


def test_batches_without_3d(poses):
    b = next(iter(PoseLoader(poses, batch_size=8, with_3d=False)))
    assert "keypoints_3d" not in b and b["keypoints_2d"].shape == (8, 17, 2)


def test_normalisation_is_the_fused_ops_result(poses):
    L = PoseLoader(poses, batch_size=100, shuffle=False)
    b = next(iter(L))
    raw = torch.from_numpy(poses.keypoints_2d[:100].copy())
    try:
        from fastlift.ops import normalize_2d
    except Exception:  # noqa: BLE001 - the fused op is optional
        from fastlift.ops import normalize_2d_reference as normalize_2d
    y, s = normalize_2d(raw, root=0, head=10, c=10.0)
    assert torch.equal(b["keypoints_2d"], y) and torch.equal(b["scale"], s)
    yn, sn = normalize_2d_np(poses.keypoints_2d[:100])
    np.testing.assert_allclose(yn, y.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sn, s.numpy(), rtol=1e-6)
    yt, st = normalize_2d_torch(raw, scale=0.01)
    torch.testing.assert_close(yt, (raw - raw[:, :1]) * 0.01)


def test_fixed_normalisation(poses):
    L = PoseLoader(poses, batch_size=32, shuffle=False, normalization="fixed")
    ok = (poses.confidence[:, 0] > 0) & (poses.confidence[:, 10] > 0)
    d = np.linalg.norm(poses.keypoints_2d[ok, 10] - poses.keypoints_2d[ok, 0], axis=1).mean()
    assert L.fixed_scale == pytest.approx(1 / (10 * d), rel=1e-6)
    b = next(iter(L))
    assert torch.all(b["scale"] == torch.tensor(L.fixed_scale, dtype=torch.float32))
    other = PoseLoader(poses, batch_size=32, normalization="fixed", fixed_scale=0.002)
    assert torch.all(next(iter(other))["scale"] == torch.tensor(0.002, dtype=torch.float32))


def test_temporal_pairs(poses):
    k = 3
    L = PoseLoader(poses, batch_size=50, shuffle=True, seed=1, temporal_offset=k)
    n = 0
    for b in L:
        idx = b["index"].numpy()
        prev_norm, prev_scale = normalize_2d_np(poses.keypoints_2d[idx - k])
        assert (poses.sequence[idx - k] == poses.sequence[idx]).all()
        assert (poses.frame[idx] - poses.frame[idx - k] == k).all()
        np.testing.assert_allclose(b["keypoints_2d_prev"].numpy(), prev_norm, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(b["confidence_prev"].numpy(), poses.confidence[idx - k])
        n += len(idx)
    assert n == 12 * (50 - k) == L.num_eligible


def partner_indices(b, poses):
    """PoseSet indices of a batch's partner frames, matched on their normalised 2D."""
    norm, _ = normalize_2d_np(poses.keypoints_2d)
    flat = norm.reshape(len(poses), -1)
    out = []
    for row in b["keypoints_2d_partner"].numpy().reshape(b["keypoints_2d_partner"].shape[0], -1):
        out.append(int(np.abs(flat - row).max(1).argmin()))
    return np.array(out)


@pytest.mark.parametrize("k", [1, 3])
def test_sequence_partners(poses, k):
    L = PoseLoader(poses, batch_size=40, shuffle=True, seed=2, sequence_partners=k)
    gaps, n = [], 0
    for b in L:
        idx = np.tile(b["index"].numpy(), k)              # partner-major: k rows per pose
        part = partner_indices(b, poses)
        assert (poses.sequence[part] == poses.sequence[idx]).all()
        np.testing.assert_array_equal(b["confidence_partner"].numpy(), poses.confidence[part])
        assert (poses.confidence[part][:, [0, 10]] > 0).all()   # partners can be normalised too
        gaps.append(np.abs(poses.frame[part] - poses.frame[idx]))
        n += len(idx)
    gaps = np.concatenate(gaps)
    assert n == k * L.num_eligible
    # any distance within the sequence: uniform over 50 frames gives a mean gap of about 17
    assert 10 < gaps.mean() < 25 and gaps.max() > 40
    assert "keypoints_2d_partner" not in next(iter(PoseLoader(poses, batch_size=8)))
    with pytest.raises(PoseDataError, match="sequence_partners must be a count"):
        PoseLoader(poses, sequence_partners=-1)


def test_sequence_partners_are_seeded_and_resume_exactly(poses):
    def run(loader, stop=None):
        out = []
        for i, b in enumerate(loader):
            out.append(b["keypoints_2d_partner"].numpy())
            if stop is not None and i == stop:
                break
        return out
    a = run(PoseLoader(poses, batch_size=32, seed=4, sequence_partners=True))
    b = run(PoseLoader(poses, batch_size=32, seed=4, sequence_partners=True))
    c = run(PoseLoader(poses, batch_size=32, seed=5, sequence_partners=True))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    part = PoseLoader(poses, batch_size=32, seed=4, sequence_partners=True)
    got = run(part, stop=4)
    state = part.state_dict()
    resumed = PoseLoader(poses, batch_size=32, seed=4, sequence_partners=True)
    resumed.load_state_dict(state)
    got += run(resumed)
    assert len(got) == len(a) and all(np.array_equal(x, y) for x, y in zip(got, a))
    with pytest.raises(PoseDataError, match="sequence_partners was 1"):
        PoseLoader(poses, batch_size=32, seed=4).load_state_dict(state)


def test_subject_partners_come_from_other_sequences_of_the_same_person(poses):
    _, seq_no = np.unique(poses.sequence, return_inverse=True)
    people = np.array([f"p{k // 3}" for k in seq_no])                 # three sequences per person
    shared = PoseSet(keypoints_2d=poses.keypoints_2d, confidence=poses.confidence, sequence=poses.sequence,
                     frame=poses.frame, subject=people)
    L = PoseLoader(shared, batch_size=64, seed=1, sequence_partners=2, partner_key="subject")
    b = next(iter(L))
    idx = np.tile(b["index"].numpy(), 2)
    part = partner_indices(b, shared)
    assert (people[part] == people[idx]).all()
    assert (shared.sequence[part] != shared.sequence[idx]).mean() > 0.5   # mostly the other sequences
    with pytest.raises(PoseDataError, match="partner_key must be"):
        PoseLoader(poses, sequence_partners=1, partner_key="camera")
    nameless = PoseSet(keypoints_2d=poses.keypoints_2d, confidence=poses.confidence, sequence=poses.sequence,
                       frame=poses.frame)
    with pytest.raises(PoseDataError, match="has no subject names"):
        PoseLoader(nameless, sequence_partners=1, partner_key="subject")


def test_sequence_partner_of_a_lone_frame_is_itself():
    p = generate(60, seed=1)
    seq = p.sequence.copy()
    seq[:5] = 10 ** 6 + np.arange(5)                    # five single-frame sequences
    conf = p.confidence.copy()
    conf[5:, 0] = np.where(np.arange(55) % 2 == 0, 0, conf[5:, 0])   # half the rest lack the root
    q = PoseSet(keypoints_2d=p.keypoints_2d, confidence=conf, sequence=seq, frame=p.frame)
    L = PoseLoader(q, batch_size=8, shuffle=False, sequence_partners=True)
    idx = np.arange(len(q))
    part = L.partners(idx, 0, 0)
    np.testing.assert_array_equal(part[:5], idx[:5])
    assert (conf[part, 0] > 0).all() and (q.sequence[part] == seq).all()


def test_missing_root_or_head_is_skipped():
    p = generate(400, seed=0)
    conf = p.confidence.copy()
    conf[:10, 0] = 0
    conf[10:20, 10] = 0
    q = PoseSet(keypoints_2d=p.keypoints_2d, confidence=conf, sequence=p.sequence, frame=p.frame)
    L = PoseLoader(q, batch_size=64, shuffle=False)
    seen = all_indices(L)
    assert len(seen) == 380 and seen.min() == 20
    assert len(all_indices(PoseLoader(q, batch_size=64, require_root_head=False))) == 400


def test_shuffling_is_seeded_and_epochs_differ(poses):
    a = PoseLoader(poses, batch_size=64, seed=3)
    b = PoseLoader(poses, batch_size=64, seed=3)
    e0a, e0b = all_indices(a), all_indices(b)
    assert np.array_equal(e0a, e0b)
    assert sorted(e0a.tolist()) == sorted(set(e0a.tolist())) and len(e0a) == a.num_eligible
    e1 = all_indices(a)                  # iterating again runs epoch 1: another permutation
    assert a.epoch == 2 and not np.array_equal(e0a, e1) and np.array_equal(np.sort(e0a), np.sort(e1))
    c = PoseLoader(poses, batch_size=64, seed=4)
    assert not np.array_equal(e0a, all_indices(c))
    b.set_epoch(1)
    assert np.array_equal(all_indices(b), e1)


@pytest.mark.parametrize("drop_last", [False, True])
def test_sharding_covers_the_set(poses, drop_last):
    W = 3
    loaders = [PoseLoader(poses, batch_size=40, seed=2, rank=r, world_size=W, drop_last=drop_last) for r in range(W)]
    lens = {len(L) for L in loaders}
    assert len(lens) == 1                      # every rank the same number of batches
    parts = [all_indices(L) for L in loaders]
    union = np.concatenate(parts)
    n = loaders[0].num_eligible
    if drop_last:
        assert len(union) == len(set(union.tolist())) and all(len(p) % 40 == 0 for p in parts)
    else:
        assert set(union.tolist()) == set(np.flatnonzero((poses.confidence[:, 0] > 0) &
                                                         (poses.confidence[:, 10] > 0)).tolist())
        assert len(union) == -(-n // W) * W    # padded by wrapping around
    with pytest.raises(PoseDataError, match="rank < world_size"):
        PoseLoader(poses, rank=3, world_size=3)


def test_resume_is_exact(poses):
    ref = PoseLoader(poses, batch_size=32, seed=9, temporal_offset=1)
    expected = [b["index"].numpy() for _ in range(2) for b in ref]   # epochs 0 and 1
    run = PoseLoader(poses, batch_size=32, seed=9, temporal_offset=1)
    got = []
    for i, b in enumerate(run):
        got.append(b["index"].numpy())
        if i == 6:
            break
    state = run.state_dict()
    assert state["epoch"] == 0 and state["batch"] == 7
    resumed = PoseLoader(poses, batch_size=32, seed=9, temporal_offset=1)
    resumed.load_state_dict(state)
    for _ in range(2):
        got += [b["index"].numpy() for b in resumed]
    got = got[: len(expected)]
    assert len(got) == len(expected) and all(np.array_equal(x, y) for x, y in zip(got, expected))
    wrong = PoseLoader(poses, batch_size=16, seed=9, temporal_offset=1)
    with pytest.raises(PoseDataError, match="batch_size was 32 .* is 16"):
        wrong.load_state_dict(state)


def test_len_and_drop_last(poses):
    L = PoseLoader(poses, batch_size=100, drop_last=True)
    n = L.num_eligible
    assert len(L) == n // 100 and all(b["index"].shape[0] == 100 for b in L)
    L2 = PoseLoader(poses, batch_size=100)
    sizes = [b["index"].shape[0] for b in L2]
    assert len(L2) == len(sizes) == -(-n // 100) and sum(sizes) == n


@pytest.mark.parametrize("in_memory", [None, False, True])
def test_memory_mapped_pose_file(tmp_path, poses, in_memory):
    path = str(tmp_path / "p.npz")
    poses.save(path)
    q = PoseSet.load(path)
    L = PoseLoader(q, batch_size=128, seed=1, in_memory=in_memory)
    assert L.copied_to_memory == (in_memory is not False)
    assert isinstance(q.keypoints_2d.base, np.memmap)            # the caller's set is untouched
    a = [b["keypoints_2d"] for b in L]
    b = [b["keypoints_2d"] for b in PoseLoader(poses, batch_size=128, seed=1)]
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not PoseLoader(q, batch_size=128, in_memory_limit_bytes=1000).copied_to_memory
    r = PoseSet.load(path, mmap=False, with_3d=False)
    assert r.keypoints_3d is None and not isinstance(r.keypoints_2d.base, np.memmap)
    np.testing.assert_array_equal(r.keypoints_2d, poses.keypoints_2d)


def test_layout_and_argument_errors(poses):
    coco, _ = poses.to_layout("coco17")
    with pytest.raises(PoseDataError, match="layout 'coco17'; convert it"):
        PoseLoader(coco)
    with pytest.raises(PoseDataError, match="normalization must be"):
        PoseLoader(poses, normalization="global")
    with pytest.raises(PoseDataError, match="temporal_offset must be a positive integer"):
        PoseLoader(poses, temporal_offset=0)
    single = PoseSet(keypoints_2d=np.ones((5, 17, 2)))          # every pose its own sequence
    with pytest.raises(PoseDataError, match="no poses with a frame 1 earlier"):
        PoseLoader(single, temporal_offset=1)
