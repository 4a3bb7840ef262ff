"""Random ray batches over every pixel of a split (each ray keeps its own frame time), optionally with
part of each batch drawn where a per-pixel importance map (e.g. the dynamic probability) is high."""
from __future__ import annotations

from typing import Dict, Optional

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

        # importance of each pixel, 0..255 (uint8: one byte per training pixel); None until enabled
        self.importance: Optional[torch.Tensor] = None

    def enable_importance(self, prior: float) -> None:
        """Start an importance map with every pixel at ``prior`` in [0, 1] (no-op if one exists)."""
        if self.importance is None:
            self.importance = torch.full((self.n_pixels,), _quantize(prior), dtype=torch.uint8)  # on the CPU, like gen

    def update_importance(self, flat: torch.Tensor, values: torch.Tensor) -> None:
        """Record ``values [R]`` in [0, 1] at the pixels ``flat [R]`` (the batch's ``flat`` indices); a pixel whose
        value is not finite (a step that went wrong) keeps what it had."""
        if self.importance is not None:
            v, flat = values.detach().float().cpu(), flat.cpu()
            ok = torch.isfinite(v)
            self.importance[flat[ok]] = torch.round(v[ok].clamp(0.0, 1.0) * 255.0).to(torch.uint8)

    def sample(self, n_rays: int, n_important: int = 0) -> Dict[str, torch.Tensor]:
        """``n_rays`` pixels: ``origins, dirs [R, 3]``, ``times [R]``, ``rgb [R, 3]``, ``alpha [R]`` (or
        absent), ``frame [R]``, ``rows``, ``cols``, ``flat`` (pixel index), and each of the split's ``extras``.

        The first ``n_important`` are drawn with probability proportional to the importance map (needs
        :meth:`enable_importance`), the rest uniformly."""
        h, w = self.split.height, self.split.width
        n_important = min(n_important, n_rays) if self.importance is not None else 0
        flat = torch.randint(0, self.n_pixels, (n_rays - n_important,), generator=self.gen).to(self.device)
        if n_important > 0:
            # inverse-CDF draw (torch.multinomial caps the number of categories at 2^24); a pixel's
            # weight is 1 + its importance in 0..255, so every pixel keeps a chance
            cdf = torch.cumsum(self.importance.to(torch.float64) + 1.0, 0)  # ~2 ms per million pixels
            u = torch.rand(n_important, generator=self.gen, dtype=torch.float64) * cdf[-1]
            imp = torch.searchsorted(cdf, u).clamp_max(self.n_pixels - 1)
            flat = torch.cat([imp.to(self.device), flat])
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
            "flat": flat,
        }
        if self.alphas is not None:
            batch["alpha"] = self.alphas[frame, rows, cols]
        for k, v in self.extras.items():
            batch[k] = v[frame, rows, cols]
        return batch


def _quantize(p: float) -> int:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"importance prior must be in [0, 1], got {p}")
    return int(round(p * 255.0))
