"""Full training step time on one GPU: CUDA kernels (+ nerfacc when installed) against the pure-PyTorch path.

    python bench/gpu_train_step.py SCENE CONFIG [--steps 40] [--warmup 30] [--option value ...]

Both paths run the same model and the same fixed ray count: the config's initial ``train_rays``, or with
``--settle`` the count the config's sample-count controller reaches during the warm-up (then frozen). Every loss term
is active (physics and normals from step 0), so the step includes the kinematic field's warps and
finite-difference probes. The torch path forces every op to its twin (``kinfield.ops.use_backend``) and
the occupancy sampler to its PyTorch implementation. Prints median step milliseconds and the ratio.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import kinfield.ops as ops  # noqa: E402
from kinfield import _external  # noqa: E402
from kinfield.config import parse_train_args  # noqa: E402
from kinfield.train import Trainer  # noqa: E402


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_steps(trainer, n):
    times = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        trainer.train_step()
        trainer.step += 1
        sync()
        times.append(1000 * (time.perf_counter() - t0))
    return sorted(times)[len(times) // 2]


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scene")
    p.add_argument("config")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--json", default=None)
    p.add_argument("--settle", action="store_true", help="time at the ray count the sample target settles at")
    p.add_argument("--rays-list", default="", help="comma-separated fixed ray counts to sweep (e.g. 1024,4096,16384)")
    p.add_argument("--profile", type=int, default=0, help="also profile this many kernel-path steps (torch.profiler)")
    a, rest = p.parse_known_args(argv)
    # (--kin_start 0: the shipped configs start the kinematic part at step 250, after the timed steps)
    always_on = ["--kin_start", "0", "--kin_physics_start", "0", "--kin_normal_start", "0",
                 "--kin_unlock_acceleration", "0", "--kin_unlock_jerk", "0"]
    if not a.settle:
        always_on += ["--train_target_samples", "0"]
    if torch.cuda.is_available():
        always_on += ["--device", "cuda"]  # (a CPU run of this script only checks that it works)
    cfg = parse_train_args([a.scene, a.config, "--resume", "none", "--train_progress", "false", "--out",
                            "/tmp/kinfield_bench_step"] + always_on + rest)
    trainer = Trainer(cfg)
    occ = trainer.model.occupancy
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    time_steps(trainer, a.warmup)  # occupancy grid past its warm-up, caches and allocator settled
    trainer.cfg.train.target_samples = 0  # freeze the ray count
    print(f"# {dev}, torch {torch.__version__}; kernels: {ops.cuda_available()}; {trainer.n_rays} rays/step")
    active = [t.name for t in trainer.terms if t.weight_at(trainer.step) > 0]
    print(f"# loss terms in the timed steps: {', '.join(active)}")
    sweep = [int(r) for r in a.rays_list.split(",") if r] or [trainer.n_rays]
    rows = {}
    for n_rays in sweep:
        trainer.n_rays = n_rays
        res = {}
        try:
            for label in ("kernels", "torch", "kernels"):  # kernels twice: the spread of one path
                occ.cfg.backend = "auto" if label == "kernels" else "torch"
                with ops.use_backend("auto" if label == "kernels" else "torch"):
                    res.setdefault(label, []).append(time_steps(trainer, a.steps))
        except torch.OutOfMemoryError:
            print(f"{n_rays:>7} rays: out of GPU memory")
            torch.cuda.empty_cache()
            continue
        k = min(res["kernels"])
        rows[n_rays] = {"torch_ms": res["torch"][0], "kernels_ms": k,
                        "kernels_spread_ms": abs(res["kernels"][0] - res["kernels"][1]), "speedup": res["torch"][0] / k}
        r = rows[n_rays]
        print(f"{n_rays:>7} rays: torch {r['torch_ms']:8.1f} ms  kernels {k:8.1f} ms (repeat spread "
              f"{r['kernels_spread_ms']:.1f})  speed-up {r['speedup']:.2f}x", flush=True)
    occ.cfg.backend = "auto"
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with profile(activities=acts) as prof:
            time_steps(trainer, a.profile)
        key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25))
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15))
    if a.json:
        Path(a.json).write_text(json.dumps({"device": dev, "torch": torch.__version__, "kernels": ops.load_extension()[1],
                                            "nerfacc": _external.reason("nerfacc") if torch.cuda.is_available() else "CPU",
                                            "terms": active, "rows_by_rays_per_step": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
