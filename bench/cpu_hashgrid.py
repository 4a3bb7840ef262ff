"""CPU speed of the PyTorch hash-grid encoding (forward + backward) on the shipped grids (a benchmark, not a test).

    python bench/cpu_hashgrid.py [--points 2304,32768] [--repeats 10]

For the dynamic, kinematic and static grids of configs/dnerf_cpu.yaml (time compressed as there), times
``hash_grid_encode`` forward + backward with its default strategy (dense levels through materialised volumes and
``grid_sample``) against the literal definition in the same run (every level by gathering its 2^D corners,
``volume_limit=0``), and prints milliseconds and the ratio, at each point count (a training step calls the grids at
a few thousand points, e.g. the physics probes, as well as at tens of thousands, the render).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.nn.hashgrid import HashGridConfig, level_layout  # noqa: E402
from kinfield.ops import hash_grid_encode  # noqa: E402

# name, dimension, grid, time compression (the last coordinate spans [0, time_scale]; 1 for the 3-D grid)
GRIDS = [
    ("dynamic", 4, HashGridConfig(8, 2, 19, 8, 1.35), 0.5),
    ("kinematic", 4, HashGridConfig(4, 4, 17, 4, 1.6), 0.25),
    ("static", 3, HashGridConfig(8, 2, 19, 16, 1.38), 1.0),
]


def time_encode(x, params, layout, n_features, volume_limit, repeats) -> float:
    """Mean milliseconds of one forward + backward."""
    scales, res, offsets, hashed = layout

    def once():
        params.grad = None
        hash_grid_encode(x, params, offsets, res, scales, hashed, n_features, volume_limit).sum().backward()

    once()
    t0 = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - t0) / repeats * 1e3


def main(argv) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", default="2304,32768", help="comma-separated point counts")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    counts = [int(n) for n in args.points.split(",")]
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'grid':<10} {'points':>7} {'default ms':>10} {'gather ms':>10} {'speed-up':>8}")
    for name, dim, cfg, time_scale in GRIDS:
        layout = level_layout(dim, cfg)
        params = (torch.randn(int(layout[2][-1]) * cfg.n_features_per_level) * 1e-2).requires_grad_(True)
        for n in counts:
            x = torch.rand(n, dim)
            x[:, -1] *= time_scale
            fast = time_encode(x, params, layout, cfg.n_features_per_level, 1 << 22, args.repeats)
            slow = time_encode(x, params, layout, cfg.n_features_per_level, 0, args.repeats)
            print(f"{name:<10} {n:>7} {fast:>10.1f} {slow:>10.1f} {slow / fast:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
