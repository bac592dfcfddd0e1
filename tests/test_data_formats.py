"""Readers and writers of the pose formats users already have, on small files in the real formats."""
import json
import os

import numpy as np
import pytest

from fastlift.data import PoseDataError, PoseSet, detect_format, load_poses, save_poses
from fastlift.data.__main__ import main as cli
from fastlift.data.formats import (read_coco, read_mpi_inf_3dhp, read_openpose, read_videopose3d, write_coco,
                                   write_mpi_inf_3dhp, write_openpose)
from fastlift.data.h36m import H36M32_KEEP, H36M_EXTRINSICS, H36M_INTRINSICS

h5py = pytest.importorskip("h5py")


def same(a: PoseSet, b: PoseSet, fields=("keypoints_2d", "keypoints_3d", "confidence", "sequence", "frame",
                                         "subject", "action", "camera"), atol=0.0):
    assert a.layout == b.layout and len(a) == len(b)
    for f in fields:
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), f
        if x is None:
            continue
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype.kind in "fc":
            np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=f)
        else:
            assert np.array_equal(x, y), f


def via_pose_file(p: PoseSet, tmp_path, name="p.npz") -> PoseSet:
    path = str(tmp_path / name)
    p.save(path)
    return PoseSet.load(path)


# ------------------------------------------------------------------ VideoPose3D
def qrot(q, v):  # VideoPose3D common/quaternion.py, in numpy
    qvec = q[..., 1:]
    uv = np.cross(qvec, v)
    uuv = np.cross(qvec, uv)
    return v + 2 * (q[..., :1] * uv + uuv)


def vp3d_world_to_camera(X, q, t):  # VideoPose3D common/camera.py: qrot(qinverse(R), X - t)
    qi = np.array(q) * np.array([1, -1, -1, -1])
    return qrot(np.broadcast_to(qi, X.shape[:-1] + (4,)), X - t)


