#!/usr/bin/env python
"""Write a synthetic dynamic scene (D-NeRF format + exact motion GT) into OUT_DIR.

Examples::

    python tools/make_scene.py assets/demo_scene --preset demo --seed 0 --resolution 64
    python tools/make_scene.py data/forward --preset forward --format nsff     # forward-facing rig, NSFF layout
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

try:
    import kinfield  # noqa: F401
except ImportError:  # running from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.cli import _user_errors  # noqa: E402
from kinfield.config import ToolParser  # noqa: E402
from kinfield.data.synthetic import CAMERA_MODES, PRESETS, write_nsff_scene, write_scene  # noqa: E402


@_user_errors(out="OUT_DIR")  # (an OUT_DIR that cannot be written: one error line naming it, no traceback)
def main(argv=None) -> int:
    ap = ToolParser("tools/make_scene.py", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path, help="output folder (must be empty unless --overwrite)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                    help="what moves: projectile (a thrown ball), both (a thrown ball that spins), spin (a sphere spinning in "
                         "place), pulse (a spinning sphere that grows and shrinks), demo (a thrown spinning ball and a "
                         "spinning top); forward / forward_tiny: a forward-facing rig; tiny: the tests' 16x16 fixture")
    ap.add_argument("--seed", type=int, default=None, help="camera seed (default: the preset's)")
    ap.add_argument("--resolution", type=int, default=None, help="image width = height in pixels (default: the preset's)")
    ap.add_argument("--n-train", type=int, default=None, help="training frames, one time each (default: the preset's)")
    ap.add_argument("--n-val", type=int, default=None, help="validation views (default: the preset's)")
    ap.add_argument("--n-test", type=int, default=None, help="test views (default: the preset's)")
    ap.add_argument("--supersample", type=int, default=None, help="s: s x s samples averaged per pixel (default: the preset's)")
    ap.add_argument("--query-time", type=float, default=None,
                    help="time in [0, 1] at which motion_gt.npz's query points are sampled (default: the preset's)")
    ap.add_argument("--n-query", type=int, default=None, help="ground-truth query points per moving object (default: the preset's)")
    ap.add_argument("--camera-mode", choices=CAMERA_MODES, default=None,
                    help="random: cameras all around; forward: forward-facing rig (default: the preset's; "
                         "forward with --format nsff)")
    ap.add_argument("--n-rig", type=int, default=None, help="forward mode: number of rig cameras (default: the preset's)")
    ap.add_argument("--format", choices=["dnerf", "nsff"], default="dnerf",
                    help="dnerf: transforms_*.json + RGBA PNGs; nsff: images/, poses_bounds.npy, flow_i1/, "
                         "motion_masks/, mv_images/, rig_poses.npy ... (forward mode only)")
    ap.add_argument("--no-flow", action="store_true", help="nsff: leave out flow_i1/")
    ap.add_argument("--overwrite", action="store_true", help="replace a scene already in OUT_DIR")
    args = ap.parse_args(argv)

    overrides = {
        "seed": args.seed, "resolution": args.resolution, "n_train": args.n_train,
        "n_val": args.n_val, "n_test": args.n_test, "supersample": args.supersample,
        "query_time": args.query_time, "n_query_per_object": args.n_query, "n_rig": args.n_rig,
        "camera_mode": args.camera_mode or ("forward" if args.format == "nsff" else None),
    }
    spec = dataclasses.replace(PRESETS[args.preset], **{k: v for k, v in overrides.items() if v is not None})
    t0 = time.perf_counter()
    try:
        if args.format == "nsff":
            out = write_nsff_scene(spec, args.out_dir, overwrite=args.overwrite, flow=not args.no_flow)
        else:
            out = write_scene(spec, args.out_dir, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {spec.preset} scene ({spec.camera_mode} cameras, {args.format} format) to {out} "
          f"in {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
