"""Tests of checkpoints (kinfield.train.checkpoint) and of resuming a Trainer from them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kinfield.config import parse_args
from kinfield.data.synthetic import PRESETS, write_scene
from kinfield.geometry import pixel_rays
from kinfield.cli import main_train
from kinfield.train import Trainer
from kinfield.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]
# a few rays per step: every step is a real step of the debug config, just cheaper
FAST = ["--train_rays", "64", "--train_min_rays", "64", "--train_target_samples", "0"]


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    return write_scene(PRESETS["tiny"], tmp_path_factory.mktemp("tiny") / "scene")


def make_cfg(scene, out, iters, *extra):
    return parse_args(["--config", str(REPO / "configs" / "debug.yaml"), "--scene", str(scene), "--out", str(out),
                       "--device", "cpu", "--iters", str(iters), "--train_eval_split", "", *FAST, *extra])


def assert_same_tree(a, b, path="state"):
    """Recursive exact equality of nested dicts / lists / tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            assert_same_tree(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def fixed_rays(trainer):
    """32 fixed pixels of the training split: ``origins, dirs, times``."""
    g = torch.Generator().manual_seed(123)
    split = trainer.train_split
    h, w = split.height, split.width
    frame = torch.randint(0, split.num_frames, (32,), generator=g)
    rows, cols = torch.randint(0, h, (32,), generator=g), torch.randint(0, w, (32,), generator=g)
    o, d = pixel_rays(split.poses[frame], split.intrinsics[frame], rows, cols)
    return o, d, split.times[frame]


def steps(trainer, n):
    for _ in range(n):
        trainer.train_step()
        trainer.step += 1


# --------------------------------------------------------------------------------- save / load
def test_save_load_restores_outputs_and_optimizer(tiny_scene, tmp_path):
    a = Trainer(make_cfg(tiny_scene, tmp_path / "a", 4))
    steps(a, 2)  # non-trivial Adam moments, occupancy grid, ray count
    path = a.save()
    assert path == tmp_path / "a" / "ckpts" / "ckpt_0000002.pt"
    b = Trainer(make_cfg(tiny_scene, tmp_path / "b", 4, "--seed", "1"))  # other init: loading must overwrite it
    o, d, t = fixed_rays(a)
    bg = torch.ones(3)
    assert not torch.equal(a.model.render_rays(o, d, t, bg)["rgb"], b.model.render_rays(o, d, t, bg)["rgb"])
    b.load_state_dict(load_checkpoint(path))
    assert b.step == 2 and b.n_rays == a.n_rays
    assert_same_tree(a.model.state_dict(), b.model.state_dict())
    assert_same_tree(a.optimizer.state_dict(), b.optimizer.state_dict())
    assert_same_tree(a.scheduler.state_dict(), b.scheduler.state_dict())
    with torch.no_grad():
        ra, rb = a.model.render_rays(o, d, t, bg), b.model.render_rays(o, d, t, bg)
    for k in ("rgb", "depth", "opacity"):
        assert torch.equal(ra[k], rb[k]), k
    # and they keep training identically: b's batch generator came from the checkpoint; the global
    # torch RNG (set by load_state_dict to the saved state) is shared by both trainers in this process
    rng = torch.get_rng_state()
    assert torch.equal(rng, load_checkpoint(path)["rng"]["torch"])
    steps(a, 1)
    torch.set_rng_state(rng)
    steps(b, 1)
    assert_same_tree(a.model.state_dict(), b.model.state_dict())


def test_atomic_write_and_names(tmp_path):
    p = save_checkpoint(tmp_path, 3, {"model": {"w": torch.arange(4)}})
    assert p.name == "ckpt_0000003.pt" and p.is_file()
    assert sorted(x.name for x in (tmp_path / "ckpts").iterdir()) == ["ckpt_0000003.pt"]  # no .tmp left
    state = load_checkpoint(p)
    assert state["step"] == 3 and state["format_version"] == 1 and torch.equal(state["model"]["w"], torch.arange(4))


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    good = save_checkpoint(tmp_path, 2, {"x": 1})

    def broken_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="disk full"):  # (the error names the file and the one kept)
        save_checkpoint(tmp_path, 4, {"x": 2})
    monkeypatch.undo()
    assert not (tmp_path / "ckpts" / "ckpt_0000004.pt").exists()
    assert not (tmp_path / "ckpts" / "ckpt_0000004.pt.tmp").exists()  # removed: it would keep a full disk full
    assert latest_checkpoint(tmp_path) == good and list_checkpoints(tmp_path) == [good]
    assert load_checkpoint(good)["x"] == 1
    (tmp_path / "ckpts" / "ckpt_0000004.pt.tmp").write_bytes(b"half")  # what a run killed while saving leaves
    assert list_checkpoints(tmp_path) == [good]  # the .tmp is ignored
    save_checkpoint(tmp_path, 6, {"x": 3})  # the next save clears the half-written file away
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["ckpt_0000002.pt", "ckpt_0000006.pt"]


