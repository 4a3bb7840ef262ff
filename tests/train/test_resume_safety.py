"""Interrupts, resumes and fresh starts never lose, mix or half-save a run: a signal stops training after a complete
step, a resume takes the options' learning rates, and a run folder holding another run (later checkpoints, another
scene) is refused with a clear error before anything is written."""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from kinfield.cli import _terminate_like_ctrl_c, main_train
from kinfield.data.synthetic import PRESETS, write_scene
from kinfield.train import Trainer, load_configured_scene
from kinfield.train.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from kinfield.train.logger import MetricsLogger
from test_checkpoint import FAST, REPO, assert_same_tree, make_cfg, read_metrics


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    return write_scene(PRESETS["tiny"], tmp_path_factory.mktemp("tiny") / "scene")


@pytest.fixture(scope="module")
def whole(tiny_scene, tmp_path_factory) -> Path:
    """An uninterrupted run of 4 steps (checkpoints at steps 2 and 4)."""
    out = tmp_path_factory.mktemp("whole")
    Trainer(make_cfg(tiny_scene, out, 4)).fit()
    return out


def checkpoint_state(run_dir, step):
    state = load_checkpoint(Path(run_dir) / "ckpts" / f"ckpt_{step:07d}.pt")
    del state["config"]["out"]
    return state


def files(run_dir):
    return {p: p.read_bytes() for p in Path(run_dir).rglob("*") if p.is_file()}


def train_argv(scene, out, *extra):
    return [str(scene), str(REPO / "configs" / "debug.yaml"), "--out", str(out), "--device", "cpu", "--iters", "4",
            "--train_eval_split", "", *FAST, *extra]


# ----------------------------------------------------------------------------------------- interrupts
@pytest.mark.parametrize("signum, where", [(signal.SIGINT, "render"), (signal.SIGTERM, "update")],
                         ids=["SIGINT-in-render", "SIGTERM-after-update"])
def test_a_signal_mid_step_stops_after_the_step_and_the_resumed_run_is_bit_identical(tiny_scene, whole, tmp_path,
                                                                                      caplog, signum, where):
    """Ctrl-C (or SIGTERM, which tools/train.py turns into one) in the middle of the third step: in its render (the
    batch, occupancy grid and RNG have moved on) or after its update (the step counter has not moved on): the run
    finishes the step, saves it as step 3, and resuming it ends where an uninterrupted run does, bit for bit."""
    out = tmp_path / "cut"
    cut = Trainer(make_cfg(tiny_scene, out, 4))
    owner, name = (cut.model, "render_rays") if where == "render" else (cut, "train_step")
    real = getattr(owner, name)

    def signalling(*args, **kwargs):
        result = real(*args, **kwargs)
        if cut.step == 2:
            os.kill(os.getpid(), signum)
        return result

    setattr(owner, name, signalling)
    sigint, sigterm = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _terminate_like_ctrl_c()  # as tools/train.py: SIGTERM raises KeyboardInterrupt
    cli_handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(KeyboardInterrupt), caplog.at_level("WARNING", logger="kinfield"):
            cut.fit()
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (sigint, cli_handler)
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    assert f"interrupted at step 3; checkpoint saved to {out / 'ckpts' / 'ckpt_0000003.pt'}" in caplog.text
    assert latest_checkpoint(out).name == "ckpt_0000003.pt"
    assert Trainer(make_cfg(tiny_scene, out, 4)).fit()["step"] == 4
    assert_same_tree(checkpoint_state(whole, 4), checkpoint_state(out, 4))
    assert [r["step"] for r in read_metrics(out)] == [2, 3, 4, 4]  # the interrupted step's row too


def test_a_signal_during_the_last_steps_save_still_stops_the_run(tiny_scene, tmp_path, caplog):
    """Ctrl-C while the last step's periodic checkpoint is written (no step follows to notice it): the run still
    stops there with that step saved, instead of going on into the final evaluation."""
    out = tmp_path / "cut"
    cut = Trainer(make_cfg(tiny_scene, out, 4))
    real, sent = cut.save, []

    def signalling_save():
        if cut.step == 4 and not sent:  # once: the save that follows is the interrupt's own
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        return real()

    cut.save = signalling_save
    with pytest.raises(KeyboardInterrupt), caplog.at_level("WARNING", logger="kinfield"):
        cut.fit()
    assert f"interrupted at step 4; checkpoint saved to {out / 'ckpts' / 'ckpt_0000004.pt'}" in caplog.text
    assert not (out / "metrics.json").exists()  # no final evaluation


