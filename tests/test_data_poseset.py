"""The fastlift pose file: PoseSet save / load, memory mapping, validation, temporal pairs."""
import os
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlift.data import PoseDataError, PoseSet, load_poses


def make_set(n=50, j=17, layout="h36m17", seed=0, with_3d=True, camera_rows=True):
    rng = np.random.default_rng(seed)
    return PoseSet(
        keypoints_2d=rng.uniform(0, 1000, (n, j, 2)).astype(np.float32),
        keypoints_3d=rng.normal(0, 500, (n, j, 3)).astype(np.float32) + [0, 0, 5000] if with_3d else None,
        confidence=rng.uniform(0, 1, (n, j)).astype(np.float32),
        sequence=np.repeat(np.arange(5), n // 5),
        frame=np.tile(np.arange(n // 5), 5),
        subject=np.array([f"S{i % 3}" for i in range(n)]),
        action=np.array(["Walk", "Sit"] * (n // 2)),
        camera=rng.uniform(500, 1500, (n, 4)).astype(np.float32) if camera_rows else np.array([1145, 1144, 512, 515.]),
        layout=layout)


def assert_same(a: PoseSet, b: PoseSet):
    assert a.layout == b.layout and len(a) == len(b)
    for name in ("keypoints_2d", "keypoints_3d", "confidence", "sequence", "frame", "subject", "action", "camera"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert np.array_equal(np.asarray(x), np.asarray(y)), name


def test_save_load_round_trip_memory_mapped(tmp_path):
    p = make_set()
    path = str(tmp_path / "poses.npz")
    p.save(path)
    q = PoseSet.load(path)
    assert_same(p, q)
    assert isinstance(q.keypoints_2d.base, np.memmap) and not q.keypoints_2d.flags.writeable
    assert isinstance(q.keypoints_3d.base, np.memmap)
    assert q.keypoints_2d.dtype == np.float32 and q.sequence.dtype == np.int64
    # the file is a plain npz with the documented keys
    with np.load(path) as z:
        assert sorted(z.files) == sorted(["keypoints_2d", "keypoints_3d", "confidence", "sequence", "frame",
                                          "subject", "action", "camera", "layout", "fastlift_pose_format"])
        assert z["layout"].shape == () and str(z["layout"]) == "h36m17"
    assert_same(p, load_poses(path))


def test_compressed_and_minimal_files(tmp_path):
    p = make_set(with_3d=False, camera_rows=False)
    path = str(tmp_path / "c.npz")
    p.save(path, compress=True)
    assert_same(p, PoseSet.load(path))
    # a minimal file written by hand: only keypoints_2d, layout defaults to h36m17
    kp = np.random.default_rng(0).uniform(size=(7, 17, 2)).astype(np.float32)
    np.savez(tmp_path / "min.npz", keypoints_2d=kp)
    q = PoseSet.load(str(tmp_path / "min.npz"))
    assert q.layout == "h36m17" and (q.confidence == 1).all() and list(q.sequence) == list(range(7))
    assert (q.frame == 0).all() and q.keypoints_3d is None and q.camera is None


def test_save_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "p.npz")
    make_set(seed=1).save(path)
    before = open(path, "rb").read()

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError):
        make_set(seed=2).save(path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["p.npz"]  # no temporary file left behind


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    path = str(tmp_path / "p.npz")
    make_set().save(path)
    data = open(path, "rb").read()
    for cut in (10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(PoseDataError, match=f"cut{cut}.npz.*(truncated|corrupt)"):
            PoseSet.load(str(bad))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"hello world")
    with pytest.raises(PoseDataError, match="junk.npz: not a readable .npz"):
        load_poses(str(junk), format="fastlift")


def test_truncated_member_inside_a_valid_zip(tmp_path):
    # a zip whose keypoints_2d.npy header promises more data than the member holds
    path = tmp_path / "short.npz"
    full = tmp_path / "full.npy"
    np.save(full, np.zeros((100, 17, 2), np.float32))
    raw = full.read_bytes()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("keypoints_2d.npy", raw[: len(raw) // 2])
    with pytest.raises(PoseDataError, match="short.npz: member 'keypoints_2d' is truncated"):
        PoseSet.load(str(path))
    with pytest.raises(PoseDataError, match="short.npz"):
        PoseSet.load(str(path), mmap=False)


def test_wrong_and_unknown_keys(tmp_path):
    kp = np.zeros((3, 17, 2), np.float32)
    np.savez(tmp_path / "a.npz", keypoints2d=kp)
    with pytest.raises(PoseDataError, match="a.npz.*missing required key 'keypoints_2d'.*keypoints2d"):
        PoseSet.load(str(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", keypoints_2d=kp, confidences=np.ones((3, 17)))
    with pytest.raises(PoseDataError, match="b.npz: unknown key.*'confidences'"):
        PoseSet.load(str(tmp_path / "b.npz"))


@pytest.mark.parametrize("field, value, msg", [
    ("keypoints_2d", np.zeros((4, 16, 2)), "16 joints but layout 'h36m17' has 17"),
    ("keypoints_2d", np.zeros((4, 17, 3)), r"keypoints_2d must have shape \(N, J, 2\)"),
    ("keypoints_3d", np.zeros((4, 17, 2)), r"keypoints_3d must have shape \(4, 17, 3\)"),
    ("confidence", np.ones((3, 17)), r"confidence must have shape \(4, 17\)"),
    ("sequence", np.zeros(5, np.int64), r"sequence must have shape \(4,\)"),
    ("frame", np.array([0.5, 1, 2, 3]), "frame must be integers"),
    ("camera", np.ones((4, 3)), r"camera must have shape \(4,\) or \(4, 4\)"),
    ("layout", np.array("h36m99"), "unknown layout 'h36m99'"),
])
def test_shape_mismatch_in_a_file_is_a_clear_error(tmp_path, field, value, msg):
    arrays = {"keypoints_2d": np.zeros((4, 17, 2), np.float32)}
    arrays[field] = value
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(PoseDataError, match=msg) as exc:
        PoseSet.load(str(path))
    assert str(path) in str(exc.value)


def test_nan_keypoints_are_masked_not_kept(tmp_path):
    p = make_set()
    k2 = p.keypoints_2d.copy()
    k2[3, 5, 0] = np.nan
    k3 = p.keypoints_3d.copy()
    k3[7, 2, 2] = np.inf
    path = tmp_path / "nan.npz"
    np.savez(path, keypoints_2d=k2, keypoints_3d=k3, confidence=p.confidence)
    q = PoseSet.load(str(path))     # memory-mapped read-only arrays are copied to be fixed
    assert q.confidence[3, 5] == 0 and q.keypoints_2d[3, 5, 0] == 0 and q.confidence[7, 2] == 0
    assert np.isfinite(q.keypoints_2d).all() and np.isfinite(q.keypoints_3d).all()
    untouched = np.ones(q.confidence.shape, bool)
    untouched[3, 5] = untouched[7, 2] = False
    assert np.array_equal(q.confidence[untouched], p.confidence[untouched])
    with pytest.raises(PoseDataError, match="confidence must be >= 0"):
        PoseSet(keypoints_2d=np.zeros((1, 17, 2)), confidence=-np.ones((1, 17)))


def test_subset_and_concatenate():
    p = make_set()
    s = p.subset(np.array([3, 1, 4]))
    assert len(s) == 3 and np.array_equal(s.keypoints_2d[0], p.keypoints_2d[3]) and s.subject[1] == p.subject[1]
    m = p.subset(p.sequence == 2)
    assert (m.sequence == 2).all() and len(m) == 10
    sl = p.subset(slice(10, 20))
    assert np.shares_memory(sl.keypoints_2d, p.keypoints_2d)
    c = PoseSet.concatenate([p, p], renumber_sequences=True)
    assert len(c) == 100 and len(np.unique(c.sequence)) == 10
    q = make_set(camera_rows=False)
    assert q.subset([0, 1]).camera.shape == (4,)
    with pytest.raises(PoseDataError, match="present in some"):
        PoseSet.concatenate([make_set(with_3d=False), make_set()])


def brute_previous(seq, frame, k):
    out = np.full(len(seq), -1)
    for i in range(len(seq)):
        for j in range(len(seq)):
            if seq[j] == seq[i] and frame[j] == frame[i] - k:
                out[i] = j
                break
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-3, 12)), min_size=1, max_size=40, unique=True),
       st.integers(1, 4), st.booleans())
def test_previous_index_matches_brute_force(pairs, k, sort):
    if sort:
        pairs = sorted(pairs)
    seq = np.array([p[0] for p in pairs])
    fr = np.array([p[1] for p in pairs])
    p = PoseSet(keypoints_2d=np.zeros((len(pairs), 17, 2)), sequence=seq, frame=fr)
    assert np.array_equal(p.previous_index(k), brute_previous(seq, fr, k))


def test_previous_index_respects_gaps():
    p = PoseSet(keypoints_2d=np.zeros((5, 17, 2)), sequence=[0, 0, 0, 1, 1], frame=[0, 1, 3, 1, 2])
    assert list(p.previous_index(1)) == [-1, 0, -1, -1, 3]
    assert list(p.previous_index(2)) == [-1, -1, 1, -1, -1]
    with pytest.raises(PoseDataError, match="positive integer"):
        p.previous_index(0)


def test_to_layout_converts_2d_and_3d():
    p = make_set(layout="mpi_inf_3dhp17")
    h, synth = p.to_layout("h36m17")
    assert synth == [] and h.layout == "h36m17"
    np.testing.assert_array_equal(h.keypoints_3d[:, 0], p.keypoints_3d[:, 14])   # pelvis
    np.testing.assert_array_equal(h.keypoints_2d[:, 10], p.keypoints_2d[:, 0])   # head top
    back, _ = h.to_layout("mpi_inf_3dhp17")
    assert_same(p, back)


def test_summary_mentions_the_essentials():
    text = make_set().summary()
    assert "poses: 50" in text and "layout: h36m17" in text and "temporal pairs (k=1): 45" in text