def test_keep_prunes_oldest(tmp_path):
    for s in (1, 2, 10, 3):
        save_checkpoint(tmp_path, s, {}, keep=2)
    # numeric order, not write order: after saving 3, the newest two are 3 and 10
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_0000003.pt", "ckpt_0000010.pt"]
    for s in (20, 21, 22):
        save_checkpoint(tmp_path, s, {}, keep=0)  # 0 keeps everything
    assert len(list_checkpoints(tmp_path)) == 5
    assert latest_checkpoint(tmp_path).name == "ckpt_0000022.pt"
    assert latest_checkpoint(tmp_path / "nothing_here") is None


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    good = save_checkpoint(tmp_path, 1, {"model": {"w": torch.zeros(1000)}})
    bad = tmp_path / "ckpts" / "ckpt_0000005.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # truncated
    with pytest.raises(RuntimeError, match="ckpt_0000005.pt") as err:
        load_checkpoint(bad)
    # one line, and the way back: the earlier checkpoint beside it (nothing is deleted on the user's behalf)
    assert "\n" not in str(err.value) and "damaged" in str(err.value) and "delete" not in str(err.value)
    assert f"earlier checkpoint, {good}: move ckpt_0000005.pt out of" in str(err.value)
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(RuntimeError, match="ckpt_0000005.pt"):
        load_checkpoint(bad)
    good.write_bytes(b"\x00garbage")  # no earlier one to fall back to
    with pytest.raises(RuntimeError, match="pass another checkpoint, or train again"):
        load_checkpoint(good)
    foreign = tmp_path / "foreign.pt"
    torch.save([1, 2, 3], foreign)
    with pytest.raises(RuntimeError, match="foreign.pt.*not a kinfield checkpoint"):
        load_checkpoint(foreign)
    newer = tmp_path / "newer.pt"
    torch.save({"format_version": 99, "step": 0}, newer)
    with pytest.raises(RuntimeError, match="format 99"):
        load_checkpoint(newer)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_trainer_resume_from_corrupt_latest_names_it(tiny_scene, tmp_path):
    save_checkpoint(tmp_path, 2, {"x": 1})
    (tmp_path / "ckpts" / "ckpt_0000002.pt").write_bytes(b"junk")
    tr = Trainer(make_cfg(tiny_scene, tmp_path, 4))
    with pytest.raises(RuntimeError, match="ckpt_0000002.pt"):
        tr.maybe_resume()


# ------------------------------------------------------------------------------------- resume
def read_metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extra", [(), ("--train_dynamic_ray_fraction", "0.5", "--kin_start", "0"),
                                   ("--train_dynamic_ray_fraction", "0.5", "--kin_start", "0",
                                    "--train_dynamic_ray_map", "motion")],
                         ids=["uniform-rays", "dynamic-rays", "motion-rays"])
