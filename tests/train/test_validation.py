"""Periodic validation during training (--train_val_every): logged scores, the training clock, split fallback."""
from __future__ import annotations

import json
import math
import shutil
import types
from pathlib import Path

import pytest
import torch

import kinfield.train.trainer as trainer_module
from kinfield.config import parse_train_args
from kinfield.data.synthetic import PRESETS, write_scene
from kinfield.train import Trainer
from kinfield.train.evaluate import quick_scores

DEBUG = Path(__file__).resolve().parents[2] / "configs" / "debug.yaml"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(PRESETS["tiny"], tmp_path_factory.mktemp("val") / "scene")


def _trainer(scene, out, *extra):
    cfg = parse_train_args([str(scene), str(DEBUG), "--out", str(out), "--device", "cpu", "--resume", "none",
                            "--iters", "6", "--train_log_every", "4", "--train_save_every", "100",
                            "--train_eval_split", "", *extra])
    return Trainer(cfg)


def _rows(out):
    """metrics.jsonl's rows merged per step (a validation writes its own row after the step's)."""
    rows = {}
    for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()):
        if "train_time_s" not in r:
            rows.setdefault(r.pop("step"), {}).update(r)
    return rows


def test_validation_scores_are_logged_at_their_steps_and_are_the_models(scene, tmp_path, caplog):
    tr = _trainer(scene, tmp_path / "run", "--train_val_every", "3", "--train_val_views", "2")
    with caplog.at_level("INFO", logger="kinfield"):
        tr.fit()
    rows = _rows(tmp_path / "run")
    assert sorted(rows) == [3, 4, 6]  # validation steps are logged even off the --train_log_every grid
    assert "val/psnr" not in rows[4]
    for s in (3, 6):
        assert math.isfinite(rows[s]["val/psnr"]) and 0 < rows[s]["val/ssim"] <= 1
    # the logged score is the model's on two evenly spaced val views (rendering is deterministic)
    assert rows[6]["val/psnr"] == pytest.approx(quick_scores(tr.model, tr.scene, "val", 2)["psnr"], abs=1e-9)
    assert "step 6: val PSNR" in caplog.text


def _fake_clock(monkeypatch, per_reading: float, per_validation: float) -> None:
    """The trainer's clock advances ``per_reading`` seconds at each reading and ``per_validation`` during each
    validation (which scores PSNR 10)."""
    clock = [1000.0]

    def now():
        clock[0] += per_reading
        return clock[0]

    def slow_scores(*args):
        clock[0] += per_validation
        return {"psnr": 10.0, "ssim": 0.5, "n_images": 1}

    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(time=now))
    monkeypatch.setattr(trainer_module, "quick_scores", slow_scores)


def test_validation_time_is_not_training_time(scene, tmp_path, monkeypatch):
    _fake_clock(monkeypatch, per_reading=0.001, per_validation=100.0)
    result = _trainer(scene, tmp_path / "run", "--train_val_every", "3").fit()
    rows = _rows(tmp_path / "run")
    assert rows[3]["val/psnr"] == 10.0 and rows[6]["val/psnr"] == 10.0
    # neither validation counts: the step-6 row is written before its own validation, after the one at step 3
    assert rows[4]["time_s"] < 1.0 and rows[6]["time_s"] < 1.0 and result["train_time_s"] < 1.0


def test_the_time_cap_counts_training_time_only(scene, tmp_path, monkeypatch):
    _fake_clock(monkeypatch, per_reading=1.0, per_validation=1000.0)
    # 0.1 min = 6 s of training: 5 steps at about a second each (one clock reading), validations left out
    _trainer(scene, tmp_path / "run", "--train_val_every", "2", "--train_max_minutes", "0.1", "--iters", "50",
             "--train_log_every", "100").fit()
    rows = _rows(tmp_path / "run")
    # (counting the validations, the cap would stop the run at step 3, the first after one); the step it stopped at
    # is logged although off the --train_log_every grid
    assert sorted(rows) == [2, 4, 5] and "loss" in rows[5] and "val/psnr" in rows[4]


def test_rerunning_a_run_the_time_cap_stopped_trains_no_further(scene, tmp_path, monkeypatch, caplog):
    """The same command again on a run the cap stopped (the README's "run again to resume") resumes it and, its
    training time being spent, trains no more steps (it trained one more each time)."""
    _fake_clock(monkeypatch, per_reading=1.0, per_validation=0.0)
    argv = ("--train_max_minutes", "0.1", "--iters", "50", "--train_log_every", "100")
    _trainer(scene, tmp_path / "run", *argv).fit()
    first = _rows(tmp_path / "run")
    caplog.clear()
    with caplog.at_level("WARNING", logger="kinfield"):
        result = _trainer(scene, tmp_path / "run", *argv, "--resume", "auto").fit()
    assert result["step"] == max(first) < 50 and _rows(tmp_path / "run") == first
    assert "reached --train_max_minutes 0.1; not training further" in caplog.text
    assert "stopped at step" not in caplog.text  # (said by the session that hit the cap, not again)