@pytest.fixture
def vp3d_files(tmp_path):
    rng = np.random.default_rng(0)
    pos3d, pos2d = {}, {}
    for subject in ("S9", "S1"):
        pos3d[subject], pos2d[subject] = {}, {}
        for action, T in (("Walking 1", 6), ("Directions", 4)):
            world = rng.normal(0, 0.3, (T, 32, 3)) + [0, 0, 0.9]                     # metres, z up
            pos3d[subject][action] = world.astype(np.float32)
            views = []
            for cam in range(4):
                views.append(rng.uniform(0, 1000, (T + 2, 17, 2)).astype(np.float32))  # 2D longer than 3D
            pos2d[subject][action] = views
    meta = {"layout_name": "h36m", "num_joints": 17,
            "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]}
    p2, p3 = tmp_path / "data_2d_h36m_gt.npz", tmp_path / "data_3d_h36m.npz"
    np.savez_compressed(p2, positions_2d=pos2d, metadata=meta)
    np.savez_compressed(p3, positions_3d=pos3d)
    return str(p2), str(p3), pos2d, pos3d


def test_videopose3d_2d_reader(vp3d_files):
    p2, _, pos2d, _ = vp3d_files
    assert detect_format(p2) == "videopose3d"
    p = load_poses(p2)
    assert p.layout == "h36m17" and p.keypoints_3d is None and len(p) == 2 * 4 * (8 + 6)
    # subjects sorted numerically, actions sorted, cameras in order: one sequence each
    first = p.subset(p.sequence == 0)
    assert first.subject[0] == "S1" and first.action[0] == "Directions"
    np.testing.assert_array_equal(first.keypoints_2d, pos2d["S1"]["Directions"][0])
    cam3 = p.subset(p.sequence == 3)
    np.testing.assert_allclose(cam3.camera[0], list(H36M_INTRINSICS[3]["focal_length"]) +
                               list(H36M_INTRINSICS[3]["center"]), rtol=1e-6)
    assert list(first.frame) == list(range(6))


def test_videopose3d_with_3d_matches_videopose3d_transform(vp3d_files):
    p2, p3, pos2d, pos3d = vp3d_files
    p = read_videopose3d(p2, p3, subjects=["S9"])
    assert set(p.subject) == {"S9"} and p.keypoints_3d is not None
    seq = p.subset((p.action == "Walking 1") & (p.sequence == p.sequence[(p.action == "Walking 1")][0] + 2))
    q, t = H36M_EXTRINSICS["S9"][2]
    expect = vp3d_world_to_camera(pos3d["S9"]["Walking 1"][:, list(H36M32_KEEP)].astype(np.float64),
                                  np.array(q), np.array(t) / 1000.0) * 1000.0
    np.testing.assert_allclose(seq.keypoints_3d, expect, atol=0.05)        # mm, float32
    assert len(seq) == 6                                                     # 2D cut to the 3D length
    np.testing.assert_array_equal(seq.keypoints_2d, pos2d["S9"]["Walking 1"][2][:6])


def test_videopose3d_3d_only_projects_through_the_cameras(vp3d_files):
    _, p3, _, _ = vp3d_files
    p = load_poses(p3)
    assert len(p) == 2 * 4 * (6 + 4)
    k = p.camera
    X = p.keypoints_3d
    u = k[:, None, 0] * X[..., 0] / X[..., 2] + k[:, None, 2]
    np.testing.assert_allclose(p.keypoints_2d[..., 0], u, rtol=1e-5)
    assert np.median(X[:, 0, 2]) > 3000                                     # people ~5 m in front


def test_videopose3d_round_trip(vp3d_files, tmp_path):
    p2, p3, _, _ = vp3d_files
    p = via_pose_file(read_videopose3d(p2, p3), tmp_path)
    o2, o3 = str(tmp_path / "data_2d_out.npz"), str(tmp_path / "data_3d_out.npz")
    save_poses(p, o2)
    save_poses(p, o3)
    back = read_videopose3d(o2, o3)
    same(p, back, atol=0.05)
    with np.load(o3, allow_pickle=True) as z:
        assert z["positions_3d"].item()["S1"]["Directions"].shape == (4, 32, 3)


def test_videopose3d_coco_layout_and_errors(tmp_path, vp3d_files):
    _, p3, _, _ = vp3d_files
    pos = {"S1": {"Directions": [np.random.default_rng(0).uniform(0, 1000, (4, 17, 2))] * 4}}
    meta = {"layout_name": "coco", "num_joints": 17,
            "keypoints_symmetry": [[1, 3, 5, 7, 9, 11, 13, 15], [2, 4, 6, 8, 10, 12, 14, 16]]}
    path = tmp_path / "data_2d_h36m_detectron_pt_coco.npz"
    np.savez_compressed(path, positions_2d=pos, metadata=meta)
    assert load_poses(str(path)).layout == "coco17"
    with pytest.warns(RuntimeWarning, match="synthesised joints: pelvis"):
        p = read_videopose3d(str(path), p3)
    assert p.layout == "h36m17" and len(p) == 16
    bad = tmp_path / "data_2d_bad.npz"
    np.savez_compressed(bad, positions_2d={"S1": {"Walk": [np.zeros((4, 17))]}}, metadata=meta)
    with pytest.raises(PoseDataError, match=r"data_2d_bad.npz: positions_2d\['S1'\]\['Walk'\]\[0\] has shape \(4, 17\)"):
        load_poses(str(bad))
    other = tmp_path / "data_2d_other.npz"
    np.savez_compressed(other, positions_2d={"S5": {"Walk": [np.zeros((4, 17, 2))] * 4}})
    with pytest.raises(PoseDataError, match="data_3d_h36m.npz: has no 3D poses for 'S5'"):
        read_videopose3d(str(other), p3)
    wrong = tmp_path / "x.npz"
    np.savez(wrong, foo=np.zeros(3))
    with pytest.raises(PoseDataError, match="x.npz: an .npz that is neither"):
        load_poses(str(wrong))


# ------------------------------------------------------------------ MPI-INF-3DHP
def write_3dhp_mat(path, N=12, seed=0, valid=None, activity=None):
    """An annot_data.mat the way the test set stores it: MATLAB v7.3 (HDF5), column-major shapes."""
    rng = np.random.default_rng(seed)
    k3 = rng.normal(0, 400, (N, 1, 17, 3)) + [0, 0, 4000]
    f, c = (1500.172288, 1500.172288), (1017.387, 1043.032)
    k2 = np.stack([f[0] * k3[..., 0] / k3[..., 2] + c[0], f[1] * k3[..., 1] / k3[..., 2] + c[1]], -1)
    valid = np.ones(N) if valid is None else np.asarray(valid)
    activity = np.ones(N) if activity is None else np.asarray(activity)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as h:
        h["annot2"] = k2
        h["annot3"] = k3
        h["univ_annot3"] = k3 * 0.9
        h["valid_frame"] = valid.reshape(N, 1).astype(float)
        h["activity_annotation"] = activity.reshape(N, 1).astype(float)
        h["bb_crop"] = np.zeros((N, 4))
    return k2[:, 0], k3[:, 0]


def test_mpi_inf_3dhp_reader(tmp_path):
    path = str(tmp_path / "TS3" / "annot_data.mat")
    valid = np.ones(12)
    valid[[4, 5]] = 0
    k2, k3 = write_3dhp_mat(path, valid=valid, activity=[1] * 6 + [3] * 6)
    assert detect_format(path) == "mpi_inf_3dhp"
    p = load_poses(path)
    assert p.layout == "mpi_inf_3dhp17" and len(p) == 10
    assert list(p.frame) == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]
    np.testing.assert_allclose(p.keypoints_3d, k3[valid > 0], rtol=1e-6)
    np.testing.assert_allclose(p.keypoints_2d, k2[valid > 0], rtol=1e-6)
    assert p.subject[0] == "TS3" and p.sequence[0] == 3 and p.action[0] == "Standing/Walking"
    assert p.action[-1] == "Sitting"
    np.testing.assert_allclose(p.camera, [1500.172288, 1500.172288, 1017.387, 1043.032], rtol=1e-6)
    assert list(p.previous_index(1)[:6]) == [-1, 0, 1, 2, -1, 4]           # no pair across the gap
    allf = read_mpi_inf_3dhp(path, valid_only=False, universal=True)
    assert len(allf) == 12 and (allf.confidence[4] == 0).all()
    np.testing.assert_allclose(allf.keypoints_3d, k3 * 0.9, rtol=1e-6)


