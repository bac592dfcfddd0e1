"""Pictures: the 2D input beside the lifted 3D skeleton, training curves, validation samples.

Conventions (every figure):

* Colours follow the **person's** side: left joints and bones blue, right red, centre (pelvis,
  spine, neck, head) dark grey; a bone takes the side of its child joint. Ground truth, where
  drawn with a prediction, is a thin black dashed skeleton.
* 2D panels are in image coordinates with the y axis pointing down (the image's), so up in the
  picture is up in the image.
* 3D panels take camera-frame poses (x right, y down, z forward) and draw them with up as up:
  plot axes (x, z, -y). ``azim`` / ``elev`` are degrees *relative to the input camera*:
  ``azim=0, elev=0`` looks through the camera that took the 2D input (the 3D panel then shows the
  2D pose), positive ``azim`` moves the viewpoint to the camera's right around the vertical axis,
  positive ``elev`` raises it.

Everything uses matplotlib's Agg backend (no display needed). Animations (``.gif`` with Pillow,
``.mp4`` with ffmpeg when it is installed) use :mod:`matplotlib.animation`.

The training engine calls, at the end of each run (see ``docs/evaluation.md``)::

    from fastlift.evaluation.render import plot_training_curves, render_validation_sample
    plot_training_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    render_validation_sample(pred3d, gt3d, kp2d, run_dir / "val_samples.png")
"""
from __future__ import annotations

import csv
import math
import os
from typing import Sequence

import numpy as np

__all__ = [
    "LEFT_COLOR",
    "RIGHT_COLOR",
    "CENTER_COLOR",
    "bone_colors",
    "draw_pose_2d",
    "draw_pose_3d",
    "render_lift",
    "plot_training_curves",
    "render_validation_sample",
    "RenderError",
]

LEFT_COLOR = "#1f5fbf"    # blue: the person's left
RIGHT_COLOR = "#d62728"   # red: the person's right
CENTER_COLOR = "#404040"
GT_COLOR = "black"


class RenderError(RuntimeError):
    """A picture or animation that cannot be written (e.g. ``.mp4`` without ffmpeg)."""


def _plt():
    import matplotlib
    if matplotlib.get_backend().lower() != "agg":
        try:
            matplotlib.use("Agg", force=True)
        except Exception:  # noqa: BLE001
            pass
    import matplotlib.pyplot as plt
    return plt


def _layout(layout):
    from fastlift.data.layouts import get_layout
    return get_layout(layout)


def bone_colors(layout="h36m17") -> list[tuple[int, int, str]]:
    """``(child, parent, colour)`` for every bone of ``layout``, coloured by the child's side."""
    lay = _layout(layout)
    col = {"left": LEFT_COLOR, "right": RIGHT_COLOR, "center": CENTER_COLOR}
    return [(j, p, col[lay.side(j)]) for j, p in lay.bones]


def joint_colors(layout="h36m17") -> list[str]:
    lay = _layout(layout)
    col = {"left": LEFT_COLOR, "right": RIGHT_COLOR, "center": CENTER_COLOR}
    return [col[lay.side(j)] for j in range(lay.num_joints)]


# -------------------------------------------------------------------------------------- 2D
def _present(conf, J):
    return np.ones(J, bool) if conf is None else np.asarray(conf).reshape(J) > 0


def draw_pose_2d(ax, kp2d, layout="h36m17", confidence=None, lw: float = 2.5, set_limits: bool = True,
                 limits=None):
    """Draw one 2D pose (J, 2) in image coordinates (y down) on a 2D axes. Joints with confidence
    0 and their bones are not drawn. Returns the list of artists (bone lines, then the joints)."""
    lay = _layout(layout)
    k = np.asarray(kp2d, dtype=np.float64).reshape(lay.num_joints, 2)
    ok = _present(confidence, lay.num_joints)
    artists = []
    for j, p, c in bone_colors(lay):
        (ln,) = ax.plot([k[j, 0], k[p, 0]], [k[j, 1], k[p, 1]], color=c, lw=lw, solid_capstyle="round")
        ln.set_visible(bool(ok[j] and ok[p]))
        artists.append(ln)
    sc = ax.scatter(k[ok, 0], k[ok, 1], c=[joint_colors(lay)[i] for i in np.flatnonzero(ok)], s=14, zorder=3)
    artists.append(sc)
    if set_limits:
        (x0, x1), (y0, y1) = limits if limits is not None else _limits_2d(k[ok][None])
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)  # image y axis points down
        ax.set_aspect("equal")
    return artists


