"""End-to-end smoke test: ``tools/train.py`` on the tiny synthetic scene, as a user runs it."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import yaml

from kinfield.data.synthetic import PRESETS, write_scene

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "tools" / "train.py"
DEBUG = REPO / "configs" / "debug.yaml"


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    return write_scene(PRESETS["tiny"], tmp_path_factory.mktemp("tiny") / "scene")


def run_train(args, cwd):
    # run from an unrelated folder, without PYTHONPATH: the tool must find the package itself
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(TRAIN), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_train_tool_end_to_end(tiny_scene, tmp_path):
    out = tmp_path / "run"
    proc = run_train([tiny_scene, DEBUG, "--out", out, "--device", "cpu"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpts = sorted(p.name for p in (out / "ckpts").glob("ckpt_*.pt"))
    assert ckpts and ckpts[-1] == "ckpt_0000004.pt"  # debug.yaml: 4 iterations
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["step"] == 4
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["scene"] == str(tiny_scene) and cfg["iters"] == 4 and cfg["device"] == "cpu"
    img = iio.imread(out / "renders" / "test" / "000.png")
    assert img.shape[:2] == (16, 16)
    metrics = json.loads((out / "metrics.json").read_text())
    psnr = metrics["test"]["psnr"]
    assert isinstance(psnr, float) and math.isfinite(psnr) and psnr > 0
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])  # the result printed on stdout
    assert summary["step"] == 4


def test_missing_scene_exits_2_naming_the_path(tmp_path):
    missing = tmp_path / "no_such_scene"
    out = tmp_path / "run"
    proc = run_train([missing, DEBUG, "--out", out, "--device", "cpu"], cwd=tmp_path)
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "ckpts").exists()



def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    from kinfield.data.synthetic import PRESETS, write_scene

    scene = write_scene(PRESETS["tiny"], tmp_path / "scene")
    out = tmp_path / "run"
    cmd = [sys.executable, str(root / "tools" / "train.py"), str(scene), str(root / "configs" / "debug.yaml"),
           "--out", str(out), "--device", "cpu", "--iters", "100000", "--train_save_every", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:  # training has started
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    ckpts = sorted((out / "ckpts").glob("ckpt_*.pt"))
    assert ckpts and "interrupted" in err
    assert not list((out / "ckpts").glob("*.tmp"))
    step = int(ckpts[-1].stem.split("_")[1])
    # the same command, two steps further: it resumes from the interrupted step (not from scratch) and finishes
    resumed = subprocess.run(cmd[:-4] + ["--iters", str(step + 2), "--train_save_every", "100000",
                                         "--train_eval_split", ""], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {ckpts[-1]} at step {step}" in resumed.stderr
    assert (out / "ckpts" / f"ckpt_{step + 2:07d}.pt").is_file()


def test_motion_benches_run_on_a_tiny_run(tiny_scene, tmp_path):
    """``bench/warp_bias.py``: a row per hop range with the loss at each lambda, the learned F_K's, the argmin;
    the apparent motion and the local-flow rows per object. ``bench/speed_profile.py``: per object, a row of
    five normal-height bins and two rows of ring heights, each a finite ratio."""
    out = tmp_path / "run"
    assert run_train([tiny_scene, DEBUG, "--out", out, "--device", "cpu", "--train_eval_split", ""],
                     cwd=tmp_path).returncode == 0
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "warp_bias.py"), str(out), "--hops", "2,3",
                           "--scales", "0,1", "--batches", "1", "--rays", "64", "--apparent",
                           "--local-flow"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("1..")]
    assert len(rows) == 2 and all(len(r.split("|")) == 5 for r in rows)
    assert "ball: shift over" in proc.stdout and "top: shift over" in proc.stdout
    flow = [line.split() for line in proc.stdout.splitlines() if line.startswith(("  ball ", "  top "))]
    assert len(flow) == 2 and all(f[-3] == "argmin" and f[-2] in ("0,", "1,") and f[-1] in ("0", "1") for f in flow)
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "speed_profile.py"), str(out), "--times", "2",
                           "--points", "200"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("  ball ", "  top "))]
    assert len(rows) == 6 and sum("by normal z" in r for r in rows) == 2
    for r in rows:
        values = [float(v) for v in re.findall(r": (-?[0-9.]+|nan)", r)]
        assert values and all(math.isfinite(v) for v in values), r
    # bench/term_gradients.py: a row per active term, a finite norm per parameter group, the images train the fields
    ckpt = sorted((out / "ckpts").glob("ckpt_*.pt"))[-1]
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "term_gradients.py"), str(tiny_scene), str(DEBUG),
                           str(ckpt), "--batches", "1", "--device", "cpu"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    groups = lines[1].split()[1:]
    table = {r.split()[0]: [float(v) for v in r.split()[1:]] for r in lines[2:]}
    assert "dynamic.encoding" in groups and "rgb" in table
    assert all(len(v) == len(groups) and all(math.isfinite(x) for x in v) for v in table.values())
    assert table["rgb"][groups.index("dynamic.encoding")] > 0


def test_speed_ratio_is_the_projection_of_the_learned_on_the_true_velocity():
    """``bench/speed_profile.speed_ratio``: a field at 0.4x the exact motion (plus a perpendicular part,
    which the projection ignores) scores 0.4; the exact field 1."""
    import importlib.util

    import numpy as np
    import torch

    from kinfield.data.synthetic import build_scene

    spec = importlib.util.spec_from_file_location("speed_profile", REPO / "bench" / "speed_profile.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    top = [s for s in build_scene(PRESETS["tiny"]).moving if s.name == "top"][0]
    axis = np.asarray(top.omega) / np.linalg.norm(top.omega)

    class Scaled:
        def __init__(self, k):
            self.k = k

        def kinematics_at(self, x, t):
            p, v = x.numpy(), []
            for pi, ti in zip(p, t.numpy()):
                v.append(top.motion(pi[None], float(ti), np.array([float(ti)]))["velocity"][0, 0])
            v = np.asarray(v)
            return {"velocity": torch.tensor(self.k * v + 0.3 * axis[None] * np.abs(v).sum(-1, keepdims=True))}

    dirs = np.random.default_rng(0).normal(size=(50, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    pts = lambda t: top.center(np.array([t]))[0][0] + top.radius * dirs  # noqa: E731
    assert bench.speed_ratio(Scaled(0.4), top, pts, [0.2, 0.6]) == pytest.approx(0.4, abs=1e-5)
    assert bench.speed_ratio(Scaled(1.0), top, pts, [0.5]) == pytest.approx(1.0, abs=1e-5)


def test_out_of_range_dynamic_ray_fraction_is_a_clear_error(tiny_scene, tmp_path, capsys):
    from kinfield.cli import main_train

    code = main_train([str(tiny_scene), str(DEBUG), "--out", str(tmp_path / "r"), "--device", "cpu",
                       "--train_dynamic_ray_fraction", "1.5"])
    assert code == 2 and "--train_dynamic_ray_fraction must be in [0, 1]" in capsys.readouterr().err


def test_unknown_dynamic_ray_map_is_a_clear_error(tiny_scene, tmp_path, capsys):
    from kinfield.cli import main_train

    code = main_train([str(tiny_scene), str(DEBUG), "--out", str(tmp_path / "r"), "--device", "cpu",
                       "--train_dynamic_ray_map", "speed"])
    assert code == 2 and "--train_dynamic_ray_map must be probability or motion, got 'speed'" in capsys.readouterr().err


def test_step_ops_counts_the_steps_host_syncs(tiny_scene):
    """``bench/step_ops.py`` on the tiny scene with every term on: the step's host syncs stay within the budget
    (the sampler's step count and kept samples, the pruning, the warp and physics selections, one read-back of
    the logged scalars); a new ``.item()`` / ``float(t)`` / boolean-mask index in the step fails this. With
    the custom ops as one launch each, the step dispatches fewer ops than with their PyTorch twins."""
    def run(*extra):
        proc = subprocess.run([sys.executable, str(REPO / "bench" / "step_ops.py"), str(tiny_scene), str(DEBUG),
                               "--rays", "64", "--steps", "2", "--warmup", "2", "--sites", *extra],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        ops = float(re.search(r"aten ops per step: ([0-9.]+)", proc.stdout).group(1))
        syncs = float(re.search(r"host syncs per step: ([0-9.]+)", proc.stdout).group(1))
        return ops, syncs, proc.stdout

    ops, syncs, out = run()
    assert 0 < syncs <= 6, out
    assert "kinfield/losses/base.py" in out and "term integrity" in out  # the scalars' read-back; physics ran
    ops_twins, _, _ = run("--twins")
    assert ops_twins > ops > 100


def test_train_bench_prints_its_table_and_json(tiny_scene, tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_train.py"), str(tiny_scene), str(DEBUG),
                           "--iters", "4", "--eval-every", "2", "--eval-views", "2", "--out", str(out),
                           "--device", "cpu"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [r["step"] for r in rows] == [2, 4] and all(math.isfinite(r["test_psnr"]) for r in rows)
    assert re.search(r"^\s+4\s", proc.stdout, re.M)  # the table's last row


def test_oracle_motion_bench_runs_with_the_shipped_demo_config():
    """``bench/oracle_motion.py`` with its defaults (configs/demo.yaml, whose kinematic terms start at step 250): only
    F_K trains there, so the radiance-first schedule must not leave its first steps without a loss term."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "oracle_motion.py"), "--steps", "2", "--every", "1",
                           "--rays", "64", "--resolution", "16", "--frames", "8"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(re.findall(r"step +\d+  v rel err [0-9.]+", proc.stdout)) == 3, proc.stdout


def test_demo_tool_end_to_end(tmp_path):
    """The README's first command, on the debug config (4 steps): scene -> training -> videos -> scores -> figures."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "demo.py"), "--scene", str(tmp_path / "scene"),
                           "--config", str(DEBUG), "--out", str(run), "--device", "cpu"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "scene" / "motion_gt.npz").is_file()
    for name in ("rgb", "depth", "velocity"):
        assert len(list((run / "videos").glob(f"orbit_{name}.*"))) == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(metrics["test"]["psnr"]) and math.isfinite(metrics["motion"]["epe_mean"])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "figures skipped" in proc.stderr
    else:
        assert {p.name for p in (run / "plots").glob("*.png")} >= {"training.png", "test_views.png", "motion_epe.png"}
    # 4 steps may leave no visible moving content to seed tracks from: then the demo says so and goes on
    assert (run / "motion" / "tracks.npz").is_file() or "no 3-D tracks exported" in proc.stderr
    # running the command again (the README's first command, twice) resumes the finished run and replaces its own
    # videos and tracks
    again = subprocess.run(proc.args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already written" not in again.stderr