def test_mpi_inf_3dhp_unknown_folder_fits_the_camera(tmp_path):
    path = str(tmp_path / "mine" / "annot_data.mat")
    write_3dhp_mat(path)
    p = read_mpi_inf_3dhp(path)
    np.testing.assert_allclose(p.camera, [1500.172288, 1500.172288, 1017.387, 1043.032], rtol=1e-4)


def test_mpi_inf_3dhp_round_trip(tmp_path):
    path = str(tmp_path / "TS1" / "annot_data.mat")
    valid = np.ones(12)
    valid[7] = 0
    write_3dhp_mat(path, valid=valid, activity=np.arange(12) % 7 + 1)
    p = via_pose_file(load_poses(path), tmp_path)
    out = str(tmp_path / "TS1" / "out.mat")
    save_poses(p, out)
    with open(out, "rb") as fh:
        assert fh.read(10) == b"MATLAB 7.3"
    same(p, read_mpi_inf_3dhp(out), atol=1e-3)
    # h36m17 poses are converted on write and come back identical after converting again
    h, _ = p.to_layout("h36m17")
    write_mpi_inf_3dhp(out, h)
    back, _ = read_mpi_inf_3dhp(out).to_layout("h36m17")
    same(h, back, fields=("keypoints_2d", "keypoints_3d", "frame"), atol=1e-3)


