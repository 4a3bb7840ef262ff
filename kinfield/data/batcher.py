"""Random ray batches over every pixel of a split (each ray keeps its own frame time), optionally with
part of each batch drawn where a per-pixel importance map (e.g. the dynamic probability) is high."""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..geometry import pixel_rays
from .scene import SceneSplit

# pixels per block of the importance map (draw cost ~ pixels / K + draws * K: 256 suits 10^5..10^8 pixels and
# ~10^3 draws)
IMPORTANCE_BLOCK = 256


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

        # importance of each pixel, 0..255 (uint8: one byte per training pixel, on the CPU like ``gen``), in blocks
        # of IMPORTANCE_BLOCK pixels (the last one padded) with each block's summed draw weight kept up to date, so
        # that a draw costs O(blocks + draws * IMPORTANCE_BLOCK), not a pass over every pixel; None until enabled
        self._blocks: Optional[torch.Tensor] = None  # [B, K] uint8
        self._block_weight: Optional[torch.Tensor] = None  # [B] int64: sum of the block's pixel weights

    @property
    def importance(self) -> Optional[torch.Tensor]:
        """``[P]`` uint8 importance of each training pixel (0..255; a view: write through :meth:`update_importance`
        or :meth:`load_importance`), or None before :meth:`enable_importance`."""
        return None if self._blocks is None else self._blocks.view(-1)[: self.n_pixels]

    def enable_importance(self, prior: float) -> None:
        """Start an importance map with every pixel at ``prior`` in [0, 1] (no-op if one exists)."""
        if self._blocks is None:
            n_blocks = -(-self.n_pixels // IMPORTANCE_BLOCK)
            self._blocks = torch.zeros(n_blocks, IMPORTANCE_BLOCK, dtype=torch.uint8)  # the padding stays 0
            self.importance.fill_(_quantize(prior))
            self._recount()

    def load_importance(self, saved: torch.Tensor) -> None:
        """Replace the map with ``saved [P]`` (a checkpoint's; values 0..255)."""
        self.importance.copy_(saved.cpu())
        self._recount()

    def update_importance(self, flat: torch.Tensor, values: torch.Tensor) -> None:
        """Record ``values [R]`` in [0, 1] at the pixels ``flat [R]`` (the batch's ``flat`` indices); a pixel whose
        value is not finite (a step that went wrong) keeps what it had."""
        if self._blocks is not None:
            v, flat = values.detach().float().cpu(), flat.cpu()
            ok = torch.isfinite(v)
            flat = flat[ok]
            pixels = torch.unique(flat)  # (a pixel given twice keeps one of its values)
            before = self.importance[pixels].long()
            self.importance[flat] = torch.round(v[ok].clamp(0.0, 1.0) * 255.0).to(torch.uint8)
            self._block_weight.index_add_(0, pixels // IMPORTANCE_BLOCK, self.importance[pixels].long() - before)

    def _recount(self) -> None:
        """Every block's summed weight from the map (in slices: the int64 copy of a whole map would be 8 bytes a pixel)."""
        per = 1 << 16
        self._block_weight = torch.cat([chunk.sum(1, dtype=torch.int64) for chunk in self._blocks.split(per)])
        self._block_weight += IMPORTANCE_BLOCK
        self._block_weight[-1] -= self._blocks.numel() - self.n_pixels  # the padding weighs nothing

    def _weights(self, blocks: torch.Tensor) -> torch.Tensor:
        """Draw weights ``[n, K]`` int64 of the pixels of ``blocks [n]``: 1 + importance (so that every pixel keeps
        a chance), 0 for the padding past the last pixel."""
        w = self._blocks[blocks].long() + 1
        pad = self._blocks.numel() - self.n_pixels
        if pad:
            w[:, IMPORTANCE_BLOCK - pad:] -= (blocks == self._blocks.shape[0] - 1).long()[:, None]
        return w

    def _draw_important(self, n: int) -> torch.Tensor:
        """``n`` pixels ``[n]`` (CPU int64) drawn with probability proportional to their weight.

        Inverse-CDF draw (torch.multinomial caps the number of categories at 2^24) in two levels: the block whose
        running weight first reaches ``u``, then the pixel within it; the sums are integers, so ``sum >= u`` is
        ``sum >= ceil(u)``, exact. The same pixels, for the same generator state, as one search of the running
        weight of every pixel, which small maps (at most ``n * K`` pixels) still use: a pass over the whole map
        costs ~14 ms at 1.5 M pixels and ~0.26 s at 24 M on a 2-core CPU (bench/importance_draw.py)."""
        u = torch.rand(n, generator=self.gen, dtype=torch.float64)
        if self.n_pixels <= n * IMPORTANCE_BLOCK:  # a pass over the whole map costs less than the blocks' reads
            running = torch.cumsum(self.importance.long() + 1, 0)
            return torch.searchsorted(running, torch.ceil(u * running[-1].double()).long()).clamp_max(self.n_pixels - 1)
        ends = torch.cumsum(self._block_weight, 0)  # [B]
        u = torch.ceil(u * ends[-1].double()).long()
        block = torch.searchsorted(ends, u).clamp_max(ends.shape[0] - 1)
        within = torch.cumsum(self._weights(block), 1) + (ends - self._block_weight)[block, None]  # [n, K] running
        pixel = torch.searchsorted(within, u[:, None])[:, 0].clamp_max(IMPORTANCE_BLOCK - 1)
        return (block * IMPORTANCE_BLOCK + pixel).clamp_max(self.n_pixels - 1)

    def sample(self, n_rays: int, n_important: int = 0) -> Dict[str, torch.Tensor]:
        """``n_rays`` pixels: ``origins, dirs [R, 3]``, ``times [R]``, ``rgb [R, 3]``, ``alpha [R]`` (or
        absent), ``frame [R]``, ``rows``, ``cols``, ``flat`` (pixel index), and each of the split's ``extras``.

        The first ``n_important`` are drawn with probability proportional to the importance map (needs
        :meth:`enable_importance`), the rest uniformly."""
        h, w = self.split.height, self.split.width
        n_important = min(n_important, n_rays) if self._blocks is not None else 0
        flat = torch.randint(0, self.n_pixels, (n_rays - n_important,), generator=self.gen).to(self.device)
        if n_important > 0:
            flat = torch.cat([self._draw_important(n_important).to(self.device), flat])
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