def _limits_2d(k: np.ndarray, pad: float = 0.12):
    k = k.reshape(-1, 2)
    k = k[np.isfinite(k).all(1)]
    if len(k) == 0:
        return (0.0, 1.0), (0.0, 1.0)
    lo, hi = k.min(0), k.max(0)
    c, r = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-6) * (1 + pad)
    return (c[0] - r, c[0] + r), (c[1] - r, c[1] + r)


# -------------------------------------------------------------------------------------- 3D
def _to_plot(Y: np.ndarray) -> np.ndarray:
    """Camera frame (x right, y down, z forward) -> plot axes (x, z, -y): up is up."""
    Y = np.asarray(Y, dtype=np.float64)
    return np.stack([Y[..., 0], Y[..., 2], -Y[..., 1]], axis=-1)


def _limits_3d(P: np.ndarray, pad: float = 0.08):
    P = P.reshape(-1, 3)
    P = P[np.isfinite(P).all(1)]
    if len(P) == 0:
        return np.zeros(3), 1.0
    lo, hi = P.min(0), P.max(0)
    return (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-6) * (1 + pad)


def _setup_3d(ax, center, radius, azim: float, elev: float, unit: str | None = None):
    ax.set_xlim(center[0] - radius, center[0] + radius)
    ax.set_ylim(center[1] - radius, center[1] + radius)
    ax.set_zlim(center[2] - radius, center[2] + radius)
    try:
        ax.set_box_aspect((1, 1, 1), zoom=1.1)
    except Exception:  # noqa: BLE001
        pass
    ax.view_init(elev=elev, azim=-90.0 + azim)
    ax.set_proj_type("ortho")  # no perspective magnification: limits hold, bone lengths comparable
    u = f" ({unit})" if unit else ""
    ax.set_xlabel("x (right)" + u, fontsize=7)
    ax.set_ylabel("z (depth)" + u, fontsize=7)
    ax.set_zlabel("up" + u, fontsize=7)
    ax.tick_params(labelsize=6)


def draw_pose_3d(ax, Y, layout="h36m17", lw: float = 2.5, gt: bool = False, azim: float = 30.0,
                 elev: float = 15.0, set_limits: bool = True, limits=None, unit: str | None = None):
    """Draw one camera-frame 3D pose (J, 3) on a 3D axes (up is up, see the module docstring).
    ``gt=True`` draws it as ground truth (thin black dashes). Returns the bone lines."""
    lay = _layout(layout)
    P = _to_plot(np.asarray(Y).reshape(lay.num_joints, 3))
    lines = []
    for j, p, c in bone_colors(lay):
        if gt:
            (ln,) = ax.plot(*zip(P[j], P[p]), color=GT_COLOR, lw=1.0, ls="--")
        else:
            (ln,) = ax.plot(*zip(P[j], P[p]), color=c, lw=lw, solid_capstyle="round")
        lines.append(ln)
    if set_limits:
        center, radius = limits if limits is not None else _limits_3d(P)
        _setup_3d(ax, center, radius, azim, elev, unit)
    return lines


# -------------------------------------------------------------------------------------- lift figure
def _legend(fig):
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=LEFT_COLOR, lw=3, label="left (person's)"),
               Line2D([], [], color=RIGHT_COLOR, lw=3, label="right"),
               Line2D([], [], color=CENTER_COLOR, lw=3, label="centre")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)


