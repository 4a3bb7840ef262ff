"""tools/plot.py: figures from the files the other tools write (training log, per-view scores, motion error,
exported tracks), and its handling of resumed, killed and missing runs."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from kinfield.cli import _write_columns, main_plot  # noqa: E402
from kinfield.motion.export import load_tracks, write_trajectories  # noqa: E402
from kinfield.plots import PlotError, plot_run, read_training_log, smooth  # noqa: E402
from kinfield.train.logger import MetricsLogger  # noqa: E402


def _run_folder(root, resumed=True):
    """A run folder as tools/train.py, eval.py, eval_motion.py and export_trajectories.py leave it."""
    run = root / "run"
    logger = MetricsLogger(run, tensorboard=False)
    for step in range(50, 501, 50):
        logs = {"loss": 1.0 / step, "psnr": 10 + step / 50, "loss/rgb": 0.5 / step, "rays": 512.0,
                "samples": 30000.0, "lr": 0.01 * 0.99**step, "time_s": step * 0.3}
        if step >= 300:
            logs["loss/integrity"] = 0.0 if step == 300 else 1e-6
            logs["physics_points"] = 0.0 if step == 300 else 256.0
        logger.log(step, logs)
        if step == 400:
            logger.log(step, {"val/psnr": 20.0, "val/ssim": 0.7})  # a validation's own row
    if resumed:  # killed after step 500, resumed from the checkpoint of step 400: steps 450, 500 logged again
        with (run / "metrics.jsonl").open("a") as f:
            f.write('{"step": 450, "loss": 0.5, "psnr"')  # the line being written when the run was killed
            f.write("\n")
        for step in (450, 500):
            logger.log(step, {"loss": float("nan"), "psnr": 99.0, "loss/rgb": 1e-3, "rays": 512.0, "samples": 1.0,
                              "lr": 1e-3, "time_s": 200.0})
    logger.log(500, {"train_time_s": 160.0})
    (run / "metrics.json").write_text(json.dumps({"test": {"psnr": 21.5, "ssim": 0.8, "step": 500}}))
    (run / "metrics_test.csv").write_text("index,file,time,psnr,ssim,lpips\n0,a.png,0.5,20,0.8,0.1\n"
                                          "1,b.png,0.0,23,0.85,0.08\n")
    times = np.linspace(0, 1, 11)
    _write_columns(run / "motion_epe_by_time.csv", {"time": times, "epe_all": times * 0.1,
                                                     "zero_motion_all": times, "epe_ball": times * 0.2,
                                                     "zero_motion_ball": times * 2})
    t = np.linspace(0, 1, 9, dtype=np.float32)
    pos = np.stack([np.stack([np.cos(3 * t + k), np.sin(3 * t + k), t], -1) for k in range(5)], 1)  # [T, 5, 3]
    pos[:, 4] = np.nan  # a track whose integration diverged
    write_trajectories({"times": t, "positions": pos, "velocity": np.gradient(pos, t, axis=0)},
                       run / "motion" / "tracks.npz")
    return run


def test_the_training_log_keeps_the_last_line_of_each_step_and_skips_broken_ones(tmp_path, caplog):
    run = _run_folder(tmp_path)
    cols = read_training_log(run / "metrics.jsonl")
    np.testing.assert_array_equal(cols["step"], np.arange(50, 501, 50))
    assert cols["psnr"][-1] == 99.0 and cols["psnr"][-3] == 10 + 400 / 50  # 450, 500 from after the resume
    assert math.isnan(cols["loss"][-1])  # logged as the string "nan"
    assert np.isnan(cols["loss/integrity"][:5]).all() and cols["loss/integrity"][6] == 1e-6
    assert "train_time_s" not in cols
    assert cols["val/psnr"][7] == 20.0 and cols["psnr"][7] == 18.0 and np.isnan(cols["val/psnr"][:7]).all()
    assert "line 12" in caplog.text  # the half-written line is named


def test_smoothing_is_a_bias_corrected_moving_average():
    np.testing.assert_allclose(smooth(np.full(5, 3.0), 0.9), np.full(5, 3.0))  # no pull towards 0 at the start
    np.testing.assert_array_equal(smooth(np.array([1.0, 2.0]), 0.0), [1.0, 2.0])
    np.testing.assert_allclose(smooth(np.array([1.0, np.nan, 3.0]), 0.5), [1.0, 1.0, (0.25 + 1.5) / 0.75])


def test_smoothing_starts_at_the_first_finite_value():
    """Leading NaNs stay NaN (nothing to average yet); then the bias-corrected average with weight 0.5:
    2, then (0.5 * 1 + 0.5 * 4) / (0.5 * 0.5 + 0.5) = 2.5 / 0.75."""
    out = smooth(np.array([np.nan, np.nan, 2.0, 4.0]), 0.5)
    assert np.isnan(out[:2]).all()
    np.testing.assert_allclose(out[2:], [2.0, 2.5 / 0.75])


def test_csv_columns_keep_six_significant_digits_and_drop_text(tmp_path):
    """``_write_columns`` writes a header and each value to 6 significant digits; the plots read back the numeric
    columns only (a text column such as eval's file names is dropped)."""
    from kinfield.plots import _read_csv

    path = tmp_path / "cols.csv"
    _write_columns(path, {"time": np.array([0.0, 1.0 / 3.0]), "epe_all": np.array([123456.7, 2e-7])})
    assert path.read_text().splitlines() == ["time,epe_all", "0,123457", "0.333333,2e-07"]
    cols = _read_csv(path)
    assert list(cols) == ["time", "epe_all"] and cols["time"].tolist() == [0.0, 0.333333]
    (tmp_path / "views.csv").write_text("index,file,psnr\n0,a.png,20.5\n1,b.png,nan\n")
    cols = _read_csv(tmp_path / "views.csv")
    assert list(cols) == ["index", "psnr"] and cols["psnr"][0] == 20.5 and math.isnan(cols["psnr"][1])


def test_every_figure_of_a_run_is_written(tmp_path, capsys):
    import imageio.v3 as iio

    run = _run_folder(tmp_path)
    assert main_plot([str(run)]) == 0
    printed = capsys.readouterr().out.split()
    names = ["training.png", "test_views.png", "motion_epe.png", "tracks.png"]
    assert printed == [str(run / "plots" / n) for n in names]
    for n in names:
        img = iio.imread(run / "plots" / n)
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600
        assert img[..., :3].std() > 10  # something is drawn
    assert sorted(p.name for p in (run / "plots").iterdir()) == sorted(names)  # no temporary file left
    tracks = load_tracks(run / "motion" / "tracks.npz")  # the same tracks exported as csv: plotted too
    write_trajectories({**tracks, "acceleration": 0 * tracks["velocity"], "jerk": 0 * tracks["velocity"]},
                       tmp_path / "tracks.csv")
    capsys.readouterr()
    assert main_plot([str(run), "--tracks", str(tmp_path / "tracks.csv"), "--out", str(tmp_path / "csv")]) == 0
    assert (tmp_path / "csv" / "tracks.png").is_file()
    (tmp_path / "tracks.csv").replace(run / "motion" / "tracks.csv")  # the export's default name, csv only
    (run / "motion" / "tracks.npz").unlink()
    assert main_plot([str(run), "--out", str(tmp_path / "default")]) == 0
    assert (tmp_path / "default" / "tracks.png").is_file()


def test_only_the_figures_the_run_has_files_for(tmp_path):
    run = _run_folder(tmp_path, resumed=False)
    for f in ("metrics_test.csv", "motion_epe_by_time.csv", "motion/tracks.npz"):
        (run / f).unlink()
    (run / "metrics.json").write_text("{not json")
    written, problems = plot_run(run, tmp_path / "figs")
    assert [p.name for p in written] == ["training.png"] and problems == []


def test_bad_runs_get_a_clear_error(tmp_path, capsys):
    assert main_plot([str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main_plot([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no training log" in err and "tools/train.py" in err
    assert not (tmp_path / "empty" / "plots").exists()
    # a run stopped by its time cap before its first log: only the closing line
    (tmp_path / "empty" / "metrics.jsonl").write_text('{"step": 3, "train_time_s": 1.0}\n')
    written, problems = plot_run(tmp_path / "empty")
    assert written == [] and "no logged training step" in problems[0]
    with pytest.raises(PlotError, match="run folder not found"):
        plot_run(tmp_path / "nope")
    run = _run_folder(tmp_path)
    np.savez(tmp_path / "bad_tracks.npz", times=np.zeros(3), positions=np.zeros((4, 2, 3)))
    assert main_plot([str(run), "--tracks", str(tmp_path / "bad_tracks.npz")]) == 2
    out, err = capsys.readouterr()
    assert "positions has shape [4, 2, 3], expected [3, N, 3]" in err and "training.png" in out  # the others drawn
    np.savez(tmp_path / "one_time.npz", times=np.zeros(1), positions=np.zeros((1, 2, 3)))
    assert main_plot([str(run), "--tracks", str(tmp_path / "one_time.npz")]) == 2
    assert "a curve needs 2 or more" in capsys.readouterr().err
    np.savez(tmp_path / "gone_tracks.npz", times=np.arange(3.0), positions=np.full((3, 2, 3), np.nan))
    assert main_plot([str(run), "--tracks", str(tmp_path / "gone_tracks.npz")]) == 2
    assert "no track is finite" in capsys.readouterr().err
    assert main_plot([str(run), "--tracks", str(tmp_path / "missing.npz")]) == 2
    assert "export_trajectories" in capsys.readouterr().err
    (run / "metrics_test.csv").write_bytes(b"\xff\xfe\x00\x01")  # not UTF-8: one figure's clear error, not a traceback
    assert main_plot([str(run)]) == 2
    out, err = capsys.readouterr()
    assert "metrics_test.csv has no data rows" in err and "training.png" in out


def test_without_matplotlib_one_clear_error(tmp_path, capsys, monkeypatch):
    import sys

    run = _run_folder(tmp_path, resumed=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main_plot([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and '".[plot]"' in err
