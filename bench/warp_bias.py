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
With ``--local-flow``, also whether the dynamic field's local derivatives carry the motion: around each
object's surface, the normal-flow error of the exact displacement per frame x lambda against the field's
own density and colour (``kinfield.losses.physics.density_flow_residual``; probes of ``--flow-cells``
finest cells and ``--flow-frames`` frames). If it is lowest below lambda = 1, a field that fades between
times rather than moving would teach any local (differential) motion term too little motion.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from kinfield.data import RayBatcher  # noqa: E402
from kinfield.data.synthetic import build_scene, spec_of_scene  # noqa: E402
from kinfield.fields.analytic import ExactKinematics  # noqa: E402
from kinfield.losses.kinematic import KinematicObjective  # noqa: E402
from kinfield.losses.physics import central_differences, density_flow_residual  # noqa: E402
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
    ap.add_argument("--local-flow", action="store_true", help="also print the normal-flow error per object vs lambda")
    ap.add_argument("--flow-cells", type=float, default=0.3, help="--local-flow spatial probe (finest cells)")
    ap.add_argument("--flow-frames", type=float, default=0.05, help="--local-flow time probe (frames)")
    args = ap.parse_args()
    run = load_run(args.run, device="cpu")
    try:
        spec = spec_of_scene(run.cfg.data.scene, world_frame=True)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    model = run.model
    learned = model.kinematic
    learned.set_active_orders(learned.order)
    spheres = build_scene(spec).moving
    if args.apparent:
        apparent_motion(model, spheres, 2 * learned.frame_dt.item())
    exact = ExactKinematics(spheres)
    scales = [float(s) for s in args.scales.split(",")]
    if args.local_flow:
        local_flow(model, exact, spheres, scales, args.flow_cells * model.dynamic_finest_cell(),
                   args.flow_frames * learned.frame_dt.item())
    scene = load_configured_scene(run.cfg.data)
    bg = scene.background.to(torch.float32)
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


@torch.no_grad()
def local_flow(model, exact, spheres, scales, eps_x: float, eps_t: float, n: int = 3000) -> None:
    """Per object: the normal-flow error (density / colour) of the exact motion x lambda on the learned field,
    at ``n`` points within 0.6-1.3 radii of the centre at random times (density > 1, one fixed view point)."""
    dt = exact.frame_dt.item()
    print(f"local flow (normal-flow error, world units^2, density / colour; probes {eps_x:.4f} world, "
          f"{eps_t / dt:.2f} frames)")
    gen = torch.Generator().manual_seed(0)
    for s in spheres:
        t = torch.rand(n, generator=gen) * 0.9 + 0.05
        c = torch.as_tensor(s.center(t.double().numpy())[0], dtype=torch.float32)
        u = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
        x = c + u * s.radius * (0.6 + 0.7 * torch.rand(n, 1, generator=gen))
        view = torch.nn.functional.normalize(x - torch.tensor([2.0, 2.0, 3.0]), dim=-1)

        def fn(px, pt):
            sigma, rgb = model.dynamic(px, pt, view.repeat(9, 1))
            return torch.cat([sigma[:, None], rgb], dim=-1)

        d = central_differences(fn, x, t, eps_x, eps_t)
        valid = d["value"][:, 0] > 1.0
        v = exact(x, t)[:, 0]
        row = []
        for lam in scales:
            disp = lam * v * dt
            den = density_flow_residual(d["value"][:, 0], d["dt"][:, 0], d["grad"][:, 0], disp, dt, valid)
            col = sum(density_flow_residual(torch.zeros_like(t), d["dt"][:, k], d["grad"][:, k], disp, dt, valid)
                      for k in (1, 2, 3)) / 3
            row.append((float(den), float(col)))
        best = [scales[min(range(len(scales)), key=lambda i: row[i][k])] for k in (0, 1)]
        print(f"  {s.name:<6} ({int(valid.sum())} points) " + " | ".join(
            f"l={lam:g} {a:.2e} / {b:.2e}" for lam, (a, b) in zip(scales, row))
            + f" | argmin {best[0]:g}, {best[1]:g}", flush=True)


if __name__ == "__main__":
    main()