def render_lift(kp2d, pose3d, out_path: str, layout_2d="h36m17", confidence=None, azim: float = 30.0,
                elev: float = 15.0, frame: int = 0, fps: float = 25.0, title: str | None = None,
                unit: str | None = None, gt3d=None, dpi: int = 100) -> str:
    """The 2D input beside the lifted 3D skeleton.

    Args:
        kp2d: (N, J, 2) or (J, 2) 2D input in pixels, layout ``layout_2d``.
        pose3d: (N, 17, 3) or (17, 3) lifted h36m17 poses (camera frame, root-relative).
        out_path: ``.png`` (one frame: ``frame``), ``.gif`` (Pillow) or ``.mp4`` (ffmpeg) (every frame).
        confidence: (N, J) or (J,); joints with 0 are not drawn in 2D.
        azim, elev: 3D viewpoint in degrees relative to the input camera (0, 0: the camera's view).
        fps: frames per second of an animation.
        gt3d: optional ground truth (N, 17, 3) drawn dashed in the 3D panel (same frame and unit).
        unit: axis unit label of the 3D panel (e.g. ``"mm"``).

    Returns ``out_path``. :class:`RenderError` for an unknown extension or ``.mp4`` without ffmpeg.
    """
    plt = _plt()
    from fastlift.data.layouts import H36M17
    lay2 = _layout(layout_2d)
    k = np.asarray(kp2d, dtype=np.float64)
    Y = np.asarray(pose3d, dtype=np.float64)
    if k.ndim == 2:
        k = k[None]
    if Y.ndim == 2:
        Y = Y[None]
    if k.shape[1:] != (lay2.num_joints, 2):
        raise RenderError(f"render_lift: 2D input must be (N, {lay2.num_joints}, 2) for layout {lay2.name!r}, got {k.shape}")
    if Y.shape[1:] != (H36M17.num_joints, 3) or len(Y) != len(k):
        raise RenderError(f"render_lift: 3D poses must be ({len(k)}, 17, 3), got {Y.shape}")
    G = None if gt3d is None else np.asarray(gt3d, dtype=np.float64).reshape(Y.shape)
    conf = None if confidence is None else np.asarray(confidence).reshape(len(k), lay2.num_joints)
    ext = os.path.splitext(str(out_path))[1].lower()
    if ext not in (".png", ".gif", ".mp4", ".jpg", ".jpeg", ".pdf", ".svg"):
        raise RenderError(f"{out_path}: unknown picture format {ext!r}; use .png, .gif or .mp4")
    if len(k) == 0:
        raise RenderError(f"{out_path}: nothing to render (no poses)")
    animated = ext in (".gif", ".mp4")
    if ext == ".mp4":
        from matplotlib import animation
        if not animation.writers.is_available("ffmpeg"):
            raise RenderError(f"{out_path}: writing .mp4 needs ffmpeg, which is not installed (apt-get install ffmpeg); "
                              f"write a .gif instead (Pillow)")
    os.makedirs(os.path.dirname(os.path.abspath(str(out_path))) or ".", exist_ok=True)

    frames = np.arange(len(k)) if animated else np.array([min(max(int(frame), 0), len(k) - 1)])
    ok_all = np.ones(k.shape[:2], bool) if conf is None else conf > 0
    lim2 = _limits_2d(np.where(ok_all[frames, :, None], k[frames], np.nan))
    P_all = _to_plot(Y[frames])
    if G is not None:
        P_all = np.concatenate([P_all, _to_plot(G[frames])])
    lim3 = _limits_3d(P_all)

    fig = plt.figure(figsize=(9.0, 4.6), dpi=dpi)
    ax2 = fig.add_subplot(1, 2, 1)
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    f0 = int(frames[0])
    art2 = draw_pose_2d(ax2, k[f0], lay2, None if conf is None else conf[f0], limits=lim2)
    ax2.set_title(f"2D input ({lay2.name}, pixels)", fontsize=9)
    ax2.tick_params(labelsize=7)
    gl = draw_pose_3d(ax3, G[f0], gt=True, set_limits=False) if G is not None else []
    l3 = draw_pose_3d(ax3, Y[f0], azim=azim, elev=elev, limits=lim3, unit=unit)
    ax3.set_title(f"lifted 3D (h36m17), azim {azim:g}, elev {elev:g}" + (" (dashed: ground truth)" if G is not None else ""),
                  fontsize=9)
    _legend(fig)
    sup = fig.suptitle((title + "  " if title else "") + (f"frame {f0}" if len(k) > 1 else ""), fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.93, bottom=0.1, top=0.88, wspace=0.15)

    def update(fi):
        fi = int(fi)
        kk = k[fi]
        ok = ok_all[fi]
        bones = bone_colors(lay2)
        for ln, (j, p, _) in zip(art2[:-1], bones):
            ln.set_data([kk[j, 0], kk[p, 0]], [kk[j, 1], kk[p, 1]])
            ln.set_visible(bool(ok[j] and ok[p]))
        art2[-1].set_offsets(np.where(ok[:, None], kk, np.nan))
        for lines, pose in ((l3, Y[fi]), (gl, G[fi] if G is not None else None)):
            if pose is None:
                continue
            P = _to_plot(pose)
            for ln, (j, p, _) in zip(lines, bone_colors(H36M17)):
                ln.set_data_3d(*zip(P[j], P[p]))
        sup.set_text((title + "  " if title else "") + f"frame {fi}")
        return []

    try:
        if not animated:
            fig.savefig(out_path, dpi=dpi)
        else:
            from matplotlib import animation
            anim = animation.FuncAnimation(fig, update, frames=frames, blit=False)
            if ext == ".gif":
                writer = animation.PillowWriter(fps=fps)
            else:
                writer = animation.FFMpegWriter(fps=fps)
            anim.save(out_path, writer=writer, dpi=dpi)
    finally:
        plt.close(fig)
    return str(out_path)


