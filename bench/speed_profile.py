"""Where the learned motion is slow: the kinematic field's speed against the exact one, per moving object of a
synthetic scene, binned by the surface normal's height and along vertical lines from the object down to the ground.

    python bench/speed_profile.py RUN_DIR [--times 9] [--points 2000]

Prints, per object, the speed ratio (the learned velocity projected on the true one, summed over the points:
1 is exact, 0 is still) at its true surface points in five bins of the outward normal's z component, then along
rings (half and full radius, 64 points) at heights from above the object's centre down to the ground plane,
against the object's rigid motion extended there (the ground is static: the field must drop to zero between).
On the demo scene this showed the spinning top's velocity fading linearly from its equator to the ground 0.2
below its bottom (bench/RESULTS.md "Motion").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.data.synthetic import GroundSquare, build_scene, spec_of_scene  # noqa: E402
from kinfield.train.run import load_run  # noqa: E402

NZ_BINS = (-1.0, -0.6, -0.2, 0.2, 0.6, 1.0001)


def speed_ratio(model, sphere, points_at, times) -> float:
    """Sum over times of <v_learned, v_true> / sum of |v_true|^2 at ``points_at(t) [N, 3]`` (world)."""
    num = den = 0.0
    for t in times:
        p = points_at(t)
        true = sphere.motion(p, t, np.array([t]))["velocity"][0]
        with torch.no_grad():
            v = model.kinematics_at(torch.tensor(p, dtype=torch.float32),
                                    torch.full((len(p),), float(t)))["velocity"].numpy()
        num += float((v * true).sum())
        den += float((true * true).sum())
    return num / max(den, 1e-12)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--times", type=int, default=9, help="times in [0.1, 0.9] averaged over")
    ap.add_argument("--points", type=int, default=2000, help="surface points per object and time")
    args = ap.parse_args()
    run = load_run(args.run, device="cpu", checkpoint=args.checkpoint)
    try:
        scene = build_scene(spec_of_scene(run.cfg.data.scene, world_frame=True))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    ground = next((s.height for s in scene.static if isinstance(s, GroundSquare)), None)
    model = run.model
    model.kinematic.set_active_orders(model.kinematic.order)
    times = np.linspace(0.1, 0.9, args.times)
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(args.points, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    phi = np.linspace(0.0, 2 * np.pi, 64, endpoint=False)
    ring = np.stack([np.cos(phi), np.sin(phi), np.zeros_like(phi)], axis=-1)
    print(f"{run.run_dir} step {run.step}: learned speed / true speed")
    for sphere in scene.moving:
        r = float(sphere.radius)

        def centre(t):
            return sphere.center(np.array([t]))[0][0]

        cells = []
        for lo, hi in zip(NZ_BINS[:-1], NZ_BINS[1:]):
            d = dirs[(dirs[:, 2] >= lo) & (dirs[:, 2] < hi)]
            cells.append(f"nz {lo:+.1f}..{min(hi, 1.0):+.1f}: {speed_ratio(model, sphere, lambda t: centre(t) + r * d, times):.2f}")
        print(f"  {sphere.name} surface by normal z  " + "  ".join(cells))
        c0 = centre(float(times[len(times) // 2]))
        bottom = ground if ground is not None else c0[2] - 2 * r
        heights = np.unique(np.round(np.concatenate([c0[2] + r * np.array([1.0, 0.5, 0.0, -0.5, -1.0]),
                                                     np.linspace(c0[2] - r, bottom, 4)]), 3))[::-1]
        for frac in (0.5, 1.0):
            cells = []
            for z in heights:
                pts = lambda t: centre(t) + frac * r * ring + np.array([0.0, 0.0, z - c0[2]])  # noqa: E731
                cells.append(f"z {z:+.2f}: {speed_ratio(model, sphere, pts, times):.2f}")
            print(f"  {sphere.name} ring at {frac:.1f} r by height  " + "  ".join(cells))
    if ground is not None:
        print(f"  (ground plane at z {ground:+.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
