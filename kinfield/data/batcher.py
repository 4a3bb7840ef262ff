"""Random ray batches over every pixel of a split (each ray keeps its own frame time)."""
from __future__ import annotations

from typing import Dict

import torch

from ..geometry import pixel_rays
from .scene import SceneSplit


class RayBatcher:
    """Draws random pixels of a split and returns their rays, times and colours.

    Args:
        split: the training split.
        device: where batches are produced.
        generator: torch RNG for reproducible batches.
    """

    def __init__(self, split: SceneSplit, device: torch.device, generator: torch.Generator):
        self.split = split
        self.device = device
        self.gen = generator
        self.images = split.images.to(device)  # [N, H, W, 3]
        self.alphas = split.alphas.to(device) if split.alphas is not None else None
        self.poses = split.poses.to(device)
        self.intrinsics = split.intrinsics.to(device)
        self.times = split.times.to(device)
        self.extras = {k: v.to(device) for k, v in split.extras.items()}
        self.n_pixels = split.num_frames * split.height * split.width

    def sample(self, n_rays: int) -> Dict[str, torch.Tensor]:
        """``n_rays`` random pixels: ``origins, dirs [R, 3]``, ``times [R]``, ``rgb [R, 3]``,
        ``alpha [R]`` (or absent), ``frame [R]``, ``rows``, ``cols``, and each of the split's ``extras``."""
        h, w = self.split.height, self.split.width
        flat = torch.randint(0, self.n_pixels, (n_rays,), generator=self.gen).to(self.device)
        frame = flat // (h * w)
        rows = (flat // w) % h
        cols = flat % w
        origins, dirs = pixel_rays(self.poses[frame], self.intrinsics[frame], rows, cols)
        batch = {
            "origins": origins,
            "dirs": dirs,
            "times": self.times[frame],
            "rgb": self.images[frame, rows, cols],
            "frame": frame,
            "rows": rows,
            "cols": cols,
        }
        if self.alphas is not None:
            batch["alpha"] = self.alphas[frame, rows, cols]
        for k, v in self.extras.items():
            batch[k] = v[frame, rows, cols]
        return batch
