"""Reader for the tiny D-NeRF npz fixture (``tiny_dnerf_data.npz``).

Keys: ``images`` ``[N, H, W, 3]`` float RGB in [0, 1] on a black background (or uint8),
``poses`` ``[N, 4, 4]`` camera-to-world (OpenGL axes), ``times`` ``[N]`` in [0, 1], ``focal`` (scalar,
pixels). The split is taken from optional integer arrays ``i_train`` / ``i_val`` / ``i_test``; without
them an 81-frame file uses the published split: frames 0-49 train, 50-60 val, 61-80 test.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from .dnerf import (area_downscale, check_aabb, check_downscale, check_near_far, check_pose,
                    check_time, median_spacing)
from .errors import DatasetError, as_dataset_error
from .scene import Scene, SceneSplit

PathLike = Union[str, os.PathLike]

__all__ = ["load_tiny_npz"]

_DEFAULT_SPLIT = {"train": (0, 50), "val": (50, 61), "test": (61, 81)}


def _split_indices(z, n: int, path: Path) -> Dict[str, np.ndarray]:
    keys = ("i_train", "i_val", "i_test")
    if any(k in z.files for k in keys):
        out = {}
        for k in keys:
            if k not in z.files:
                raise DatasetError(path, f"has some split arrays but not {k!r}",
                                   "store all of i_train, i_val, i_test (integer frame indices) or none of them")
            idx = np.asarray(z[k]).reshape(-1)
            if idx.dtype.kind not in "iu" or (idx.size and (idx.min() < 0 or idx.max() >= n)):
                raise DatasetError(path, f"{k!r} must hold integer frame indices in [0, {n})",
                                   f"rewrite {k!r} as integer indices into the {n} frames")
            out[k[2:]] = idx.astype(np.int64)
        if out["train"].size == 0:
            raise DatasetError(path, "'i_train' is empty", "list at least one training frame in 'i_train'")
        shared = np.intersect1d(out["train"], out["test"])
        if shared.size:
            raise DatasetError(path, f"'i_train' and 'i_test' share {shared.size} frame(s) {shared[:8].tolist()}: "
                                     "test frames would leak into training",
                               "make i_train and i_test disjoint (remove those frames from one of them)")
        return out
    if n != 81:
        raise DatasetError(
            path,
            f"has {n} frames and no split arrays; the built-in split (0-49 / 50-60 / 61-80) needs 81",
            "add integer arrays i_train, i_val, i_test to the npz",
        )
    return {name: np.arange(a, b) for name, (a, b) in _DEFAULT_SPLIT.items()}


def load_tiny_npz(
    path: PathLike,
    downscale: Union[int, float] = 1,
    aabb: Optional[Sequence[float]] = None,
    near: float = 2.0,
    far: float = 6.0,
) -> Scene:
    """Load ``tiny_dnerf_data.npz`` into a :class:`Scene` with a black background.

    Args:
        path: the ``.npz`` file.
        downscale: area-averaging factor >= 1 (see :func:`kinfield.data.dnerf.area_downscale`);
            the focal length is scaled by ``new_width / width``.
        aabb, near, far: scene box and ray range (defaults as :func:`load_dnerf`).

    Returns:
        :class:`Scene` with splits train / val / test: ``images [N, h, w, 3]``, ``alphas`` None,
        ``poses [N, 4, 4]``, ``times [N]``, ``intrinsics [N, 4]`` = ``(f, f, w / 2, h / 2)``.

    Raises:
        DatasetError: on a missing, unreadable or inconsistent file (the message names it).
    """
    path = Path(path)
    factor = check_downscale(downscale, path)
    aabb_t = check_aabb(aabb, path)
    near, far = check_near_far(near, far, path)
    if not path.exists():
        raise DatasetError(path, "file does not exist", "check the path to the .npz file")
    if not path.is_file():
        raise DatasetError(path, "expected an .npz file, got a folder", "pass the path of the .npz file itself")
    with as_dataset_error(path, "cannot read as an .npz archive",
                          "restore the file; it must be written by numpy.savez / savez_compressed"):
        z = np.load(path, allow_pickle=False)
    if not hasattr(z, "files"):
        raise DatasetError(path, "is a single .npy array, not an .npz archive",
                           "save images, poses, times and focal together with numpy.savez")
    with z:
        missing = [k for k in ("images", "poses", "times", "focal") if k not in z.files]
        if missing:
            raise DatasetError(path, f"missing key(s) {missing} (has: {sorted(z.files)})",
                               "the npz needs images [N,H,W,3], poses [N,4,4], times [N] and focal")
        with as_dataset_error(path, "cannot read arrays", "restore the file from the dataset"):
            images = np.asarray(z["images"])
            poses = np.asarray(z["poses"])
            times = np.asarray(z["times"])
            focal = np.asarray(z["focal"])
            split_idx = _split_indices(z, int(images.shape[0]) if images.ndim else 0, path)

    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise DatasetError(path, f"'images' has shape {list(images.shape)}, expected [N, H, W, 3] with N > 0",
                           "store RGB images as an [N, H, W, 3] array")
    n, h, w, _ = images.shape
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / np.float32(255.0)
    elif images.dtype.kind == "f":
        images = images.astype(np.float32, copy=False)
        if not np.all(np.isfinite(images)):
            raise DatasetError(path, "'images' contains NaN or inf", "re-export the images")
        if images.min() < -1e-3 or images.max() > 1 + 1e-3:
            raise DatasetError(path, f"'images' values span [{images.min():.3g}, {images.max():.3g}], expected [0, 1]",
                               "store float images scaled to [0, 1] (or uint8 in [0, 255])")
        images = np.clip(images, 0.0, 1.0)
    else:
        raise DatasetError(path, f"'images' has dtype {images.dtype}, expected float or uint8",
                           "store float32 images in [0, 1] or uint8")
    if poses.shape != (n, 4, 4):
        raise DatasetError(path, f"'poses' has shape {list(poses.shape)}, expected [{n}, 4, 4]",
                           "store one 4x4 camera-to-world matrix per image")
    for i in range(n):
        check_pose(poses[i], path, f"poses[{i}]")
    if times.shape != (n,):
        raise DatasetError(path, f"'times' has shape {list(times.shape)}, expected [{n}]",
                           "store one normalised time per image")
    if times.dtype.kind not in "fiu":
        raise DatasetError(path, f"'times' has dtype {times.dtype}, expected numbers", "store float times in [0, 1]")
    for i in range(n):
        check_time(float(times[i]), path, f"times[{i}]")
    focal_px = float(focal.reshape(-1)[0]) if focal.size == 1 and focal.dtype.kind in "fiu" else math.nan
    if not math.isfinite(focal_px) or focal_px <= 0:
        raise DatasetError(path, f"'focal' must be one positive number, got {focal!r}",
                           "store the focal length in pixels of the stored images")

    imgs = images if factor == 1 else np.stack([area_downscale(im, factor) for im in images])
    nh, nw = imgs.shape[1:3]
    f = focal_px * nw / w
    splits: Dict[str, SceneSplit] = {}
    for name, idx in split_idx.items():
        if idx.size == 0:
            continue
        splits[name] = SceneSplit(
            name=name,
            images=torch.from_numpy(np.ascontiguousarray(imgs[idx])),
            alphas=None,
            poses=torch.from_numpy(poses[idx].astype(np.float32)),
            times=torch.from_numpy(times[idx].astype(np.float32)),
            intrinsics=torch.tensor([f, f, 0.5 * nw, 0.5 * nh], dtype=torch.float32).repeat(idx.size, 1),
            paths=[f"{path}#{int(i)}" for i in idx],
        )
    return Scene(
        root=str(path),
        splits=splits,
        aabb=aabb_t,
        near=near,
        far=far,
        background=torch.zeros(3, dtype=torch.float32),
        frame_dt=median_spacing(times[split_idx["train"]]),
        meta={"format": "tiny_npz", "downscale": factor, "source_hw": (h, w), "focal": focal_px},
    )
