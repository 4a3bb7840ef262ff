"""Is a run's warped photometric objective minimised by the true motion?

On a synthetic scene (``tools/make_scene.py``), replace the run's kinematic field by the scene's exact
kinematics scaled by lambda (0 = nothing moves, 1 = the truth) and average the warped photometric losses
(discrete hops and intermediate times, the run's own KinematicObjective) and the hop warp's 3-D consistency
term (``kin_consistency_weight``) over fixed ray batches, for
several hop ranges, next to the loss of the run's own learned F_K. If the loss is lowest below lambda = 1,
the objective on this learned dynamic field is biased towards too little motion, whatever the optimiser
does; if the truth scores lower than the learned F_K, the optimiser stopped short of it.

    python bench/warp_bias.py RUN [--hops 2,6,11] [--scales 0,0.5,0.75,1,1.25] [--batches 12] [--rays 1024]

Prints one row per hop range: the losses (hop / inter / consistency) at each lambda, the learned F_K's, and
the lambdas that minimise them.
With ``--apparent``, first how far the learned dynamic field itself moves each object (the shift of its
density centroid in a fixed window around the true centre, between t - 1 and t + 1 frame) against the
true shift and the learned F_K's mean displacement there.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from kinfield.data import RayBatcher  # noqa: E402
from kinfield.data.synthetic import SyntheticSceneSpec, build_scene  # noqa: E402
from kinfield.fields.analytic import ExactKinematics  # noqa: E402
from kinfield.losses.kinematic import KinematicObjective  # noqa: E402
from kinfield.train.run import load_run  # noqa: E402
from kinfield.train.trainer import load_configured_scene  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--hops", default="2,6,11", help="hop maxima H (hops are 1 .. H-1 frames)")
    ap.add_argument("--scales", default="0,0.5,0.75,1,1.25,1.5")
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--rays", type=int, default=1024)
    ap.add_argument("--apparent", action="store_true", help="also print the field's apparent motion per object")
    args = ap.parse_args()
    run = load_run(args.run, device="cpu")
    meta_path = Path(run.cfg.data.scene) / "scene_meta.json"
    if not meta_path.is_file():
        raise SystemExit(f"error: {meta_path} not found: this needs a run on a synthetic scene (tools/make_scene.py)")
    spec = SyntheticSceneSpec.from_dict(json.loads(meta_path.read_text())["spec"])
    if spec.camera_mode != "random":
        raise SystemExit("error: forward-facing scenes train in a rescaled frame; use a D-NeRF-style synthetic scene")
    model = run.model
    learned = model.kinematic
    learned.set_active_orders(learned.order)
    spheres = build_scene(spec).moving
    if args.apparent:
        apparent_motion(model, spheres, 2 * learned.frame_dt.item())
    exact = ExactKinematics(spheres)
    scene = load_configured_scene(run.cfg.data)
    bg = scene.background.to(torch.float32)
    scales = [float(s) for s in args.scales.split(",")]
    print(f"{'hops':>8} | " + " | ".join(f"l={s:<5g} hop / inter / consistency" for s in scales)
          + " | learned F_K hop / inter / consistency | argmin hop, inter, consistency")
    for hop in (float(h) for h in args.hops.split(",")):
        kc = dataclasses.replace(run.cfg.kin, hop_max_start=hop, hop_max_end=hop, start=0)
        obj = KinematicObjective(kc, model, scene.frame_dt)
        rows = []
        for s in scales + [None]:
            if s is None:
                model.kinematic = learned
            else:
                model.kinematic, exact.scale = exact, s
            torch.manual_seed(0)  # same hops, same rays for every lambda
            batcher = RayBatcher(scene.split("train"), torch.device("cpu"), torch.Generator().manual_seed(0))
            hop_l = inter_l = con_l = 0.0
            with torch.no_grad():
                for _ in range(args.batches):
                    b = batcher.sample(args.rays)
                    render = model.render_rays(b["origins"], b["dirs"], b["times"], bg)
                    ctx = {"batch": b, "target": b["rgb"], "render": render, "render_background": bg,
                           "model": model, "step": 10**9}
                    hop_l += float(obj.photo_loss(ctx, "hop")) / args.batches
                    inter_l += float(obj.photo_loss(ctx, "inter")) / args.batches
                    con_l += float(obj.consistency_loss(ctx)) / args.batches
            rows.append((hop_l, inter_l, con_l))
        mine = rows.pop()
        best = [scales[min(range(len(scales)), key=lambda i: rows[i][k])] for k in range(3)]
        print(f"1..{int(hop) - 1:<5d} | " + " | ".join(" / ".join(f"{v:.5f}" for v in r) for r in rows)
              + " | " + " / ".join(f"{v:.5f}" for v in mine) + " | " + ", ".join(f"{b:g}" for b in best), flush=True)


@torch.no_grad()
def apparent_motion(model, spheres, span: float, n_times: int = 9, grid: int = 28) -> None:
    """Per object and time: the learned dynamic field's centroid shift over ``span`` vs the truth and F_K."""
    for s in spheres:
        print(f"{s.name}: shift over {span:.3f} time units (world units, x y z)")
        for t in np.linspace(0.1, 0.9, n_times):
            c = torch.tensor(s.center(np.array([t]))[0][0], dtype=torch.float32)
            g = torch.linspace(-1.6 * s.radius, 1.6 * s.radius, grid)
            pts = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) + c
            cents = []
            for tt in (t - span / 2, t + span / 2):
                sigma = model.dynamic.density(pts, torch.full((pts.shape[0],), float(tt))).clamp_min(0)
                cents.append((sigma[:, None] * pts).sum(0) / sigma.sum().clamp_min(1e-9))
            true = s.center(np.array([t + span / 2]))[0][0] - s.center(np.array([t - span / 2]))[0][0]
            near = pts[(pts - c).norm(dim=-1) <= s.radius]
            v = model.kinematics_at(near, torch.full((near.shape[0],), float(t)))["velocity"].mean(0) * span
            print(f"  t={t:.2f}  field {np.round((cents[1] - cents[0]).numpy(), 3)}  truth {np.round(true, 3)}"
                  f"  F_K {np.round(v.numpy(), 3)}")


if __name__ == "__main__":
    main()
