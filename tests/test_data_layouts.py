"""Skeleton layouts and conversions between them (fastlift.data.layouts)."""
import numpy as np
import pytest

from fastlift.data import PoseDataError
from fastlift.data.layouts import (COCO17, H36M17, HEAD, LAYOUTS, MPI_INF_3DHP17, OPENPOSE18, OPENPOSE25, ROOT,
                                   Layout, conversion_info, convert_keypoints, get_layout, index_map)

METHOD_MD_H36M = [  # method.md, "Skeleton": (name, parent)
    ("pelvis", -1), ("r_hip", 0), ("r_knee", 1), ("r_ankle", 2), ("l_hip", 0), ("l_knee", 4), ("l_ankle", 5),
    ("spine", 0), ("thorax", 7), ("neck", 8), ("head", 9), ("l_shoulder", 8), ("l_elbow", 11), ("l_wrist", 12),
    ("r_shoulder", 8), ("r_elbow", 14), ("r_wrist", 15),
]


def test_h36m17_matches_method_md():
    assert list(H36M17.joint_names) == [n for n, _ in METHOD_MD_H36M]
    assert list(H36M17.parents) == [p for _, p in METHOD_MD_H36M]
    assert sorted(H36M17.left) == [4, 5, 6, 11, 12, 13]
    assert sorted(H36M17.right) == [1, 2, 3, 14, 15, 16]
    assert (ROOT, HEAD) == (0, 10) and H36M17.root == 0