def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_scene, tmp_path, extra):
    """4 steps in one go vs. a run of the same config killed after step 2 and resumed: the trainer
    checkpoints model, Adam, scheduler, ray count, both RNG states and the dynamic-ray map, so the
    result is bit-identical."""
    whole = Trainer(make_cfg(tiny_scene, tmp_path / "whole", 4, *extra))
    assert whole.fit()["step"] == 4
    if extra:
        assert whole.batcher.importance is not None and int((whole.batcher.importance != 64).sum()) > 0

    cut = Trainer(make_cfg(tiny_scene, tmp_path / "cut", 4, *extra))
    real_step = cut.train_step

    def interrupted_step():
        if cut.step == 2:
            raise KeyboardInterrupt  # Ctrl-C at the start of step 3
        return real_step()

    cut.train_step = interrupted_step
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    assert latest_checkpoint(tmp_path / "cut").name == "ckpt_0000002.pt"

    resumed = Trainer(make_cfg(tiny_scene, tmp_path / "cut", 4, *extra))
    result = resumed.fit()
    assert result["step"] == 4 and resumed.step == 4
    if extra:
        assert torch.equal(whole.batcher.importance, resumed.batcher.importance)
    assert_same_tree(whole.model.state_dict(), resumed.model.state_dict())
    assert_same_tree(whole.optimizer.state_dict(), resumed.optimizer.state_dict())

    rows_whole, rows_cut = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "cut")
    assert [r["step"] for r in rows_cut] == [r["step"] for r in rows_whole] == [2, 4, 4]
    for a, b in zip(rows_whole, rows_cut):
        for k in ("loss", "psnr", "rays", "samples", "lr"):
            assert a.get(k) == b.get(k), k
    times = [r.get("time_s", r.get("train_time_s")) for r in rows_cut]
    assert times == sorted(times)  # wall time continues across the resume


def test_resume_with_more_iters_continues(tiny_scene, tmp_path):
    """``--iters 2`` then the same run with ``--iters 4``: continues from step 2 to 4 and appends to
    metrics.jsonl. (Not bit-equal to a 4-step run: the learning-rate decay is spread over ``iters``.)"""
    out = tmp_path / "run"
    assert Trainer(make_cfg(tiny_scene, out, 2)).fit()["step"] == 2
    assert [p.name for p in list_checkpoints(out)] == ["ckpt_0000002.pt"]
    again = Trainer(make_cfg(tiny_scene, out, 4))
    assert again.fit()["step"] == 4
    assert [r["step"] for r in read_metrics(out)] == [2, 2, 4, 4]
    assert latest_checkpoint(out).name == "ckpt_0000004.pt"
    # nothing left to do: a third start resumes at 4 and trains no further step
    third = Trainer(make_cfg(tiny_scene, out, 4))
    assert third.fit()["step"] == 4
    assert_same_tree(again.model.state_dict(), third.model.state_dict())
    # --resume none would start over in the folder of this run: refused (see test_resume_safety.py)
    with pytest.raises(CheckpointError, match="earlier run's checkpoints"):
        Trainer(make_cfg(tiny_scene, out, 4, "--resume", "none")).maybe_resume()


def test_resuming_a_run_of_other_model_options_names_the_file_and_keeps_the_run(tiny_scene, tmp_path, capsys):
    """Training into the folder of a run made with other model options (e.g. the demo's folder after a config
    change): a clear error naming the checkpoint, what differs and what to do, exit code 2 from tools/train.py;
    the old checkpoint and config.yaml stay as they were."""
    out = tmp_path / "run"
    assert Trainer(make_cfg(tiny_scene, out, 2)).fit()["step"] == 2
    ckpt = latest_checkpoint(out)
    before = ckpt.read_bytes(), (out / "config.yaml").read_text()
    other = ("--dynamic_grid_n_levels", "3", "--model_use_static", "false")
    with pytest.raises(CheckpointError) as err:
        Trainer(make_cfg(tiny_scene, out, 4, *other)).fit()
    msg = str(err.value)
    assert str(ckpt) in msg and "another --out" in msg and "config.yaml" in msg
    assert "only in the checkpoint: static." in msg and "dynamic.encoding.params" in msg
    argv = [str(tiny_scene), str(REPO / "configs" / "debug.yaml"), "--out", str(out), "--device", "cpu",
            "--iters", "4", "--train_eval_split", "", *FAST, *other]
    assert main_train(argv) == 2 and str(ckpt) in capsys.readouterr().err
    assert (ckpt.read_bytes(), (out / "config.yaml").read_text()) == before
    assert [p.name for p in list_checkpoints(out)] == [ckpt.name]