# -------------------------------------------------------------------------------------- curves
_X_COLUMNS = ("step", "iteration", "iter", "global_step", "epoch")


def _read_csv(path: str) -> tuple[list[str], np.ndarray]:
    if not os.path.isfile(path):
        raise RenderError(f"{path}: no such metrics file")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or not rows[0]:
        raise RenderError(f"{path}: empty metrics file (no header)")
    header = [h.strip() for h in rows[0]]
    data = np.full((max(len(rows) - 1, 0), len(header)), np.nan)
    for i, row in enumerate(rows[1:]):
        for j, v in enumerate(row[:len(header)]):
            try:
                data[i, j] = float(v)
            except ValueError:
                pass
    return header, data


_SKIP_COLUMNS = ("epoch", "time_s", "time", "elapsed", "wall_s")
_GROUP_ORDER = ("losses", "validation (mm)", "discriminator accuracy", "learning rate", "throughput", "other")


def _group(name: str) -> str | None:
    n = name.lower()
    if n in _SKIP_COLUMNS:
        return None
    if any(t in n for t in ("mpjpe", "pck", "auc", "val", "test", "err")):
        return "validation (mm)"
    if "acc" in n:
        return "discriminator accuracy"
    if n == "lr" or "learning_rate" in n:
        return "learning rate"
    if any(t in n for t in ("per_s", "speed", "samples_s", "throughput")):
        return "throughput"
    if "loss" in n:
        return "losses"
    return "other"


def plot_training_curves(csv_path: str, out_png: str, title: str | None = None) -> str:
    """Plot every numeric column of a training log CSV (one header row) against its step column.

    The x axis is the first of ``step``, ``iteration``, ``iter``, ``global_step``, ``epoch`` present
    (else the row number). Columns are grouped into panels by name: losses (``loss*``); validation
    numbers (names with ``mpjpe``, ``pck``, ``auc``, ``val``, ``test``); discriminator accuracies
    (``*acc*``); the learning rate (``lr``); throughput (``*per_s``); anything else. ``epoch`` and
    ``time_s`` are bookkeeping and not drawn. A panel whose values span more than three decades
    uses a log scale. Empty cells (metrics logged only every K steps) are skipped, so sparse
    validation rows draw as connected markers. Returns ``out_png``.
    """
    plt = _plt()
    header, data = _read_csv(os.fspath(csv_path))
    if len(data) == 0:
        raise RenderError(f"{csv_path}: the metrics file has a header but no rows")
    xcol = next((h for h in _X_COLUMNS if h in header), None)
    x = data[:, header.index(xcol)] if xcol else np.arange(len(data), dtype=float)
    groups: dict[str, list[int]] = {}
    for j, h in enumerate(header):
        g = _group(h)
        if h == xcol or g is None or not np.isfinite(data[:, j]).any():
            continue
        groups.setdefault(g, []).append(j)
    if not groups:
        raise RenderError(f"{csv_path}: no numeric columns to plot")
    order = [g for g in _GROUP_ORDER if g in groups]
    n = len(order)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax, g in zip(axes.flat, order):
        for j in groups[g]:
            m = np.isfinite(data[:, j]) & np.isfinite(x)
            sparse = m.sum() < 0.5 * len(data) or m.sum() < 30
            ax.plot(x[m], data[m, j], marker="o" if sparse else None, ms=3, lw=1.3, label=header[j])
        if g in ("losses", "learning rate"):
            vals = data[:, groups[g]]
            vals = vals[np.isfinite(vals)]
            if len(vals) and np.all(vals > 0) and vals.max() / max(vals.min(), 1e-30) > 1e3:
                ax.set_yscale("log")
        ax.set_title(g, fontsize=10)
        ax.set_xlabel(xcol or "row", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title or f"training curves: {os.path.basename(os.path.dirname(os.path.abspath(str(csv_path)))) or csv_path}",
                 fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(str(out_png))) or ".", exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return str(out_png)


