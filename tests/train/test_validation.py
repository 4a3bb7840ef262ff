"""Periodic validation during training (--train_val_every): logged scores, the training clock, split fallback."""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest

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
    return {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


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


def test_validation_time_is_not_training_time(scene, tmp_path, monkeypatch):
    def slow_scores(*args):
        time.sleep(0.6)
        return {"psnr": 10.0, "ssim": 0.5, "n_images": 1}

    monkeypatch.setattr(trainer_module, "quick_scores", slow_scores)
    tr = _trainer(scene, tmp_path / "run", "--train_val_every", "3")
    t0 = time.time()
    result = tr.fit()
    wall = time.time() - t0
    assert result["train_time_s"] <= wall - 1.2  # both validations' sleeps are left out
    assert _rows(tmp_path / "run")[6]["time_s"] <= wall - 1.2


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
    tr = _trainer(copy, tmp_path / "run2", "--train_val_every", "3")
    with caplog.at_level("INFO", logger="kinfield"):
        tr.fit()
    assert "periodic validation off" in caplog.text and "val/psnr" not in _rows(tmp_path / "run2").get(3, {})