def test_resume_from_a_checkpoint_with_another_optimizer_layout_keeps_the_model(tiny_scene, tmp_path, caplog):
    """Checkpoints of versions with other parameter groups: weights restored, Adam restarted with a
    warning, and every group's learning rate is the schedule's value at the resumed step."""
    trainer = Trainer(make_cfg(tiny_scene, tmp_path / "run", 6))
    steps(trainer, 3)
    trainer.step = 3
    state = trainer.state_dict()
    state["step"] = 3
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:2]  # an older, coarser layout
    fresh = Trainer(make_cfg(tiny_scene, tmp_path / "run2", 6))
    with caplog.at_level("WARNING", logger="kinfield"):
        fresh.load_state_dict(state)
    assert "optimizer state not restored" in caplog.text
    assert_same_tree(fresh.model.state_dict(), trainer.model.state_dict())
    assert fresh.step == 3 and fresh.scheduler.last_epoch == 3
    for group, base in zip(fresh.optimizer.param_groups, fresh.scheduler.base_lrs):
        assert group["lr"] == pytest.approx(base * fresh._lr_factor(3))
    steps(fresh, 1)  # and it trains on


def test_motion_map_records_the_kinematic_fields_rendered_motion(tiny_scene, tmp_path):
    """``--train_dynamic_ray_map motion``: after a step, each warp ray's pixel holds the displacement per frame
    F_K renders on it (dynamic-weighted |v| Delta) relative to the reference, clamped to [0, 1]; the other
    pixels of the batch keep their value (the dynamic probability would mark still content too)."""
    tr = Trainer(make_cfg(tiny_scene, tmp_path, 1, "--train_dynamic_ray_fraction", "0.5", "--kin_start", "0",
                          "--train_dynamic_ray_map", "motion", "--kin_max_warp_rays", "8"))
    # a field that moves everything at one velocity, (0.3, 0.3, 0.3) reference displacements per frame
    ref = tr.cfg.train.motion_map_cells * tr.model.dynamic_finest_cell()
    kin = tr.model.kinematic
    real_forward = kin.forward
    kin.forward = lambda x, t: torch.cat([torch.full_like(real_forward(x, t)[:, :1], 0.3 * ref / tr.kinematic.dt),
                                          torch.zeros_like(real_forward(x, t)[:, 1:])], dim=1)
    seen = {}
    real_motion, real_sample = tr.kinematic.ray_motion, tr.batcher.sample
    tr.kinematic.ray_motion = lambda ctx: seen.setdefault("moved", real_motion(ctx))
    tr.batcher.sample = lambda *a: seen.setdefault("batch", real_sample(*a))
    before = tr.batcher.importance.clone()
    tr.train_step()
    moved, flat = seen["moved"], seen["batch"]["flat"]
    assert moved.shape == (8,)
    expect = (moved / ref).clamp(0, 1)
    assert torch.equal(tr.batcher.importance[flat[:8]], torch.round(expect * 255).to(torch.uint8))
    assert float(expect.max()) > 0.1  # rays that see content: about 0.3 * sqrt(3) times their dynamic opacity
    rest = flat[8:][~torch.isin(flat[8:], flat[:8])]
    assert torch.equal(tr.batcher.importance[rest], before[rest])