# -------------------------------------------------------------------------------------- validation sample
def render_validation_sample(pred3d, gt3d, kp2d, out_png: str, n: int = 6, seed: int = 0,
                             layout_2d="h36m17", azim: float = 30.0, elev: float = 15.0,
                             indices: Sequence[int] | None = None, title: str | None = None) -> str:
    """A grid of validation lifts: per sample the 2D input (top) and, below, the prediction
    Procrustes-aligned to the ground truth (coloured) over the ground truth (black dashes), with its
    P-MPJPE.

    Args:
        pred3d: (N, 17, 3) predictions (any unit; they are aligned to ``gt3d``).
        gt3d: (N, 17, 3) ground truth, camera frame (mm).
        kp2d: (N, J, 2) 2D inputs (pixels or normalised; drawn with y down), layout ``layout_2d``.
        n: samples drawn (evenly spread over the set unless ``indices`` is given).
        seed: unused when ``indices`` is given; otherwise the spread starts at a seeded offset.
    """
    plt = _plt()
    import torch
    from fastlift.evaluation.pck import align_poses
    pred = np.asarray(pred3d, dtype=np.float64)
    gt = np.asarray(gt3d, dtype=np.float64)
    k = np.asarray(kp2d, dtype=np.float64)
    if pred.ndim != 3 or pred.shape != gt.shape or len(k) != len(pred):
        raise RenderError(f"render_validation_sample: pred3d and gt3d must be (N, 17, 3) and kp2d (N, J, 2) with one N; "
                          f"got {pred.shape}, {gt.shape}, {k.shape}")
    N = len(pred)
    if N == 0:
        raise RenderError(f"{out_png}: no validation poses to render")
    if indices is None:
        m = min(n, N)
        off = np.random.default_rng(seed).integers(0, max(N // max(m, 1), 1))
        indices = (off + np.linspace(0, N - 1 - off, m)).round().astype(int)
    idx = np.asarray(list(indices), dtype=int)
    aligned = align_poses(torch.from_numpy(pred[idx]), torch.from_numpy(gt[idx]), "procrustes").numpy()
    err = np.linalg.norm(aligned - gt[idx], axis=-1).mean(1)
    m = len(idx)
    fig = plt.figure(figsize=(2.6 * m, 6.0), dpi=100)
    for c, (i, a, e) in enumerate(zip(idx, aligned, err)):
        ax2 = fig.add_subplot(2, m, c + 1)
        draw_pose_2d(ax2, k[i], layout_2d, lw=2.0)
        ax2.set_title(f"#{i} 2D input", fontsize=8)
        ax2.tick_params(labelsize=5)
        ax3 = fig.add_subplot(2, m, m + c + 1, projection="3d")
        g = gt[i] - gt[i, 0]
        draw_pose_3d(ax3, g, gt=True, set_limits=False)
        lim = _limits_3d(np.concatenate([_to_plot(g), _to_plot(a - gt[i, 0])]))
        draw_pose_3d(ax3, a - gt[i, 0], lw=2.0, azim=azim, elev=elev, limits=lim, unit="mm")
        ax3.set_xticklabels([])
        ax3.set_yticklabels([])
        ax3.set_zticklabels([])
        ax3.set_xlabel("x", fontsize=7, labelpad=-12)
        ax3.set_ylabel("depth", fontsize=7, labelpad=-12)
        ax3.set_zlabel("up", fontsize=7, labelpad=-12)
        ax3.text2D(0.5, 0.95, f"P-MPJPE {e:.1f} mm", transform=ax3.transAxes, ha="center", fontsize=8)
    _legend(fig)
    fig.suptitle(title or "validation lifts: prediction after Procrustes alignment (colour) over ground truth (dashed)",
                 fontsize=9)
    fig.subplots_adjust(left=0.03, right=0.98, bottom=0.06, top=0.9, wspace=0.12, hspace=0.08)
    os.makedirs(os.path.dirname(os.path.abspath(str(out_png))) or ".", exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return str(out_png)
