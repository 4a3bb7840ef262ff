"""Training throughput and test PSNR against wall time (a benchmark, not a test).

    python bench/bench_train.py SCENE CONFIG [--eval-every 200] [--eval-views 5] [--json FILE] [--option value ...]

Trains with the given config and, every ``--eval-every`` steps, renders ``--eval-views`` test views
(time spent evaluating is excluded from the training clock). Prints a table of step, training wall
time, rays/s, samples/s and test PSNR, and writes it as JSON to ``RUN_DIR/bench.json`` (and ``--json``) after
every evaluation, so that a run cut off keeps its rows. Which kernels and which marching ran is printed and
recorded; nerfacc's CUDA code is loaded (or built) before the clock starts.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from kinfield import _external, ops  # noqa: E402
from kinfield.config import parse_train_args  # noqa: E402
from kinfield.train import Trainer  # noqa: E402
from kinfield.train.evaluate import quick_scores  # noqa: E402


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scene")
    p.add_argument("config")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-views", type=int, default=5)
    p.add_argument("--json", default=None, help="also write the table here")
    args, rest = p.parse_known_args(argv)
    cfg = parse_train_args([args.scene, args.config, "--resume", "none", "--train_progress", "false"] + rest)
    trainer = Trainer(cfg)
    split = "test" if "test" in trainer.scene.splits else "train"
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    train_clock = rays = samples = 0.0
    backends = {"kernels": ops.load_extension()[1] if trainer.device.type == "cuda" else "CPU: PyTorch twins",
                "nerfacc": _external.reason("nerfacc") if trainer.device.type == "cuda" else "CPU: PyTorch sampler"}
    print(f"# {args.scene} with {args.config}: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {trainer.device}; kernels: {backends['kernels']}; nerfacc: {backends['nerfacc']}")
    outputs = [trainer.run_dir / "bench.json"] + ([Path(args.json)] if args.json else [])
    print(f"{'step':>6} {'train_s':>8} {'rays/s':>8} {'samples/s':>10} {'test_psnr':>9}")
    while trainer.step < cfg.train.iters:
        t0 = time.perf_counter()
        logs = trainer.train_step()
        trainer.step += 1
        train_clock += time.perf_counter() - t0
        rays += logs.get("rays", 0.0)
        samples += logs.get("samples", 0.0)
        if trainer.step % args.eval_every == 0 or trainer.step == cfg.train.iters:
            with torch.no_grad():
                val = quick_scores(trainer.model, trainer.scene, split, args.eval_views, with_ssim=False)["psnr"]
            row = {"step": trainer.step, "train_s": round(train_clock, 1), "rays_per_s": round(rays / train_clock),
                   "samples_per_s": round(samples / train_clock), "test_psnr": round(val, 2)}
            rows.append(row)
            print(f"{row['step']:>6} {row['train_s']:>8} {row['rays_per_s']:>8} {row['samples_per_s']:>10} {row['test_psnr']:>9}",
                  flush=True)
            table = json.dumps({"scene": args.scene, "config": args.config, "device": str(trainer.device),
                                **backends, "rows": rows}, indent=2)
            for path in outputs:
                path.write_text(table)
            if cfg.train.max_minutes > 0 and train_clock > 60 * cfg.train.max_minutes:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