def test_motion_gate_is_switched_on_at_kin_gate_start_and_resumes_in_that_state(tiny_scene, tmp_path):
    tr = Trainer(make_cfg(tiny_scene, tmp_path, 3, "--kin_start", "0", "--kinematic_motion_gate", "true",
                          "--kin_gate_start", "2"))
    x, t = torch.zeros(4, 3), torch.full((4,), 0.5)
    steps(tr, 2)  # steps 0 and 1: the gate is a factor of 1
    assert tr.model.kinematic.gate(x, t).eq(1).all()
    tr.save()
    resumed = Trainer(make_cfg(tiny_scene, tmp_path, 3, "--kin_start", "0", "--kinematic_motion_gate", "true",
                               "--kin_gate_start", "2"))
    assert resumed.maybe_resume() and resumed.model.kinematic.gate(x, t).eq(1).all()
    steps(resumed, 1)  # step 2 switches it on
    assert resumed.model.kinematic.gate(x, t).lt(1).all()


def test_the_probability_map_holds_each_steps_values_after_the_step(tiny_scene, tmp_path, monkeypatch):
    """``--train_dynamic_ray_map probability``: after a step (its map update comes after the optimizer's, off the
    forward-backward path), each batch pixel holds that step's dynamic probability; a step dropped for a non-finite
    loss records them too."""
    import kinfield.train.trainer as trainer_module
    from kinfield.losses import Term

    tr = Trainer(make_cfg(tiny_scene, tmp_path, 1, "--train_dynamic_ray_fraction", "0.5", "--kin_enabled", "false"))
    seen = {}
    real = trainer_module.dynamic_probability
    monkeypatch.setattr(trainer_module, "dynamic_probability", lambda samples: seen.setdefault("p", real(samples)))
    real_sample = tr.batcher.sample
    tr.batcher.sample = lambda *a: seen.setdefault("batch", real_sample(*a))
    for poison in (False, True):
        seen.clear()
        if poison:
            tr.terms.append(Term("poison", lambda ctx: torch.tensor(float("nan"))))
        out = tr.train_step()
        assert ("skipped_nonfinite" in out) == poison
        flat, p = seen["batch"]["flat"], seen["p"]
        pixels, counts = torch.unique(flat, return_counts=True)
        once = torch.isin(flat, pixels[counts == 1])  # (a pixel drawn twice keeps one of its values)
        assert int(once.sum()) > 10
        assert torch.equal(tr.batcher.importance[flat[once]], torch.round(p[once].clamp(0, 1) * 255).to(torch.uint8))


