"""Cost of drawing a batch's important rays from the per-pixel importance map, kinfield's draw (by blocks of 256
pixels; one pass on maps of at most draws x 256 pixels) against one inverse-CDF search over every pixel (the draw
before), at the map sizes of the shipped configs.

    python bench/importance_draw.py [--pixels 163840,1500000,24000000,96000000] [--draws 3072] [--repeats 5]

The default sizes: the demo scene (40 frames of 64x64), D-NeRF standup at 1/8 (150 x 100x100, dnerf_cpu.yaml),
1/2 (dnerf.yaml) and full resolution (the GPU benchmark). Prints the median milliseconds of a draw plus the map
update of one step (``--draws`` pixels), both ways, and checks that both draw the same pixels.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.data import RayBatcher  # noqa: E402


def _batcher(n_pixels: int, seed: int) -> RayBatcher:
    """A batcher without a split: only its importance map is exercised."""
    b = RayBatcher.__new__(RayBatcher)
    b.n_pixels, b.gen, b._blocks, b._block_weight = n_pixels, torch.Generator().manual_seed(seed), None, None
    return b


def global_draw(importance: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    cdf = torch.cumsum(importance.to(torch.float64) + 1.0, 0)
    u = torch.rand(n, generator=gen, dtype=torch.float64) * cdf[-1]
    return torch.searchsorted(cdf, u).clamp_max(importance.numel() - 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pixels", default="163840,1500000,24000000,96000000")
    p.add_argument("--draws", type=int, default=3072)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {a.draws} draws + one update per step")
    print(f"{'pixels':>12s} {'global ms':>10s} {'kinfield ms':>11s} {'speed-up':>9s}  same pixels")
    for n in (int(v) for v in a.pixels.split(",")):
        b = _batcher(n, 0)
        b.enable_importance(0.0)
        g = torch.Generator().manual_seed(1)
        b.update_importance(torch.randint(0, n, (n // 10,), generator=g), torch.rand(n // 10, generator=g))
        old, new, same = [], [], True
        for _ in range(a.repeats):
            flat = torch.unique(torch.randint(0, n, (a.draws,), generator=g))  # (a pixel written twice: either value)
            values = torch.rand(flat.shape[0], generator=g)
            state = b.gen.get_state()
            before = b.importance.clone()
            t0 = time.perf_counter()
            expect = global_draw(before, torch.Generator().set_state(state), a.draws)
            before[flat] = torch.round(values * 255.0).to(torch.uint8)  # the update as it was: one write
            old.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            drawn = b._draw_important(a.draws)
            b.update_importance(flat, values)
            new.append(time.perf_counter() - t0)
            same &= torch.equal(drawn, expect) and torch.equal(b.importance, before)
        mo, mn = statistics.median(old) * 1e3, statistics.median(new) * 1e3
        print(f"{n:12,d} {mo:10.2f} {mn:11.2f} {mo / mn:8.1f}x  {same}")


if __name__ == "__main__":
    main()