def test_mpi_inf_3dhp17_order_matches_method_md():
    assert list(MPI_INF_3DHP17.joint_names) == [
        "head_top", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip",
        "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "pelvis", "spine", "head"]
    assert MPI_INF_3DHP17.root == 14


def test_coco_and_openpose_orders():
    assert COCO17.joint_names[:5] == ("nose", "l_eye", "r_eye", "l_ear", "r_ear")
    assert COCO17.joint_names[11:] == ("l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle")
    assert OPENPOSE25.joint_names[8] == "MidHip" and OPENPOSE25.joint_names[1] == "Neck"
    assert OPENPOSE25.joint_names[24] == "RHeel" and OPENPOSE25.num_joints == 25
    assert OPENPOSE18.joint_names[8] == "RHip" and OPENPOSE18.num_joints == 18


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_layout_is_a_tree_with_mirror_pairs(name):
    lay = LAYOUTS[name]
    # parents reach the root without cycles
    for j in range(lay.num_joints):
        seen, a = set(), j
        while a != -1:
            assert a not in seen
            seen.add(a)
            a = lay.parents[a]
    flip = lay.flip_index
    assert np.array_equal(flip[flip], np.arange(lay.num_joints))
    for left, right in zip(lay.left, lay.right):
        assert lay.canonical[left].startswith("l_") and lay.canonical[right] == "r_" + lay.canonical[left][2:]


def test_get_layout_aliases_and_unknown():
    assert get_layout("h36m") is H36M17
    assert get_layout("COCO") is COCO17
    assert get_layout(H36M17) is H36M17
    with pytest.raises(PoseDataError, match="unknown layout 'nope'"):
        get_layout("nope")


def test_mpi_to_h36m_is_a_lossless_permutation_both_ways():
    rng = np.random.default_rng(0)
    kp = rng.normal(size=(5, 17, 3)).astype(np.float32)
    h, c, synth = convert_keypoints(kp, None, "mpi_inf_3dhp17", "h36m17")
    assert synth == [] and (c == 1).all()
    # the standard 3DHP -> H36M index map
    assert list(index_map("mpi_inf_3dhp17", "h36m17")) == [14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4]
    back, _, _ = convert_keypoints(h, c, "h36m17", "mpi_inf_3dhp17")
    np.testing.assert_array_equal(back, kp)


def test_coco_to_h36m_synthesises_and_says_which():
    rng = np.random.default_rng(1)
    kp = rng.uniform(0, 1000, size=(4, 17, 2))
    out, conf, synth = convert_keypoints(kp, np.ones((4, 17)), "coco17", "h36m17")
    assert synth == ["pelvis", "spine", "thorax", "neck", "head"]
    np.testing.assert_allclose(out[:, 0], (kp[:, 11] + kp[:, 12]) / 2, rtol=1e-6)   # pelvis = mid hips
    np.testing.assert_allclose(out[:, 8], (kp[:, 5] + kp[:, 6]) / 2, rtol=1e-6)     # thorax = mid shoulders
    np.testing.assert_allclose(out[:, 1], kp[:, 12], rtol=1e-6)                     # r_hip copied
    np.testing.assert_allclose(out[:, 16], kp[:, 10], rtol=1e-6)                    # r_wrist copied
    assert (conf == 1).all()
    info = conversion_info("coco17", "h36m17")
    assert info["synthesised"] == synth and info["missing"] == []


def test_synthesis_falls_back_per_sample_and_reports_missing_confidence():
    kp = np.zeros((2, 17, 2))
    kp[:, 0] = [100, 50]          # nose
    kp[:, 3] = [90, 40]           # l_ear
    kp[:, 4] = [110, 40]          # r_ear
    kp[:, 5] = [80, 100]          # l_shoulder
    kp[:, 6] = [120, 100]         # r_shoulder
    conf = np.ones((2, 17))
    conf[1, 3] = 0                # sample 1 lacks an ear: the head top comes from another formula
    out, c, _ = convert_keypoints(kp, conf, "coco17", "h36m17")
    head = H36M17.index("head")
    np.testing.assert_allclose(out[0, head], 1.8 * np.array([100, 40]) - 0.8 * np.array([100, 100]), atol=1e-4)
    assert c[0, head] == 1 and c[1, head] == 1
    assert not np.allclose(out[0, head], out[1, head])
    conf2 = conf.copy()
    conf2[:, [11, 12]] = 0        # no hips: no pelvis and no spine, confidence 0
    out2, c2, _ = convert_keypoints(kp, conf2, "coco17", "h36m17")
    assert (c2[:, 0] == 0).all() and (c2[:, 7] == 0).all() and (out2[:, 0] == 0).all()


def test_h36m_to_coco_maps_shared_joints_and_leaves_face_missing():
    rng = np.random.default_rng(2)
    kp = rng.normal(size=(3, 17, 2))
    out, c, synth = convert_keypoints(kp, None, "h36m17", "coco17")
    info = conversion_info("h36m17", "coco17")
    assert sorted(info["missing"]) == sorted(["nose", "l_eye", "r_eye", "l_ear", "r_ear"])
    assert (c[:, :5] == 0).all() and (c[:, 5:] == 1).all()
    # and back: the shared joints are unchanged
    back, cb, _ = convert_keypoints(out, c, "coco17", "h36m17")
    shared = [H36M17.index(n) for n in ("r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "l_shoulder",
                                        "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist")]
    np.testing.assert_allclose(back[:, shared], kp[:, shared], rtol=1e-6)


def test_openpose25_to_h36m_copies_neck_and_midhip():
    rng = np.random.default_rng(3)
    kp = rng.normal(size=(2, 25, 2))
    out, _, synth = convert_keypoints(kp, None, "openpose25", "h36m17")
    np.testing.assert_allclose(out[:, 0], kp[:, 8], rtol=1e-6)   # MidHip -> pelvis
    np.testing.assert_allclose(out[:, 8], kp[:, 1], rtol=1e-6)   # Neck -> thorax
    assert synth == ["spine", "neck", "head"]


def test_no_mapping_is_a_clear_error():
    arms = Layout("arms_only", ("l_shoulder", "l_elbow", "r_shoulder"), (-1, 0, 0), (0,), (2,),
                  ("l_shoulder", "l_elbow", "r_shoulder"))
    with pytest.raises(PoseDataError, match="arms_only.*no mapping to 'h36m17'.*pelvis"):
        convert_keypoints(np.zeros((1, 3, 2)), None, arms, "h36m17")


def test_nan_keypoints_become_missing_and_shape_errors():
    kp = np.ones((1, 17, 2))
    kp[0, 11, 0] = np.nan   # l_hip
    out, c, _ = convert_keypoints(kp, None, "coco17", "h36m17")
    assert c[0, H36M17.index("l_hip")] == 0 and c[0, 0] == 0 and np.isfinite(out).all()
    with pytest.raises(PoseDataError, match=r"\(\.\.\., 17, 2 or 3\)"):
        convert_keypoints(np.zeros((1, 16, 2)), None, "coco17", "h36m17")
    with pytest.raises(PoseDataError, match="confidence shape"):
        convert_keypoints(np.zeros((1, 17, 2)), np.ones((1, 16)), "coco17", "h36m17")