def test_tensorboard_mirrors_the_log_and_a_resume_hides_the_retrained_steps(tiny_scene, tmp_path):
    """With the tensorboard package installed, RUN/tb/ holds every number of metrics.jsonl at its step and the final
    scores; a run resumed from an earlier checkpoint than its last logged step hides the earlier session's values after
    it (they are trained again), and ``--train_tensorboard false`` writes no event files."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tb_scalars(run):
        acc = EventAccumulator(str(run / "tb"))
        acc.Reload()
        return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}

    out = tmp_path / "run"
    Trainer(make_cfg(tiny_scene, out, 4, "--train_log_every", "1", "--train_save_every", "2")).fit()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = tb_scalars(out)
    assert [s for s, _ in first["loss"]] == [1, 2, 3, 4]
    for row in rows:  # (float32 in the event file)
        for key, value in row.items():
            if key != "step":
                assert any(s == row["step"] and v == pytest.approx(value, rel=1e-6, abs=1e-6) for s, v in first[key]), key
    # the session is cut back to its step-2 checkpoint and continued: steps 3-4 are trained again
    (out / "ckpts" / "ckpt_0000004.pt").unlink()
    Trainer(make_cfg(tiny_scene, out, 4, "--train_log_every", "1", "--train_save_every", "2")).fit()
    again = tb_scalars(out)
    assert [s for s, _ in again["loss"]] == [1, 2, 3, 4]  # (each step once: the first session's 3 and 4 purged)
    assert again["loss"][:2] == first["loss"][:2]
    # a run scored at the end: its scores (metrics.json) at its last step
    scored = tmp_path / "scored"
    Trainer(make_cfg(tiny_scene, scored, 2, "--train_eval_split", "test", "--train_eval_lpips", "false")).fit()
    test = json.loads((scored / "metrics.json").read_text())["test"]
    got = tb_scalars(scored)
    assert got["test/psnr"] == [(2, pytest.approx(test["psnr"], rel=1e-6))]
    assert got["test/ssim"] == [(2, pytest.approx(test["ssim"], rel=1e-6))] and "test/lpips" not in got  # (off)
    # each validation's first view beside its ground truth, as an image
    seen = tmp_path / "seen"
    Trainer(make_cfg(tiny_scene, seen, 2, "--train_val_every", "1", "--train_val_views", "1")).fit()
    acc = EventAccumulator(str(seen / "tb"))
    acc.Reload()
    images = acc.Images("val/render | ground truth")
    size = PRESETS["tiny"].resolution
    assert [e.step for e in images] == [1, 2] and (images[0].height, images[0].width) == (size, 2 * size)
    quiet = tmp_path / "quiet"
    Trainer(make_cfg(tiny_scene, quiet, 2, "--train_tensorboard", "false")).fit()
    assert (quiet / "metrics.jsonl").is_file() and not (quiet / "tb").exists()


def test_a_tensorboard_that_fails_to_import_leaves_the_run_going(tmp_path, monkeypatch, caplog):
    """An installed tensorboard that breaks on import (e.g. a protobuf version mismatch): a warning with the fix, the
    log written as always; one that is not installed: nothing said."""
    import builtins

    from kinfield.train.logger import MetricsLogger

    real_import = builtins.__import__

    def failing(error):
        def fake_import(name, *args, **kwargs):
            if name == "torch.utils.tensorboard":
                raise error
            return real_import(name, *args, **kwargs)
        return fake_import

    monkeypatch.setattr(builtins, "__import__", failing(TypeError("Descriptors cannot be created directly")))
    logger = MetricsLogger(tmp_path / "a")
    logger.log(1, {"loss": 0.5})
    logger.close()
    assert "tensorboard package fails to import (TypeError: Descriptors" in caplog.text
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == '{"step": 1, "loss": 0.5}\n'
    caplog.clear()
    monkeypatch.setattr(builtins, "__import__", failing(ImportError("No module named 'tensorboard'")))
    MetricsLogger(tmp_path / "b").close()
    assert "TensorBoard" not in caplog.text


def test_tensorboard_of_a_fresh_start_in_a_used_folder_and_of_a_rerun_that_scores(tiny_scene, tmp_path):
    """A new run in a folder whose earlier run was removed (checkpoints and logs deleted, tb/ left) shows only its own
    steps; the rerun of a finished run whose scoring was cut short adds the scores; a rerun with nothing to do writes no
    event file."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tb_scalars(run):
        acc = EventAccumulator(str(run / "tb"))
        acc.Reload()
        return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}

    out = tmp_path / "run"
    Trainer(make_cfg(tiny_scene, out, 4, "--train_log_every", "1")).fit()
    for name in ("ckpts", "metrics.jsonl", "train_time.txt"):
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    Trainer(make_cfg(tiny_scene, out, 2, "--train_log_every", "1", "--seed", "5")).fit()
    assert tb_scalars(out)["loss"] == [1, 2]
    # the finished run again, now with a split to score (as after a Ctrl-C during the scoring)
    Trainer(make_cfg(tiny_scene, out, 2, "--train_log_every", "1", "--seed", "5", "--train_eval_split", "test",
                     "--train_eval_lpips", "false")).fit()
    assert tb_scalars(out)["test/psnr"] == [2]
    n_files = len(list((out / "tb").iterdir()))
    Trainer(make_cfg(tiny_scene, out, 2, "--train_log_every", "1", "--seed", "5", "--train_eval_split", "test",
                     "--train_eval_lpips", "false")).fit()
    assert len(list((out / "tb").iterdir())) == n_files
