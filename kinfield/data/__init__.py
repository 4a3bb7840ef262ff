"""Dataset readers. Every reader returns a :class:`Scene`; bad input raises :class:`DatasetError`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .batcher import RayBatcher
from .dnerf import load_dnerf
from .errors import DatasetError
from .nsff import is_nsff_scene, load_nsff
from .scene import Scene, SceneSplit
from .tiny_npz import load_tiny_npz

__all__ = ["RayBatcher", "Scene", "SceneSplit", "DatasetError", "load_dnerf", "load_nsff", "load_tiny_npz", "load_scene"]


def _is_npz_scene(path: Path) -> bool:
    """``path`` opens as an .npz holding ``images`` (a tiny-npz scene, not e.g. ground truth)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return "images" in z.files
    except Exception:  # noqa: BLE001 - unreadable or a plain .npy: not a scene
        return False


def load_scene(
    path: Union[str, os.PathLike],
    downscale: Union[int, float] = 1,
    background: Optional[Sequence[float]] = None,
    **kw,
) -> Scene:
    """Load a scene, picking the reader from what ``path`` is.

    * a folder containing ``poses_bounds.npy`` -> :func:`load_nsff` (forward-facing, NDC);
    * else a folder containing ``transforms_train.json`` (or that file itself) -> :func:`load_dnerf`
      (``background`` defaults to white);
    * a ``.npz`` file -> :func:`load_tiny_npz` (its images are already on black, so ``background``
      must be None or black).

    Extra keyword arguments (``splits``, ``aabb``, ``near``, ``far``) go to the reader.

    Raises:
        DatasetError: when ``path`` is neither, naming what was expected.
    """
    p = Path(path)
    if p.is_file() and p.name.startswith("transforms_") and p.suffix == ".json":
        p = p.parent
    if p.is_dir():
        if is_nsff_scene(p):  # before transforms_*.json: some captures (Balloon1) carry both
            return load_nsff(p, downscale=downscale, **kw)
        if (p / "transforms_train.json").is_file():
            if background is not None:
                kw["background"] = background
            return load_dnerf(p, downscale=downscale, **kw)
        hints = []
        npz = sorted(q.name for q in p.glob("*.npz") if _is_npz_scene(q))  # not e.g. motion_gt.npz
        if npz:
            hints.append(f"it holds {', '.join(npz[:3])}: pass that .npz file instead")
        if (p / "dataset.json").exists():
            hints.append("it looks like a Nerfies/HyperNeRF capture (dataset.json), which load_scene does not read")
        raise DatasetError(
            p / "transforms_train.json",
            "folder has no transforms_train.json" + (f" ({'; '.join(hints)})" if hints else ""),
            "pass a D-NeRF scene folder (with transforms_train.json), a forward-facing capture (with "
            "poses_bounds.npy, see tools/preprocess.py) or a .npz file such as tiny_dnerf_data.npz",
        )
    if p.suffix.lower() == ".npz":
        if background is not None and any(float(c) != 0.0 for c in background):
            raise DatasetError(
                p, f"background {tuple(background)} requested, but npz images have no alpha and are on black",
                "pass background=None (or (0, 0, 0)) for .npz scenes",
            )
        return load_tiny_npz(p, downscale=downscale, **kw)
    if not p.exists():
        fix = ("pass a D-NeRF scene folder (with transforms_train.json), a forward-facing capture (with "
               "poses_bounds.npy, e.g. tools/preprocess.py output) or a .npz file")
        if p.name == "demo_scene":  # the bundled demo scene is generated, not shipped (assets/README.md)
            fix = f"generate the demo scene first: python tools/make_scene.py {path} --preset demo (or run tools/demo.py)"
        raise DatasetError(p, "path does not exist", fix)
    raise DatasetError(p, "unsupported dataset file (expected a folder with transforms_train.json or poses_bounds.npy, "
                          "or a .npz file)", "pass a D-NeRF scene folder, a forward-facing capture or a .npz file "
                                             "such as tiny_dnerf_data.npz")