def test_mpi_inf_3dhp_errors(tmp_path):
    bad = tmp_path / "TS1" / "annot_data.mat"
    os.makedirs(bad.parent)
    with h5py.File(bad, "w") as h:
        h["annot2"] = np.zeros((5, 1, 16, 2))
        h["annot3"] = np.zeros((5, 1, 16, 3))
    with pytest.raises(PoseDataError, match=r"annot_data.mat: 'annot2' has shape \(5, 1, 16, 2\)"):
        load_poses(str(bad))
    with h5py.File(bad, "w") as h:
        h["annot3"] = np.zeros((5, 1, 17, 3))
    with pytest.raises(PoseDataError, match="no 'annot2'"):
        load_poses(str(bad))
    v5 = tmp_path / "annot.mat"
    v5.write_bytes(b"MATLAB 5.0 MAT-file, Platform: GLNXA64" + b"\0" * 200)
    with pytest.raises(PoseDataError, match="MATLAB v5"):
        load_poses(str(v5))
    good = str(tmp_path / "TS2" / "annot_data.mat")
    write_3dhp_mat(good)
    data = open(good, "rb").read()
    trunc = tmp_path / "trunc.mat"
    trunc.write_bytes(data[: len(data) // 3])
    with pytest.raises(PoseDataError, match="trunc.mat"):
        load_poses(str(trunc))


# ------------------------------------------------------------------ COCO
def coco_doc(n_images=3, seed=0):
    rng = np.random.default_rng(seed)
    images, anns = [], []
    aid = 100
    for im in range(n_images):
        images.append({"id": 10 + im, "file_name": f"{10 + im:012d}.jpg", "width": 640, "height": 480})
        for person in range(2):
            v = rng.choice([0, 1, 2], size=17, p=[0.2, 0.2, 0.6])
            xy = np.round(rng.uniform(0, 600, (17, 2)), 2)
            xy[v == 0] = 0
            kp = np.concatenate([xy, v[:, None]], 1).reshape(-1).tolist()
            anns.append({"id": aid, "image_id": 10 + im, "category_id": 1, "keypoints": kp,
                         "num_keypoints": int((v > 0).sum()), "bbox": [0, 0, 1, 1], "area": 1.0, "iscrowd": 0})
            aid += 1
    anns.append({"id": 999, "image_id": 10, "category_id": 1, "keypoints": [0] * 51, "num_keypoints": 0,
                 "iscrowd": 0, "bbox": [0, 0, 0, 0], "area": 0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}]}


def test_coco_reader_and_round_trip(tmp_path):
    doc = coco_doc()
    path = tmp_path / "person_keypoints.json"
    path.write_text(json.dumps(doc))
    p = load_poses(str(path))
    assert p.layout == "coco17" and len(p) == 6                 # the empty annotation is skipped
    a0 = doc["annotations"][0]
    kp = np.array(a0["keypoints"], dtype=float).reshape(17, 3)
    np.testing.assert_allclose(p.keypoints_2d[0], kp[:, :2], rtol=1e-6)
    np.testing.assert_array_equal(p.confidence[0], np.array([0, 0.5, 1.0])[kp[:, 2].astype(int)])
    assert p.sequence[0] == 10 and p.subject[0] == "100" and p.action[0] == "000000000010.jpg"
    q = via_pose_file(p, tmp_path)
    out = tmp_path / "out.json"
    save_poses(q, str(out))
    back = read_coco(str(out))
    same(q, back)
    # results style keeps detector confidences
    write_coco(str(tmp_path / "res.json"), q, style="results")
    res = read_coco(str(tmp_path / "res.json"))
    same(q, res, fields=("keypoints_2d", "confidence", "sequence"))


def test_coco_errors(tmp_path):
    doc = coco_doc()
    text = json.dumps(doc)
    (tmp_path / "trunc.json").write_text(text[: len(text) // 2])
    with pytest.raises(PoseDataError, match="trunc.json: invalid or truncated JSON"):
        load_poses(str(tmp_path / "trunc.json"))
    doc["annotations"][2]["keypoints"] = doc["annotations"][2]["keypoints"][:-3]
    (tmp_path / "short.json").write_text(json.dumps(doc))
    with pytest.raises(PoseDataError, match=r"short.json: annotation 2 \(id 102\) keypoints has 48 numbers"):
        load_poses(str(tmp_path / "short.json"))
    (tmp_path / "nokey.json").write_text(json.dumps({"images": []}))
    with pytest.raises(PoseDataError, match="nokey.json: not a COCO keypoint file: no 'annotations'"):
        load_poses(str(tmp_path / "nokey.json"))
    doc = coco_doc()
    doc["annotations"][0]["keypoints"][0] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(doc))  # json writes NaN; the joint becomes missing
    p = load_poses(str(tmp_path / "nan.json"))
    assert p.confidence[0, 0] == 0 and np.isfinite(p.keypoints_2d).all()


# ------------------------------------------------------------------ OpenPose
def write_openpose_frames(folder, T=8, n_joints=25, seed=0, skip=(3,)):
    """OpenPose --write_json output: one file per frame. Frame 0 shows only the tracked person; later
    frames add a second, more confident person far away, listed first. Frames in ``skip`` are empty."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    base = rng.uniform(100, 300, (n_joints, 2))
    other = np.concatenate([rng.uniform(600, 800, (n_joints, 2)), np.full((n_joints, 1), 0.99)], 1)
    track = []
    for t in range(T):
        c = rng.uniform(0.2, 0.9, n_joints)
        c[rng.uniform(size=n_joints) < 0.1] = 0
        me = np.concatenate([np.where(c[:, None] > 0, base + 2.0 * t, 0), c[:, None]], 1)
        if t in skip:
            people = []
        else:
            people = [{"person_id": [-1], "pose_keypoints_2d": me.reshape(-1).tolist()}]
            if t > 0:
                people.insert(0, {"person_id": [-1], "pose_keypoints_2d": other.reshape(-1).tolist()})
            track.append((t, me))
        with open(os.path.join(folder, f"clip_{t:012d}_keypoints.json"), "w") as fh:
            json.dump({"version": 1.3, "people": people}, fh)
    return track


def test_openpose_reader_tracks_one_person(tmp_path):
    folder = tmp_path / "clip"
    track = write_openpose_frames(str(folder))
    assert detect_format(str(folder)) == "openpose"
    p = load_poses(str(folder))
    assert p.layout == "openpose25" and list(p.frame) == [t for t, _ in track]
    for i, (t, me) in enumerate(track):
        np.testing.assert_allclose(p.keypoints_2d[i], me[:, :2], rtol=1e-6)
        np.testing.assert_allclose(p.confidence[i], me[:, 2], rtol=1e-6)
    assert p.action[0] == "clip" and list(p.previous_index(1)) == [-1, 0, 1, -1, 3, 4, 5]


def test_openpose_round_trip_and_subfolders(tmp_path):
    for name in ("a", "b"):
        write_openpose_frames(str(tmp_path / "vids" / name), n_joints=18, seed=ord(name), skip=())
    p = load_poses(str(tmp_path / "vids"))
    assert p.layout == "openpose18" and list(np.unique(p.sequence)) == [0, 1] and set(p.action) == {"a", "b"}
    q = via_pose_file(p, tmp_path)
    out = str(tmp_path / "out")
    write_openpose(out, q)
    assert sorted(os.listdir(out)) == ["a", "b"]
    same(q, read_openpose(out), fields=("keypoints_2d", "confidence", "sequence", "frame", "action"))


def test_openpose_errors(tmp_path):
    folder = tmp_path / "bad"
    write_openpose_frames(str(folder), T=3, skip=())
    with open(folder / "clip_000000000001_keypoints.json", "w") as fh:
        json.dump({"version": 1.3, "people": [{"pose_keypoints_2d": [1.0] * 60}]}, fh)
    with pytest.raises(PoseDataError, match=r"clip_000000000001_keypoints.json: person 0 pose_keypoints_2d has 60 "
                                            r"numbers, expected 75 or 54"):
        load_poses(str(folder))
    with open(folder / "clip_000000000001_keypoints.json", "w") as fh:
        fh.write('{"version": 1.3, "peop')
    with pytest.raises(PoseDataError, match="clip_000000000001_keypoints.json: invalid or truncated JSON"):
        load_poses(str(folder))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PoseDataError, match="empty: no OpenPose JSON files"):
        load_poses(str(empty))


# ------------------------------------------------------------------ command line
def test_cli_convert_and_info(tmp_path, vp3d_files, capsys):
    p2, p3, _, _ = vp3d_files
    out = str(tmp_path / "h36m.npz")
    assert cli(["convert", p2, out, "--with-3d", p3]) == 0
    p = PoseSet.load(out)
    assert p.has_3d and len(p) == 2 * 4 * 10
    assert cli(["info", out]) == 0
    text = capsys.readouterr().out
    assert "format: fastlift" in text and "poses: 80" in text
    coco = tmp_path / "c.json"
    coco.write_text(json.dumps(coco_doc()))
    assert cli(["convert", str(coco), str(tmp_path / "c.npz"), "--layout", "h36m17"]) == 0
    assert "synthesised h36m17 joints: pelvis, spine, thorax, neck, head" in capsys.readouterr().out
    assert PoseSet.load(str(tmp_path / "c.npz")).layout == "h36m17"
    assert cli(["info", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz: no such file" in capsys.readouterr().err


def test_cli_synth_wild_writes_the_adapter_source(tmp_path, capsys):
    out = str(tmp_path / "wild.npz")
    assert cli(["synth", out, "--wild", "--poses", "600", "--seed", "2"]) == 0
    p = PoseSet.load(out)
    assert len(p) == 600 and p.layout == "coco17" and not p.has_3d
    assert (np.asarray(p.confidence) == 0).any()  # detector-like missing joints
    assert "synthetic wild coco17 poses" in capsys.readouterr().out
    # the same call again gives the same poses (deterministic for a seed)
    out2 = str(tmp_path / "wild2.npz")
    assert cli(["synth", out2, "--wild", "coco17", "--poses", "600", "--seed", "2"]) == 0
    np.testing.assert_array_equal(np.asarray(PoseSet.load(out2).keypoints_2d), np.asarray(p.keypoints_2d))
