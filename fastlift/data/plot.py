"""Draw poses to a PNG grid for checking data by eye (matplotlib, Agg backend).

For each sampled pose: the 2D keypoints in image coordinates (y down, drawn so that up is up),
with the 3D joints re-projected through the camera as hollow circles when both exist (they sit on
the 2D joints when 3D and 2D agree), and the 3D pose seen from the camera's side and from above.
Left limbs blue, right limbs red, the centre black.
"""
from __future__ import annotations

import numpy as np

from fastlift.data.errors import PoseDataError
from fastlift.data.h36m import project
from fastlift.data.poseset import PoseSet

__all__ = ["plot_poses"]

_COLORS = {"left": "tab:blue", "right": "tab:red", "center": "black"}


def _bone_color(layout, child, parent):
    side = layout.side(child)
    if side == "center":
        side = layout.side(parent)
    return _COLORS[side]


def _draw(ax, pts, layout, conf=None, lw=2.0):
    for child, parent in layout.bones:
        if conf is not None and (conf[child] <= 0 or conf[parent] <= 0):
            continue
        ax.plot([pts[parent, 0], pts[child, 0]], [pts[parent, 1], pts[child, 1]],
                color=_bone_color(layout, child, parent), lw=lw)
    ok = np.ones(len(pts), bool) if conf is None else conf > 0
    ax.scatter(pts[ok, 0], pts[ok, 1], s=6, c="k", zorder=3)


def plot_poses(poses: PoseSet, path: str, n: int = 12, seed: int = 0, indices=None, title: str | None = None) -> str:
    """Render ``n`` poses (random, seeded, or ``indices``) to ``path`` (PNG). Returns ``path``."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PoseDataError("plot_poses needs matplotlib (pip install matplotlib)") from None
    if len(poses) == 0:
        raise PoseDataError(f"{poses.source or 'PoseSet'}: no poses to plot")
    if indices is None:
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(len(poses), size=min(n, len(poses)), replace=False))
    indices = np.asarray(indices)
    lay = poses.layout_obj
    has3d = poses.keypoints_3d is not None
    cams = poses.camera_rows()
    cols = 3 if has3d else 1
    per_row = 3 if has3d else 6
    rows = -(-len(indices) // per_row)
    fig, axes = plt.subplots(rows, per_row * cols, figsize=(2.6 * per_row * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for k, i in enumerate(indices):
        r, cidx = divmod(k, per_row)
        ax = axes[r, cidx * cols]
        k2 = np.asarray(poses.keypoints_2d[i], dtype=np.float64)
        conf = np.asarray(poses.confidence[i])
        _draw(ax, k2, lay, conf)
        label = []
        if poses.action is not None:
            label.append(str(poses.action[i]))
        label.append(f"#{int(i)} f{int(poses.frame[i])}")
        if has3d and cams is not None:
            rep = project(np.asarray(poses.keypoints_3d[i]), cams[i])
            ax.scatter(rep[:, 0], rep[:, 1], s=28, facecolors="none", edgecolors="tab:green", lw=0.8, zorder=4)
            err = np.abs(rep - k2)[conf > 0].max(initial=0.0)
            label.append(f"reproj {err:.1f}px")
        ax.set_title("\n".join([" ".join(label[:-1]), label[-1]]) if len(label) > 1 else label[0], fontsize=7)
        ax.invert_yaxis()
        ax.set_aspect("equal", adjustable="datalim")
        if has3d:
            P = np.asarray(poses.keypoints_3d[i], dtype=np.float64)
            P = P - P[lay.root]
            side = axes[r, cidx * cols + 1]  # seen from the camera's right: depth z to the right, up = -y
            _draw(side, np.stack([P[:, 2], -P[:, 1]], -1), lay)
            side.set_aspect("equal", adjustable="datalim")
            side.set_title("3D side (z ->, up)", fontsize=7)
            top = axes[r, cidx * cols + 2]  # seen from above: x right, depth z up the page
            _draw(top, np.stack([P[:, 0], P[:, 2]], -1), lay)
            top.set_aspect("equal", adjustable="datalim")
            top.set_title("3D top (x ->, z up)", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
