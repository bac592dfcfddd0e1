"""fastlift's data layer: skeleton layouts, the pose file, readers, synthetic motion, the loader.

* :mod:`fastlift.data.layouts`: named layouts (h36m17, coco17, openpose25, openpose18,
  mpi_inf_3dhp17) and :func:`convert_keypoints` between them.
* :class:`PoseSet`: the fastlift pose file (``.npz``) in memory; :func:`load_poses` reads it and
  every other supported format (VideoPose3D, MPI-INF-3DHP, COCO, OpenPose); :func:`save_poses`
  writes them.
* :mod:`fastlift.data.synthetic`: procedural human motion, the embedded default data set.
* :class:`PoseLoader`: normalised, shuffled, sharded, resumable batches of torch tensors.
* :func:`normalize_2d_np` / :func:`normalize_2d_torch`: the method's 2D normalisation.

Command line: ``python -m fastlift.data {convert,info,synth,plot} ...``. Documentation:
docs/data.md.
"""
from fastlift.data.errors import PoseDataError
from fastlift.data.layouts import (H36M17, HEAD, LAYOUTS, ROOT, Layout, conversion_info, convert_keypoints,
                                   get_layout)
from fastlift.data.poseset import PoseSet
from fastlift.data.formats import FORMATS, detect_format, load_poses, save_poses
from fastlift.data.normalize import normalize_2d_np, normalize_2d_torch
from fastlift.data.loader import PoseLoader
from fastlift.data import layouts, synthetic  # noqa: F401  (submodules as attributes)

__all__ = [
    "PoseDataError",
    "Layout",
    "LAYOUTS",
    "H36M17",
    "ROOT",
    "HEAD",
    "get_layout",
    "convert_keypoints",
    "conversion_info",
    "PoseSet",
    "FORMATS",
    "detect_format",
    "load_poses",
    "save_poses",
    "normalize_2d_np",
    "normalize_2d_torch",
    "PoseLoader",
    "layouts",
    "synthetic",
]