def test_a_second_ctrl_c_aborts_the_step_at_once_and_saves_nothing(tiny_scene, whole, tmp_path, caplog):
    out = tmp_path / "cut"
    cut = Trainer(make_cfg(tiny_scene, out, 4))
    real = cut.model.render_rays

    def hung(*args, **kwargs):
        if cut.step == 2:  # the third step hangs: the user presses Ctrl-C twice
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            pytest.fail("the second Ctrl-C did not abort the step")
        return real(*args, **kwargs)

    cut.model.render_rays = hung
    sigint = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), caplog.at_level("WARNING", logger="kinfield"):
        cut.fit()
    assert signal.getsignal(signal.SIGINT) == sigint
    assert "aborted after step 2 without saving" in caplog.text
    assert [p.name for p in list_checkpoints(out)] == ["ckpt_0000002.pt"]  # the periodic one, as it was
    assert_same_tree(checkpoint_state(whole, 2), checkpoint_state(out, 2))


# -------------------------------------------------------------------------------------------- options
def test_a_resume_takes_the_learning_rates_and_weight_decay_of_the_options(tiny_scene, tmp_path, caplog):
    out = tmp_path / "run"
    Trainer(make_cfg(tiny_scene, out, 2)).fit()
    tr = Trainer(make_cfg(tiny_scene, out, 4, "--train_lr_grid", "0.003", "--train_lr_net", "0.004",
                          "--train_weight_decay_net", "0.001"))
    options = [(g["lr"], g["weight_decay"]) for g in tr._make_optimizer().param_groups]
    with caplog.at_level("INFO", logger="kinfield"):
        tr.fit()
    assert "from the options, not the checkpoint: dynamic grid 0.003 / 0 (checkpoint: 0.01 / 0); dynamic nets 0.004 / " \
        "0.001 (checkpoint: 0.01 / 1e-06);" in caplog.text
    assert tr.scheduler.base_lrs == [lr for lr, _ in options]
    for group, (lr, decay) in zip(tr.optimizer.param_groups, options):
        assert (group["initial_lr"], group["weight_decay"], group["lr"]) == (lr, decay, lr * tr._lr_factor(4))
    row = [r for r in read_metrics(out) if r["step"] == 4 and "lr" in r][0]
    assert row["lr"] == pytest.approx(0.003 * tr._lr_factor(4))


def test_a_resume_with_other_model_or_loss_options_says_which(tiny_scene, tmp_path, caplog):
    """Options that keep every tensor's shape but change the model or the losses (a time scale, a weight) are taken
    on resume, and listed in a warning; those a resume is expected to change (iters, rates, logging) are not."""
    out = tmp_path / "run"
    Trainer(make_cfg(tiny_scene, out, 2)).fit()
    caplog.clear()
    with caplog.at_level("WARNING", logger="kinfield"):
        Trainer(make_cfg(tiny_scene, out, 4, "--train_lr_net", "0.003", "--train_log_every", "1")).fit()
    assert "trained with other options" not in caplog.text
    with caplog.at_level("WARNING", logger="kinfield"):
        trainer = Trainer(make_cfg(tiny_scene, out, 5, "--dynamic_time_scale", "0.5", "--kin_rigidity_weight", "3"))
        trainer.fit()
    assert "trained with other options; resuming with this run's: " in caplog.text
    assert "dynamic_time_scale 1.0 -> 0.5" in caplog.text and "kin_rigidity_weight" in caplog.text
    assert "iters" not in caplog.text.split("resuming with this run's: ")[1].split("\n")[0]


@pytest.mark.parametrize("option", ["--train_save_every", "--train_log_every"])
def test_a_zero_save_or_log_interval_is_refused_naming_the_option(tiny_scene, tmp_path, capsys, option):
    assert main_train(train_argv(tiny_scene, tmp_path / "run", option, "0")) == 2
    assert f"error: {option} must be >= 1 (steps), got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- run folders of other runs
def test_a_fresh_start_into_a_used_run_folder_is_refused_before_anything_is_written(tiny_scene, whole, tmp_path,
                                                                                       capsys):
    out = shutil.copytree(whole, tmp_path / "run")
    before = files(out)
    assert main_train(train_argv(tiny_scene, out, "--resume", "none")) == 2
    err = capsys.readouterr().err
    assert f"error: {out / 'ckpts'} holds an earlier run's checkpoints (latest step 4): use another --out, or " \
           f"delete {out / 'ckpts'} and {out / 'metrics.jsonl'} to start over" in err
    assert files(out) == before
    shutil.rmtree(out / "ckpts")  # its metrics alone are an earlier run's too
    with pytest.raises(CheckpointError, match="metrics.jsonl holds an earlier run's metrics: use another --out"):
        Trainer(make_cfg(tiny_scene, out, 4, "--resume", "none")).fit()
    (out / "metrics.jsonl").unlink()
    assert Trainer(make_cfg(tiny_scene, out, 1, "--resume", "none")).fit()["step"] == 1


