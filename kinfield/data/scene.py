"""In-memory scene representation shared by every dataset reader.

A reader (D-NeRF JSON, tiny npz, synthetic generator, ...) returns a :class:`Scene`; everything
downstream (ray batching, training, evaluation) only sees these two dataclasses.

Conventions:
    * cameras are camera-to-world 4x4 matrices in the OpenGL/Blender convention
      (x right, y up, the camera looks down -z);
    * ``times`` are the dataset's normalised times in [0, 1];
    * images are float32 RGB in [0, 1], already composited on ``Scene.background``;
    * intrinsics are pinhole ``(fx, fy, cx, cy)`` in pixels of the (possibly downscaled) image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch


@dataclass
class SceneSplit:
    """One split (train / val / test) of a dynamic scene.

    Attributes:
        name: split name, e.g. ``"train"``.
        images: ``[N, H, W, 3]`` float32 RGB in [0, 1], composited on the scene background.
        alphas: ``[N, H, W]`` float32 in [0, 1] or ``None`` when the source has no alpha.
        poses: ``[N, 4, 4]`` float32 camera-to-world (OpenGL axes).
        times: ``[N]`` float32 normalised times in [0, 1].
        intrinsics: ``[N, 4]`` float32 ``(fx, fy, cx, cy)`` in pixels.
        paths: ``N`` source file paths (for error messages and per-image reports).
        extras: optional per-pixel priors ``[N, H, W(, C)]`` by name (e.g. ``disp``, ``motion_mask``,
            ``flow_fwd``/``flow_fwd_mask``, ``sparse_depth``); ray batches carry them per ray.
    """

    name: str
    images: torch.Tensor
    alphas: Optional[torch.Tensor]
    poses: torch.Tensor
    times: torch.Tensor
    intrinsics: torch.Tensor
    paths: List[str] = field(default_factory=list)
    extras: Dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])


@dataclass
class Scene:
    """A dynamic scene: its splits and the geometry the renderer needs.

    Attributes:
        root: folder the scene was read from (or ``""``).
        splits: split name -> :class:`SceneSplit`.
        aabb: ``[6]`` float32 ``(xmin, ymin, zmin, xmax, ymax, zmax)`` world box holding the scene.
        near, far: ray range used when a ray misses nothing else (world units).
        background: ``[3]`` float32 background colour the images were composited on.
        frame_dt: spacing of consecutive training frames in dataset time units (Delta in METHOD.md).
        ndc: ``(focal, width, height, near)`` for forward-facing captures rendered in NDC (``aabb`` is
            then an NDC box), ``None`` for world-space scenes.
        meta: free-form extra information (e.g. the synthetic generator's parameters).
    """

    root: str
    splits: Dict[str, SceneSplit]
    aabb: torch.Tensor
    near: float
    far: float
    background: torch.Tensor
    frame_dt: float
    ndc: Optional[Tuple[float, float, float, float]] = None
    meta: dict = field(default_factory=dict)

    def split(self, name: str) -> SceneSplit:
        if name not in self.splits:
            raise KeyError(
                f"scene {self.root!r} has no {name!r} split (it has: {', '.join(sorted(self.splits))})"
            )
        return self.splits[name]

    def describe(self) -> str:
        """One line for the log: the format, the training frames' size and where it comes from, the other splits."""
        fmt = self.meta.get("format", "scene") + (", NDC" if self.ndc is not None else "")
        train = self.splits.get("train")
        parts = []
        if train is not None:
            text = f"train {train.num_frames} frames {train.width}x{train.height}"
            source, folder = self.meta.get("source_hw"), self.meta.get("image_dir")
            origin = ([f"from {folder}/"] if folder else []) + \
                ([f"at {source[1]}x{source[0]}"] if source and tuple(source) != (train.height, train.width) else [])
            if origin:
                text += f" ({' '.join(origin)}, --downscale {self.meta.get('downscale', '?')})"
            parts.append(text)
        parts += [f"{name} {sp.num_frames} views" for name, sp in self.splits.items() if name != "train"]
        return f"scene {self.root} ({fmt}): " + "; ".join(parts)
