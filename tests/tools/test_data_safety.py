"""Earlier results are never replaced by mistake, and file-system failures are one error line (the gauntlet of
2026-12-07): a run folder's metrics.json without checkpoints, another run's checkpoint given to eval, a broken
metrics.json, a checkpoint that cannot be written, an --out that is a file."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kinfield.cli import main_eval, main_train
from kinfield.data.synthetic import PRESETS, write_scene
from kinfield.train.checkpoint import CheckpointError, list_checkpoints, save_checkpoint
from kinfield.train.evaluate import update_metrics

REPO = Path(__file__).resolve().parents[2]
FAST = ["--device", "cpu", "--train_rays", "64", "--train_min_rays", "64", "--train_target_samples", "0",
        "--train_eval_split", ""]


def _scene_of(run):
    import yaml
    return yaml.safe_load((run / "config.yaml").read_text())["scene"]


def _train(scene, out, *extra):
    return main_train([str(scene), str(REPO / "configs" / "debug.yaml"), "--out", str(out), "--iters", "2", *FAST,
                       *extra])


def test_training_never_replaces_results_of_a_run_without_checkpoints(tmp_path, trained_run, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text('{"test": {"psnr": 31.0}}')
    scene = _scene_of(trained_run)
    assert _train(scene, out) == 2
    assert "holds results" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text()) == {"test": {"psnr": 31.0}}


def test_eval_refuses_a_checkpoint_of_another_scene(tmp_path, trained_run, capsys):
    other_scene = write_scene(PRESETS["tiny"], tmp_path / "other_scene")
    other = tmp_path / "other_run"
    assert _train(other_scene, other) == 0
    before = (trained_run / "metrics.json").read_bytes() if (trained_run / "metrics.json").exists() else None
    code = main_eval([str(trained_run), "--checkpoint", str(list_checkpoints(other)[-1]), "--no-lpips", "--device", "cpu"])
    assert code == 2
    assert "would be written into the wrong run" in capsys.readouterr().err
    after = (trained_run / "metrics.json").read_bytes() if (trained_run / "metrics.json").exists() else None
    assert after == before


def test_an_unreadable_metrics_file_is_set_aside_not_lost(tmp_path):
    (tmp_path / "metrics.json").write_text("[1, 2]")  # valid JSON, not kinfield's
    update_metrics(tmp_path, "test", {"psnr": 1.0})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"test": {"psnr": 1.0}}
    assert (tmp_path / "metrics.json.unreadable").read_text() == "[1, 2]"
    (tmp_path / "metrics.json").write_bytes(b"\xff\xfe not utf-8")
    update_metrics(tmp_path, "test", {"psnr": 2.0})
    assert (tmp_path / "metrics.json.unreadable.1").read_bytes() == b"\xff\xfe not utf-8"


def test_a_checkpoint_that_cannot_be_written_leaves_no_partial_file_and_names_the_last_one(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 2, {"x": torch.zeros(3)})

    def full_disk(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="ckpt_0000002.pt"):
        save_checkpoint(tmp_path, 4, {"x": torch.zeros(3)})
    assert [p.name for p in (tmp_path / "ckpts").iterdir()] == ["ckpt_0000002.pt"]


def test_an_out_path_that_is_a_file_is_one_error_line(tmp_path, trained_run, capsys):
    scene = _scene_of(trained_run)
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    assert _train(scene, blocker / "run") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and "choose another --out" in err
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("option", [["--train_rays", "-1"], ["--train_min_rays", "0"], ["--render_step_size", "-0.1"],
                                    ["--render_chunk", "0"], ["--render_occupancy_resolution", "0"],
                                    ["--dynamic_grid_n_levels", "0"], ["--kin_integrity_weight", "-1"],
                                    ["--prior_flow_weight", "-0.5"], ["--train_lr_grid", "-0.01"],
                                    ["--train_lr_final_ratio", "-1"], ["--train_lr_kinematic_factor", "-0.5"],
                                    ["--train_weight_decay_net", "-1"], ["--seed", "-1"],
                                    ["--train_dynamic_ray_prior", "5"], ["--kinematic_order", "7"],
                                    ["--kinematic_time_scale", "-1"], ["--kin_derivative_grad_scale", "-0.1"],
                                    ["--static_grid_per_level_scale", "0.9"]])
def test_out_of_range_sizes_stop_with_the_option_named(tmp_path, trained_run, capsys, option):
    assert _train(_scene_of(trained_run), tmp_path / "run", *option) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option[0]} must be") and "Traceback" not in err
    assert not (tmp_path / "run" / "ckpts").exists()


@pytest.mark.parametrize("option", [["--focal", "nan"], ["--focal", "inf"], ["--fb-threshold", "nan"],
                                    ["--motion-threshold", "nan"], ["--motion-threshold", "inf"]])
def test_preprocess_refuses_non_finite_thresholds(tmp_path, capsys, option):
    from kinfield.cli import main_preprocess
    frames = tmp_path / "frames"
    frames.mkdir()
    with pytest.raises(SystemExit) as exc:
        main_preprocess([str(frames), str(tmp_path / "out"), *option])
    assert exc.value.code == 2 and f"{option[0]} must be a finite number" in capsys.readouterr().err


def test_export_refuses_an_existing_folder_as_out_before_adding_a_suffix(tmp_path, trained_run, capsys):
    from kinfield.cli import main_export
    folder = tmp_path / "m"
    folder.mkdir()
    assert main_export([str(trained_run), "--out", str(folder), "--device", "cpu"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_images_smaller_than_the_ssim_window_score_without_ssim(tmp_path, capsys):
    """A run at a large --downscale (the tiny scene at 1/3: under 11 pixels a side) trains and is scored: SSIM is
    left out with a note (it raised at the end of training, after the whole run)."""
    scene = write_scene(PRESETS["tiny"], tmp_path / "scene")
    out = tmp_path / "run"
    assert main_train([str(scene), str(REPO / "configs" / "debug.yaml"), "--out", str(out), "--iters", "2",
                       "--downscale", "3", "--device", "cpu", "--train_rays", "64", "--train_min_rays", "64",
                       "--train_target_samples", "0"]) == 0
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["ssim"] is None and "SSIM needs both sides >= 11" in test["ssim_note"]
    assert test["psnr"] is not None


def test_ground_truth_with_nan_is_refused(tmp_path):
    """A ground-truth file with a NaN would be scored as null: refused, named (tracks may hold NaN: a point that
    left the scene)."""
    from kinfield.motion.export import MotionFileError, load_motion_gt
    scene = write_scene(PRESETS["tiny"], tmp_path / "scene")
    gt = dict(np.load(scene / "motion_gt.npz"))
    gt["velocity"][0, 0, 0] = np.nan
    np.savez(tmp_path / "gt.npz", **gt)
    with pytest.raises(MotionFileError, match="velocity holds 1 NaN"):
        load_motion_gt(tmp_path / "gt.npz")


def test_negative_iters_and_a_bad_device_stop_with_the_option_named(tmp_path, trained_run, capsys):
    from kinfield.cli import main_render
    assert _train(_scene_of(trained_run), tmp_path / "run", "--iters", "-1") == 2
    assert "--iters must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main_render([str(trained_run), "--device", "foo"])
    assert "argument --device: expected cpu, cuda" in capsys.readouterr().err


def test_a_transforms_file_with_a_byte_order_mark_loads(tmp_path):
    from kinfield.data import load_scene
    scene = write_scene(PRESETS["tiny"], tmp_path / "scene")
    for name in ("transforms_train.json", "transforms_test.json"):
        f = scene / name
        if f.exists():
            f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    assert load_scene(scene).split("train").num_frames > 0


def test_a_second_training_into_a_run_being_trained_is_refused(tmp_path, trained_run, capsys):
    """Two trainings into one --out interleaved their metrics rows and overwrote each other's checkpoints: while a
    live process holds the folder's lock, the second stops naming it; a lock whose process is gone (a killed run)
    is taken over, and released at the end."""
    import subprocess
    import sys
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".kinfield.lock").write_text(str(holder.pid))
        assert _train(_scene_of(trained_run), out) == 2
        assert f"is being trained by process {holder.pid}" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [".kinfield.lock"]
    finally:
        holder.kill()
        holder.wait()
    assert _train(_scene_of(trained_run), out) == 0  # the lock's process is gone: taken over
    assert not (out / ".kinfield.lock").exists() and (out / "ckpts").is_dir()


def test_a_refused_start_leaves_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "new_run"
    code = _train(write_scene(PRESETS["tiny"], tmp_path / "scene"), out, "--resume", str(tmp_path / "missing.pt"))
    assert code == 2 and "no such checkpoint file" in capsys.readouterr().err
    assert not out.exists()


def test_a_checkpoint_that_does_not_fit_the_run_config_names_the_differences(tmp_path, trained_run, capsys):
    import shutil

    import yaml

    from kinfield.cli import main_render
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    ckpt = list_checkpoints(run)[-1]
    state = torch.load(ckpt, weights_only=False)
    del state["config"]  # (an older checkpoint: the model is rebuilt from the run's config.yaml)
    torch.save(state, ckpt)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["static_grid_n_levels"] += 1  # a hand-edited config.yaml
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    code = main_render([str(run), "--frames", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and f"{ckpt} does not fit the model its options describe" in err
    assert "static." in err and "Error(s) in loading state_dict" not in err


def test_an_edited_run_config_is_named_not_silently_ignored(tmp_path, trained_run, caplog):
    import shutil

    import yaml

    from kinfield.train.run import load_run
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["render_step_size"] = 0.5
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with caplog.at_level("WARNING", logger="kinfield"):
        loaded = load_run(run, device="cpu")
    assert loaded.cfg.render.step_size != 0.5  # the checkpoint's options are the model's
    assert "config.yaml differs from the options" in caplog.text and "render_step_size" in caplog.text


def test_options_that_do_not_fit_together_or_with_the_scene(tmp_path, trained_run, capsys, caplog):
    scene = _scene_of(trained_run)
    assert _train(scene, tmp_path / "a", "--train_min_rays", "500", "--train_max_rays", "100") == 2
    assert "error: --train_min_rays 500 is above --train_max_rays 100" in capsys.readouterr().err
    assert _train(scene, scene, "--iters", "1") == 2  # --out the scene folder itself
    assert f"error: --out {scene} is a scene folder" in capsys.readouterr().err
    assert not any((Path(scene) / n).exists() for n in ("ckpts", "config.yaml", "metrics.jsonl", ".kinfield.lock"))
    assert _train(scene, tmp_path / "a", "--static_time_scale", "0.5") == 2  # (an option the static field ignores)
    assert "error: --static_time_scale 0.5: the static field has no time axis" in capsys.readouterr().err
    assert _train(scene, tmp_path / "b", "--render_step_size", "10") == 2  # no sample in the 3-unit box
    assert "--render_step_size 10.0 leaves fewer than 2 samples" in capsys.readouterr().err
    with caplog.at_level("WARNING", logger="kinfield"):
        assert _train(scene, tmp_path / "c", "--downscale", "1000", "--iters", "1") == 0
    assert "the training images are 1x1 pixels (--downscale 1000)" in caplog.text
    assert _train(scene, tmp_path / "d", "--train_lr_kinematic_factor", "0", "--iters", "1") == 0  # a frozen field


def test_training_frames_all_at_one_time_are_warned_about(tmp_path, trained_run, caplog):
    import shutil
    scene = shutil.copytree(_scene_of(trained_run), tmp_path / "scene")
    meta = json.loads((scene / "transforms_train.json").read_text())
    for f in meta["frames"]:
        f["time"] = 0.5
    (scene / "transforms_train.json").write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="kinfield"):
        assert _train(scene, tmp_path / "run", "--iters", "1") == 0
    assert "training frames are at time 0.5: there is no motion for the kinematic field to learn" in caplog.text


def test_a_damaged_training_log_neither_stops_a_resume_nor_a_plot(tmp_path, trained_run, capsys):
    import shutil

    from kinfield.plots import read_training_log
    run = shutil.copytree(trained_run, tmp_path / "run")
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'[1, 2]\n"text"\n\xff\xfe\x00garbage\n{"step": "x"}\n{"step": 1e999}\n')  # edits, non-UTF-8 bytes
    (run / "metrics_test.csv").write_bytes(b"\xff\xfe\x00\x01")
    cols = read_training_log(run / "metrics.jsonl")  # the good rows, the bad ones skipped
    assert cols["step"][-1] == 4
    assert _train(_scene_of(trained_run), run, "--iters", "6") == 0  # resumes from step 4
    assert "Traceback" not in capsys.readouterr().err and list_checkpoints(run)[-1].name == "ckpt_0000006.pt"


def test_eval_scores_a_run_only_on_its_own_scene(tmp_path, trained_run, capsys, caplog):
    import dataclasses
    import shutil

    run = shutil.copytree(trained_run, tmp_path / "run")
    other = write_scene(dataclasses.replace(PRESETS["tiny"], preset="spin"), tmp_path / "spin")  # same cameras
    assert main_eval([str(run), "--scene", str(other), "--no-lpips", "--device", "cpu", "--no-progress"]) == 2
    assert "is not the scene" in capsys.readouterr().err and not (run / "metrics.json").exists()
    copy = shutil.copytree(_scene_of(trained_run), tmp_path / "copy")
    assert main_eval([str(run), "--scene", str(copy), "--no-lpips", "--device", "cpu", "--no-progress"]) == 0
    assert json.loads((run / "metrics.json").read_text())["test"]["scene"] == str(copy)
    ckpt = list_checkpoints(run)[-1]  # a checkpoint from before scene signatures: scored, with a warning
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    del state["scene_signature"]
    torch.save(state, ckpt)
    with caplog.at_level("WARNING", logger="kinfield"):
        assert main_eval([str(run), "--scene", str(copy), "--no-lpips", "--device", "cpu", "--no-progress"]) == 0
    assert "holds no scene signature" in caplog.text and f"--scene {copy} is the scene" in caplog.text
    sibling = shutil.copytree(trained_run, tmp_path / "sibling")  # another run's checkpoint: not scored as this one's
    assert main_eval([str(run), "--checkpoint", str(list_checkpoints(sibling)[-1]), "--no-lpips", "--device",
                      "cpu"]) == 2
    assert f"is a checkpoint of another run, {sibling}" in capsys.readouterr().err


def test_small_input_slips_get_errors_that_name_the_fix(tmp_path, trained_run, capsys):
    import shutil

    from kinfield.cli import main_demo, main_render
    from kinfield.motion.export import parse_times, read_points
    from kinfield.train.checkpoint import load_checkpoint

    with pytest.raises(FileNotFoundError, match="is a folder: pass one of its ckpt_XXXXXXX.pt files"):
        load_checkpoint(trained_run / "ckpts")
    with pytest.raises(ValueError, match="for the time 0 write --times 0.0"):
        parse_times("0", None)
    with pytest.raises(ValueError, match="no time given"):
        parse_times(" , ", None)
    (tmp_path / "empty.txt").write_text("")
    np.savez(tmp_path / "points.npz", p=np.zeros((2, 3)))
    for name, words in (("empty.txt", "the file is empty"), ("points.npz", "not a text file")):
        with pytest.raises(ValueError, match=words):
            read_points(tmp_path / name)
    # a run whose scene folder was moved away: --scene is the fix
    scene = shutil.copytree(_scene_of(trained_run), tmp_path / "scene")
    run = tmp_path / "run"
    assert _train(scene, run) == 0
    scene.rename(tmp_path / "moved")
    assert main_render([str(run), "--frames", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "the run's scene is not there (moved or deleted?)" in err and "pass --scene" in err
    assert main_demo(["--config", str(tmp_path / "nope.yaml"), "--scene", str(tmp_path / "demo")]) == 2
    assert "--config" in capsys.readouterr().err and not (tmp_path / "demo").exists()  # checked before the scene


def test_a_runs_own_older_checkpoint_opens_after_a_resume_on_its_moved_scene(tmp_path, trained_run, capsys):
    import shutil

    run = shutil.copytree(trained_run, tmp_path / "run")
    older = list_checkpoints(run)[-1]
    moved = shutil.copytree(_scene_of(trained_run), tmp_path / "moved")
    assert _train(moved, run, "--iters", "6") == 0  # resumed on the same scene at its new path
    assert main_eval([str(run), "--checkpoint", str(older), "--no-lpips", "--device", "cpu", "--no-progress"]) == 0


def test_a_scene_folder_given_as_the_run_is_named_as_a_scene(tmp_path, capsys):
    from kinfield.cli import main_eval
    from kinfield.data.synthetic import PRESETS, write_scene

    scene = write_scene(PRESETS["tiny"], tmp_path / "scene")
    assert main_eval([str(scene), "--no-lpips"]) == 2
    err = capsys.readouterr().err
    assert "is a scene folder, not a run" in err and "--out" in err and "train first" not in err


def test_rerunning_a_finished_training_changes_nothing(tmp_path, trained_run, caplog):
    """The same command again, or with other options (here --downscale 2), after the run reached --iters: nothing to
    train, so its checkpoint (which records the options it was trained with), config.yaml and test scores stay as
    they were (they were re-saved with the new options and re-scored, filed as the checkpoint's); a larger --iters
    trains on. A run whose final scoring was cut short (no scores for its step) is scored by the rerun."""
    import hashlib
    import json

    from kinfield.train.checkpoint import list_checkpoints

    scene, out = _scene_of(trained_run), tmp_path / "run"
    test = ["--train_eval_split", "test", "--train_eval_lpips", "false", "--train_progress", "false"]
    assert _train(scene, out, *test) == 0
    files = [list_checkpoints(out)[-1], out / "config.yaml", out / "metrics.json", out / "metrics.jsonl"]

    def digests():
        return [hashlib.sha1(p.read_bytes()).hexdigest() for p in files]

    before = digests()
    scored = json.loads((out / "metrics.json").read_text())["test"]
    assert scored["step"] == 2 and scored["checkpoint"] == str(files[0])
    with caplog.at_level("INFO", logger="kinfield"):
        assert _train(scene, out, *test, "--downscale", "2") == 0
    assert digests() == before and [p.name for p in list_checkpoints(out)] == ["ckpt_0000002.pt"]
    assert "nothing to do" in caplog.text
    (out / "metrics.json").unlink()  # (as if killed while scoring)
    assert _train(scene, out, *test) == 0
    assert json.loads((out / "metrics.json").read_text())["test"]["step"] == 2
    assert _train(scene, out, *test, "--iters", "3") == 0
    assert [p.name for p in list_checkpoints(out)][-1] == "ckpt_0000003.pt"
    assert json.loads((out / "metrics.json").read_text())["test"]["step"] == 3


def test_ctrl_c_while_scoring_says_training_is_saved(tmp_path, trained_run, caplog, monkeypatch):
    """Ctrl-C during the final scoring (after the last checkpoint) exits 130 with a line saying the training is saved
    and how to score it (it exited without a word); the rerun scores it."""
    import kinfield.train.trainer as trainer_module

    real = trainer_module.evaluate_split

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "evaluate_split", interrupted)
    scene, out = _scene_of(trained_run), tmp_path / "run"
    test = ["--train_eval_split", "test", "--train_eval_lpips", "false", "--train_progress", "false"]
    with caplog.at_level("WARNING", logger="kinfield"):
        assert _train(scene, out, *test) == 130
    assert "interrupted while scoring the test split; training is saved" in caplog.text
    assert "ckpt_0000002.pt" in caplog.text and not (out / "metrics.json").exists()
    monkeypatch.setattr(trainer_module, "evaluate_split", real)
    assert _train(scene, out, *test) == 0 and (out / "metrics.json").is_file()
