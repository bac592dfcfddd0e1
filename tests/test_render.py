"""Pictures: left/right colours, up is up (2D and 3D), the 2D and 3D panels agree, animations,
training curves and validation samples are written."""
import os

import numpy as np
import pytest

from fastlift.data.layouts import H36M17
from fastlift.evaluation import render as R


def facing_camera_pose():
    """A standing h36m17 pose in the camera frame (mm; x right, y down, z forward) facing the
    camera: the person's left is on the camera's right (+x), the head is up (-y), the left arm
    is raised sideways."""
    P = np.array([
        [0, 0, 0],                                        # pelvis
        [-130, 0, 0], [-130, 440, 0], [-130, 880, 0],       # right leg
        [130, 0, 0], [130, 440, 0], [130, 880, 0],          # left leg
        [0, -230, 0], [0, -490, 0], [0, -610, 0], [0, -730, 0],  # spine thorax neck head
        [150, -490, 0], [420, -560, 0], [650, -650, 0],    # left arm, raised sideways
        [-150, -490, 0], [-160, -210, 0], [-170, 30, 0],   # right arm, hanging
    ], dtype=np.float64)
    X = P + np.array([0.0, 0.0, 5000.0])
    uv = 1000.0 * X[:, :2] / X[:, 2:] + 500.0
    return P, uv


def colour_mask(img, hex_colour, tol=40):
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return (np.abs(img[..., :3].astype(int) - rgb).sum(-1) < tol)


def test_bone_colours_follow_the_persons_side():
    cols = {(j, p): c for j, p, c in R.bone_colors("h36m17")}
    assert cols[(5, 4)] == R.LEFT_COLOR and cols[(12, 11)] == R.LEFT_COLOR      # left knee, left elbow
    assert cols[(2, 1)] == R.RIGHT_COLOR and cols[(15, 14)] == R.RIGHT_COLOR    # right knee, right elbow
    assert cols[(10, 9)] == R.CENTER_COLOR
    coco = {(j, p): c for j, p, c in R.bone_colors("coco17")}
    assert coco[(13, 11)] == R.LEFT_COLOR and coco[(14, 12)] == R.RIGHT_COLOR