def test_a_rerun_after_a_kill_before_the_first_save_sets_the_dead_runs_rows_aside(tiny_scene, tmp_path, caplog):
    """``--resume auto`` where a run was killed before it saved anything: there is nothing to resume, so training
    starts at step 0, and the dead run's metrics rows are moved aside rather than interleaved with the new ones."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 8.0}\n')
    Trainer(make_cfg(tiny_scene, out, 2)).fit()
    assert all(r.get("loss") not in (9.0, 8.0) for r in read_metrics(out))
    assert (out / "metrics.jsonl.orphaned").read_text().count("\n") == 2
    assert "moved to" in caplog.text
    shutil.rmtree(out / "ckpts")  # killed before its first save again: the first dead run's rows stay
    Trainer(make_cfg(tiny_scene, out, 2)).fit()
    assert (out / "metrics.jsonl.orphaned").read_text().count("\n") == 2
    assert (out / "metrics.jsonl.orphaned.1").is_file()


def test_resuming_an_older_checkpoint_into_a_folder_with_later_ones_is_refused(tiny_scene, whole, tmp_path):
    out = shutil.copytree(whole, tmp_path / "run")
    older, before = out / "ckpts" / "ckpt_0000002.pt", files(out)
    with pytest.raises(CheckpointError) as err:
        Trainer(make_cfg(tiny_scene, out, 6, "--resume", str(older))).fit()
    assert f"{older} is of step 2, but {out / 'ckpts'} holds checkpoints up to step 4" in str(err.value)
    assert "another --out" in str(err.value) and files(out) == before
    fork = Trainer(make_cfg(tiny_scene, tmp_path / "fork", 3, "--resume", str(older)))  # into another folder: fine
    assert fork.maybe_resume() and fork.step == 2


def test_pruning_keeps_the_checkpoint_just_written(tmp_path):
    for step in (5, 6):
        save_checkpoint(tmp_path, step, {}, keep=2)
    path = save_checkpoint(tmp_path, 3, {}, keep=2)
    assert path.is_file() and [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_0000003.pt", "ckpt_0000006.pt"]


def test_resuming_a_run_of_another_scene_is_refused_naming_its_scene(tiny_scene, tmp_path):
    from kinfield.train.checkpoint import scene_mismatch

    other = write_scene(dataclasses.replace(PRESETS["tiny"], n_train=4), tmp_path / "other")  # other frame spacing
    out = tmp_path / "run"
    Trainer(make_cfg(other, out, 2)).fit()
    ckpt, before = latest_checkpoint(out), files(out)
    with pytest.raises(CheckpointError) as err:
        Trainer(make_cfg(tiny_scene, out, 4)).fit()
    msg = str(err.value)
    assert f"{ckpt} was trained on another scene, {other} (frame spacing [0.3333] -> [0.2])" in msg
    assert f"train {tiny_scene} into another --out" in msg and files(out) == before
    cfg = make_cfg(other, out, 4)
    scene = load_configured_scene(cfg.data)
    moved = dataclasses.replace(scene, aabb=scene.aabb * 2)  # another box
    with pytest.raises(CheckpointError, match=r"the scene there has changed since \(box \[-1\.5.* -> \[-3\.0"):
        Trainer(cfg, scene=moved).maybe_resume()
    # NDC: its map, not the image size (which follows --downscale), is the scene's
    ndc = {"space.ndc": torch.tensor([100.0, 64.0, 48.0, 1.0])}
    assert scene_mismatch(ndc, {"space.ndc": torch.tensor([50.0, 32.0, 24.0, 1.0])}) == ""
    # a downscale that rounds the image size (Balloon1's 540 rows at 1/8: 67.5 -> 68) is still the same scene
    full = {"space.ndc": torch.tensor([1000.0, 960.0, 540.0, 1.0])}
    assert scene_mismatch(full, {"space.ndc": torch.tensor([125.0, 120.0, 68.0, 1.0])}) == ""
    assert scene_mismatch(full, {"space.ndc": torch.tensor([131.0, 120.0, 68.0, 1.0])}).startswith("NDC map")
    assert scene_mismatch(ndc, {"space.ndc": torch.zeros(4)}).startswith("NDC map [0.0, 0.0, 0.0] -> [1.5625")


def test_a_scene_with_the_same_box_cameras_and_times_but_other_content_is_refused(tiny_scene, whole, tmp_path, caplog):
    """Two scenes from the same cameras and times (two synthetic presets with one seed; D-NeRF scenes of 150 frames
    share box and frame spacing) differ in their images: the checkpoints' scene signature tells them apart, while
    the same scene copied elsewhere and read at another --downscale resumes."""
    other = write_scene(dataclasses.replace(PRESETS["tiny"], preset="spin"), tmp_path / "spin")
    out = shutil.copytree(whole, tmp_path / "run")
    before = files(out)
    with pytest.raises(CheckpointError) as err:
        Trainer(make_cfg(other, out, 6)).fit()
    assert f"was trained on another scene, {tiny_scene} (the training image files hold other bytes)" in str(err.value)
    assert files(out) == before
    copy = shutil.copytree(tiny_scene, tmp_path / "copy")
    with caplog.at_level("INFO", logger="kinfield"):
        assert Trainer(make_cfg(copy, out, 6, "--downscale", "2")).maybe_resume()
    assert f"the same scene as {copy}" in caplog.text
    # a checkpoint from before the signature: the path decides (refused while the scene it names is still there)
    for ckpt in list_checkpoints(out):
        state = torch.load(ckpt, weights_only=False)
        del state["scene_signature"]
        torch.save(state, ckpt)
    with pytest.raises(CheckpointError, match=f"which is still there, and this run names {other}"):
        Trainer(make_cfg(other, out, 6)).maybe_resume()


def test_resume_from_a_missing_file_is_a_clear_error_and_leaves_no_run_folder(tiny_scene, tmp_path, capsys):
    missing = tmp_path / "elsewhere" / "ckpt_0000002.pt"
    assert main_train(train_argv(tiny_scene, tmp_path / "run", "--resume", str(missing))) == 2
    assert f"error: --resume {missing}: no such checkpoint file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ metrics.jsonl
def test_a_metrics_row_cut_off_by_a_kill_does_not_swallow_the_next_row(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 2, "loss": 0.5}\n{"step": 4, "lo')
    MetricsLogger(tmp_path, tensorboard=False).log(4, {"loss": 0.25})
    assert read_metrics(tmp_path) == [{"step": 2, "loss": 0.5}, {"step": 4, "loss": 0.25}]


def test_resuming_another_runs_checkpoint_into_a_folder_with_a_run_is_refused(tiny_scene, whole, tmp_path, capsys):
    out = shutil.copytree(whole, tmp_path / "run")
    other = shutil.copytree(whole, tmp_path / "other")
    before = files(out)
    assert main_train(train_argv(tiny_scene, out, "--iters", "6", "--resume",
                                 str(other / "ckpts" / "ckpt_0000004.pt"))) == 2
    err = capsys.readouterr().err
    assert "is another run's checkpoint" in err and "checkpoints up to step 4" in err and files(out) == before
    assert main_train(train_argv(tiny_scene, out, "--resume", str(other / "ckpts"))) == 2
    assert "is a folder" in capsys.readouterr().err


def test_the_scene_signature_is_the_scene_whatever_the_downscale_or_folder(tiny_scene, tmp_path):
    """Times, cameras and the image files' bytes: the same at any --downscale and in a copy of the folder; a frame
    re-saved with other content, or a moved camera, is another scene."""
    from kinfield.data import load_scene
    from kinfield.train.checkpoint import scene_signature, signature_mismatch

    def signature(path, downscale=1):
        return scene_signature(load_scene(path, downscale=downscale, splits=("train",)).split("train"))

    full = signature(tiny_scene)
    assert full["files"] is not None
    copy = shutil.copytree(tiny_scene, tmp_path / "copy")
    for downscale in (1.5, 2, 3):
        assert signature_mismatch(full, signature(copy, downscale)) == "", downscale
    frame = copy / "train" / "r_001.png"
    import imageio.v3 as iio
    iio.imwrite(frame, iio.imread(frame)[::-1])  # one frame with other content
    assert signature_mismatch(full, signature(copy)) == "the training image files hold other bytes"
    moved = {**full, "poses": full["poses"].clone().double()}  # (any dtype or device: compared on the CPU)
    moved["poses"][3, 0, 3] += 0.5
    assert signature_mismatch(full, moved) == "the training cameras differ"
    assert signature_mismatch(full, {**full, "files": None}) == ""  # a scene rendered in memory: no files to compare
    # D-NeRF times live in the JSON, not in the image files: times alone that differ are another scene too
    assert signature_mismatch(full, {**full, "times": full["times"] + 0.01}) == "the training frames' times differ"
    n = full["times"].shape[0]
    assert signature_mismatch({**full, "times": full["times"][:-1]}, full) == f"{n} training frames -> {n - 1}"


def test_a_scene_regenerated_in_place_with_other_content_is_refused(tiny_scene, whole, tmp_path):
    scene = shutil.copytree(tiny_scene, tmp_path / "scene")
    out = tmp_path / "run"
    Trainer(make_cfg(scene, out, 2)).fit()
    write_scene(dataclasses.replace(PRESETS["tiny"], preset="spin"), scene, overwrite=True)  # same cameras and times
    with pytest.raises(CheckpointError, match="the scene there has changed since \\(the training image files hold"):
        Trainer(make_cfg(scene, out, 4)).maybe_resume()