def test_a_run_the_time_cap_cut_short_says_so_last(scene, tmp_path, monkeypatch, caplog):
    """The cap's message comes after the progress bar is closed and names the steps left undone; the demo repeats
    it as its last words (its scores would otherwise read as those of a full run)."""
    import logging

    from kinfield.cli import _warn_if_cut_short

    _fake_clock(monkeypatch, per_reading=1.0, per_validation=0.0)
    with caplog.at_level("WARNING", logger="kinfield"):
        result = _trainer(scene, tmp_path / "run", "--train_max_minutes", "0.1", "--iters", "50").fit()
    assert f"stopped at step {result['step']} of 50: --train_max_minutes 0.1 reached" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="kinfield"):
        _warn_if_cut_short(tmp_path / "run", logging.getLogger("kinfield"))
    assert f"stopped at step {result['step']} of 50" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="kinfield"):  # a run that trained all its steps: nothing said
        _trainer(scene, tmp_path / "full", "--iters", "3").fit()
        _warn_if_cut_short(tmp_path / "full", logging.getLogger("kinfield"))
    assert "stopped at step" not in caplog.text


def test_a_scene_without_a_val_split_validates_on_the_eval_split_or_says_why_not(scene, tmp_path, caplog):
    copy = tmp_path / "scene"
    shutil.copytree(scene, copy)
    (copy / "transforms_val.json").unlink()
    tr = _trainer(copy, tmp_path / "run", "--train_val_every", "3", "--train_eval_split", "test")
    with caplog.at_level("INFO", logger="kinfield"):
        tr.fit()
    assert "no 'val' split: validating on 'test'" in caplog.text
    assert math.isfinite(_rows(tmp_path / "run")[3]["val/psnr"])
    (copy / "transforms_test.json").unlink()
    caplog.clear()
    tr = _trainer(copy, tmp_path / "run2", "--train_val_every", "3", "--train_eval_split", "test")
    with caplog.at_level("INFO", logger="kinfield"):
        tr.fit()
    assert "periodic validation off: the scene has no 'val' nor a 'test' split (it has: train)" in caplog.text
    assert not any("val/psnr" in r for r in _rows(tmp_path / "run2").values())
    caplog.clear()
    tr = _trainer(copy, tmp_path / "run3", "--train_val_every", "3")  # (--train_eval_split '')
    with caplog.at_level("INFO", logger="kinfield"):
        tr.fit()  # (no "nor a ''" for the eval split turned off)
    assert "periodic validation off: the scene has no 'val' split (it has: train)" in caplog.text


def test_scores_are_of_the_render_clamped_to_the_image_range():
    """Blended static + dynamic weights can add up past 1, and so the colour: the scores are those of the image as
    written (clamped to [0, 1]), not of the raw render."""
    from kinfield.train.evaluate import quick_scores

    gt = torch.ones(16, 16, 3)
    split = types.SimpleNamespace(num_frames=1, poses=[None], intrinsics=[None], height=16, width=16, times=[0.0], images=[gt])
    scene = types.SimpleNamespace(split=lambda name: split, background=torch.ones(3))

    class Overbright(torch.nn.Module):
        def render_image(self, *args, **kwargs):
            return {"rgb": torch.full((16, 16, 3), 1.2)}

    assert quick_scores(Overbright(), scene, "val", 1)["psnr"] == math.inf


def test_without_a_progress_bar_each_logged_step_is_a_log_line(scene, tmp_path, caplog):
    with caplog.at_level("INFO", logger="kinfield"):
        _trainer(scene, tmp_path / "run", "--train_progress", "false").fit()  # 6 steps, logged every 4 and at the end
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ") and "/6: loss" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["step 4/6", "step 6/6"] and "PSNR" in lines[0]
    caplog.clear()
    with caplog.at_level("INFO", logger="kinfield"):
        _trainer(scene, tmp_path / "bar", "--train_progress", "true").fit()
    assert not any("/6: loss" in r.getMessage() for r in caplog.records)  # the bar shows them


@pytest.mark.parametrize("iters, extra, warned", [(100_000, [], "11.6 days"), (100_000, ["--train_max_minutes", "60"], None),
                                                  (4_000, [], None), (5_000, [], "13.9 hours")])
def test_a_cpu_run_that_would_take_over_half_a_day_says_so_after_its_first_steps(scene, tmp_path, caplog, iters, extra,
                                                                                 warned):
    """At 10 s a step (steps 2-4; the first one warms up and is left out) the steps left take 11.6 days for 100,000 and
    13.9 hours for 5,000: a warning naming the CPU configs; not with a time cap under half a day, nor for 11.1 hours."""
    tr = _trainer(scene, tmp_path / "run", "--iters", str(iters), *extra)
    tr._note_long_run(1, 25.0)  # (the warm-up step took 25 s)
    tr._note_long_run(2, 35.0)
    tr._note_long_run(3, 45.0)
    assert "a step takes" not in caplog.text
    tr._note_long_run(4, 55.0)
    if warned is None:
        assert "a step takes" not in caplog.text
    else:
        assert f"on this CPU a step takes 10.0 s: the {iters} steps left would take about {warned}" in caplog.text
        assert "configs/*_cpu.yaml" in caplog.text and "--train_max_minutes" in caplog.text


def test_the_training_loop_reports_each_steps_count_and_time_for_the_pace_warning(scene, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(Trainer, "_note_long_run", lambda self, steps, seconds: calls.append((steps, seconds)))
    _trainer(scene, tmp_path / "run").fit()
    assert [c[0] for c in calls] == [1, 2, 3, 4, 5, 6]
    assert all(0 < a[1] <= b[1] for a, b in zip(calls, calls[1:]))