def test_render_lift_png_left_right_and_up(tmp_path):
    """In the picture: left (blue) on the image right for a pose facing the camera, in both panels
    (the 3D view azim=0, elev=0 is the camera's); the raised left wrist is above the hanging right one."""
    from PIL import Image
    P, uv = facing_camera_pose()
    out = tmp_path / "front.png"
    R.render_lift(uv, P, str(out), azim=0, elev=0, unit="mm")
    img = np.asarray(Image.open(out).convert("RGB"))
    H, W = img.shape[:2]
    body = img[: int(0.9 * H)]  # above the legend
    blue, red = colour_mask(body, R.LEFT_COLOR), colour_mask(body, R.RIGHT_COLOR)
    for x0, x1 in ((0, W // 2), (W // 2, W)):          # 2D panel, 3D panel
        b, r = blue[:, x0:x1], red[:, x0:x1]
        assert b.sum() > 200 and r.sum() > 200
        bx, rx = np.nonzero(b)[1].mean(), np.nonzero(r)[1].mean()
        assert bx > rx, "the person's left must be on the image right when facing the camera"
        # the highest blue pixel (raised left wrist) is above the highest red pixel (right shoulder)
        assert np.nonzero(b)[0].min() < np.nonzero(r)[0].min()


def test_3d_axes_put_up_up_and_the_camera_view_matches_2d():
    plt = R._plt()
    from mpl_toolkits.mplot3d import proj3d
    P, uv = facing_camera_pose()
    for azim, elev in ((0, 0), (30, 15), (90, 10)):
        fig = plt.figure()
        ax = fig.add_subplot(projection="3d")
        R.draw_pose_3d(ax, P, azim=azim, elev=elev)
        fig.canvas.draw()
        Q = R._to_plot(P)
        xs, ys, _ = proj3d.proj_transform(Q[:, 0], Q[:, 1], Q[:, 2], ax.get_proj())
        disp = ax.transData.transform(np.stack([xs, ys], 1))   # display coords, y up
        assert disp[10, 1] > disp[0, 1] > disp[3, 1]            # head above pelvis above ankle
        if azim == 0:  # through the input camera: same left/right as the image
            assert disp[13, 0] > disp[0, 0] > disp[16, 0]
            # and the same shape as the 2D input (orthographic vs perspective: close)
            d = disp - disp[0]
            u = (uv - uv[0]) * np.array([1, -1])
            cos = (d * u).sum() / np.linalg.norm(d) / np.linalg.norm(u)
            assert cos > 0.995
        plt.close(fig)
    fig, ax = plt.subplots()
    R.draw_pose_2d(ax, uv)
    assert ax.yaxis_inverted()  # image y points down: the head is drawn at the top
    plt.close(fig)


def test_animation_and_mp4_error(tmp_path):
    from matplotlib import animation
    from PIL import Image
    P, uv = facing_camera_pose()
    t = np.linspace(0, 1, 3)[:, None, None]
    seq3 = P[None] + 100 * t
    seq2 = uv[None] + 20 * t[..., :2].repeat(2, -1)
    conf = np.ones((3, 17))
    conf[2, 13] = 0
    gif = tmp_path / "a.gif"
    R.render_lift(seq2, seq3, str(gif), confidence=conf, gt3d=seq3 * 1.01, fps=5)
    with Image.open(gif) as im:
        assert im.n_frames == 3
    if not animation.writers.is_available("ffmpeg"):
        with pytest.raises(R.RenderError, match="ffmpeg"):
            R.render_lift(seq2, seq3, str(tmp_path / "a.mp4"))
    with pytest.raises(R.RenderError, match="format"):
        R.render_lift(uv, P, str(tmp_path / "a.bmp"))
    with pytest.raises(R.RenderError, match="nothing"):
        R.render_lift(uv[:0].reshape(0, 17, 2), P[:0].reshape(0, 17, 3), str(tmp_path / "e.png"))


def test_training_curves(tmp_path):
    csv = tmp_path / "metrics.csv"
    rows = ["step,epoch,time_s,lr,loss_g,loss_2d,loss_d,d_acc,samples_per_s,val_p_mpjpe,val_n_mpjpe"]
    for s in range(0, 200, 10):
        val = f"{100 - s / 4:.2f},{120 - s / 5:.2f}" if s % 50 == 0 else ","
        rows.append(f"{s},0,{s / 10},{2e-4 * (1 - s / 400):.6g},{1.5 - s / 400:.4f},{1e-3 / (1 + s):.6g},"
                    f"{1.3:.2f},{0.6:.2f},{2000 + s},{val}")
    csv.write_text("\n".join(rows) + "\n")
    out = R.plot_training_curves(str(csv), str(tmp_path / "curves.png"))
    assert os.path.getsize(out) > 10_000
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(R.RenderError, match="empty.csv"):
        R.plot_training_curves(str(tmp_path / "empty.csv"), str(tmp_path / "x.png"))
    with pytest.raises(R.RenderError, match="nope.csv"):
        R.plot_training_curves(str(tmp_path / "nope.csv"), str(tmp_path / "x.png"))


def test_validation_sample(tmp_path):
    from fastlift.data.synthetic import generate
    ps = generate(40, seed=0, split="val", seq_len=20)
    gt = np.asarray(ps.keypoints_3d)
    rng = np.random.default_rng(0)
    pred = 0.002 * (gt - gt[:, :1]) + rng.normal(scale=0.02, size=gt.shape)
    out = R.render_validation_sample(pred, gt, np.asarray(ps.keypoints_2d), str(tmp_path / "val.png"), n=3)
    assert os.path.getsize(out) > 10_000
    with pytest.raises(R.RenderError):
        R.render_validation_sample(pred[:3], gt, np.asarray(ps.keypoints_2d), str(tmp_path / "bad.png"))
    assert H36M17.num_joints == 17
