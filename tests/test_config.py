"""Tests of the flat configuration (kinfield.config): shipped files, precedence, errors, round trip."""
from __future__ import annotations

import argparse
import re
import signal
from pathlib import Path

import pytest
import torch
import yaml

from kinfield.config import (
    Config,
    TrainConfig,
    build_parser,
    from_flat_dict,
    parse_args,
    parse_train_args,
    save_config,
    to_flat_dict,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_configs_folder_is_not_empty():
    assert len(CONFIGS) >= 2


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_parses_and_every_key_takes_effect(path):
    cfg = parse_args(["--config", str(path)])
    assert isinstance(cfg, Config)
    flat = to_flat_dict(cfg)
    for key, value in (yaml.safe_load(path.read_text()) or {}).items():
        assert key in flat, f"{path.name}: {key} is not an option"
        got = flat[key]
        if isinstance(value, list):
            assert [type(v)(g) for g, v in zip(got, value)] == value
        else:
            assert got == value or got == type(got)(value), f"{path.name}: {key}"


def test_demo_config_is_the_cpu_config_at_the_demo_scenes_size_and_budget():
    """configs/demo.yaml runs configs/dnerf_cpu.yaml's settings: after parsing, every option is the same except the
    image scale (the demo scene is 64x64), the step count and the time cap, so the demo shows the tuned config."""
    demo = to_flat_dict(parse_args(["--config", str(REPO / "configs" / "demo.yaml")]))
    cpu = to_flat_dict(parse_args(["--config", str(REPO / "configs" / "dnerf_cpu.yaml")]))
    differ = {k for k in demo if demo[k] != cpu[k]}
    assert differ == {"downscale", "iters", "train_max_minutes"}, differ
    assert demo["iters"] < cpu["iters"] and demo["train_max_minutes"] < cpu["train_max_minutes"]


# What a GPU config may change in its CPU partner: sizes (grids, batches, marching, physics points, held-out views
# scored), step counts and logging, and the schedule that counts in steps. The model, motion and loss settings stay the
# ones tuned and measured on the CPU.
GPU_SCALE = {"downscale", "iters", "train_max_minutes", "train_rays", "train_min_rays", "train_max_rays",
             "train_target_samples", "train_log_every", "train_save_every", "train_val_every", "train_eval_max_views",
             "static_grid_n_levels", "dynamic_grid_n_levels", "dynamic_grid_per_level_scale", "render_step_size",
             "render_chunk", "render_occupancy_resolution", "kin_max_warp_rays", "kin_max_physics_points"}
GPU_SCHEDULE = {"kin_unlock_acceleration", "kin_unlock_jerk", "kin_physics_start", "kin_normal_start",
                "kin_hop_ramp_steps", "prior_decay_milestones", "prior_static_pretrain_steps", "prior_entropy_start",
                "prior_distortion_start"}


@pytest.mark.parametrize("gpu, cpu", [("dnerf.yaml", "dnerf_cpu.yaml"), ("nvidia.yaml", "nvidia_cpu.yaml")])
def test_gpu_config_is_its_cpu_config_at_gpu_scale(gpu, cpu):
    """The GPU configs carry their CPU partners' model, motion and loss settings; only sizes and the step schedule
    differ (a setting tuned on the CPU and changed there must be changed in the GPU config too, or listed here)."""
    on_gpu = to_flat_dict(parse_args(["--config", str(REPO / "configs" / gpu)]))
    on_cpu = to_flat_dict(parse_args(["--config", str(REPO / "configs" / cpu)]))
    differ = {k for k in on_gpu if on_gpu[k] != on_cpu[k]}
    assert differ <= GPU_SCALE | GPU_SCHEDULE, sorted(differ - GPU_SCALE - GPU_SCHEDULE)
    assert on_gpu["iters"] > 10 * on_cpu["iters"] and on_gpu["train_max_minutes"] == 0  # (no time cap)
    assert on_gpu["train_rays"] > on_cpu["train_rays"] and on_gpu["dynamic_grid_n_levels"] > on_cpu["dynamic_grid_n_levels"]
    assert on_gpu["kin_physics_start"] < on_gpu["iters"] and on_gpu["kin_unlock_jerk"] < on_gpu["iters"]
    # the schedules count from step 0: as on the CPU, the motion terms start a while after static pre-training ends
    for on in (on_gpu, on_cpu):
        pretrain = on["prior_static_pretrain_steps"]
        assert min(on["kin_physics_start"], on["kin_normal_start"], on["kin_unlock_acceleration"]) > pretrain


def test_unknown_key_in_file_is_an_error(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("iters: 3\nnot_an_option: 1\n")
    with pytest.raises(SystemExit) as exc:
        parse_args(["--config", str(f)])
    assert exc.value.code == 2
    assert "not_an_option" in capsys.readouterr().err


def test_truncated_key_is_not_taken_as_an_abbreviation(tmp_path, capsys):
    f = tmp_path / "typo.yaml"
    f.write_text("train_ray: 64\n")  # prefix of train_rays / train_max_rays...: must not set train_rays
    with pytest.raises(SystemExit):
        parse_args(["--config", str(f)])
    assert "train_ray" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--iter", "7"])


def test_unknown_option_on_command_line_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--no_such_option", "1"])
    assert exc.value.code == 2
    assert "no_such_option" in capsys.readouterr().err


def test_precedence_cli_over_file_over_default(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("iters: 40\ntrain_rays: 128\nbackground: [0.0, 0.0, 0.0]\ntrain_progress: false\n")
    cfg = parse_args(["--config", str(f), "--iters", "7", "--background", "0.5", "0.25", "1"])
    assert cfg.train.iters == 7  # command line beats the file
    assert cfg.data.background == (0.5, 0.25, 1.0)
    assert cfg.train.rays == 128 and cfg.train.progress is False  # file beats the default
    assert cfg.train.lr_grid == TrainConfig().lr_grid  # default where neither says
    assert cfg.static.grid.n_levels == Config().static.grid.n_levels
    assert parse_args([]) == Config()  # no file, no options: the dataclass defaults


def test_typed_values():
    cfg = parse_args(["--train_progress", "no", "--static_grid_per_level_scale", "1.25", "--render_chunk", "64"])
    assert cfg.train.progress is False
    assert cfg.static.grid.per_level_scale == 1.25 and isinstance(cfg.render.chunk, int)
    with pytest.raises(SystemExit):
        parse_args(["--train_progress", "maybe"])
    with pytest.raises(SystemExit):
        parse_args(["--iters", "2.5"])


def test_save_config_round_trip(tmp_path):
    cfg = parse_args(["--config", str(REPO / "configs" / "debug.yaml"), "--scene", "some/scene", "--iters", "11",
                      "--background", "0", "0.5", "1", "--train_progress", "false", "--render_step_size", "0.0125",
                      "--train_eval_split", ""])
    with_list = parse_args(["--kin_transport_decay_milestones", "100", "200"])
    # Config() holds an empty tuple option (kin_transport_decay_milestones), saved as ``[]``
    for i, c in enumerate([cfg, Config(), with_list]):
        path = tmp_path / f"config{i}.yaml"
        save_config(c, path)
        assert parse_args(["--config", str(path)]) == c
        assert from_flat_dict(yaml.safe_load(path.read_text())) == c
    assert with_list.kin.transport_decay_milestones == (100, 200)
    with pytest.raises(KeyError):
        from_flat_dict({"no_such_key": 1})


@pytest.mark.parametrize("argv", [[], ["scene_only"], ["--iters", "3"], ["scene", "--iters", "3"]])
def test_parse_train_args_usage_error(argv):
    with pytest.raises(SystemExit) as exc:
        parse_train_args(argv)
    assert str(exc.value.code).startswith("usage: python tools/train.py SCENE CONFIG")


def test_config_file_not_found(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SystemExit) as exc:
        parse_train_args(["scene", str(missing)])
    assert "config file not found" in str(exc.value.code) and str(missing) in str(exc.value.code)
    with pytest.raises(SystemExit) as exc:
        parse_args(["--config", str(missing)])
    assert exc.value.code == 2 and str(missing) in capsys.readouterr().err


def test_parse_train_args_takes_scene_and_overrides():
    cfg = parse_train_args(["my/scene", str(REPO / "configs" / "debug.yaml"), "--iters", "3"])
    assert cfg.data.scene == str(Path("my/scene").absolute()) and cfg.train.iters == 3  # as a path from anywhere
    again = parse_train_args(["my/scene", str(REPO / "configs" / "debug.yaml"), "--scene", "other/scene"])
    assert again.data.scene == str(Path("other/scene").absolute())
    assert cfg.static.grid.n_levels == 4  # from debug.yaml


def test_saved_runs_with_removed_options_still_load(caplog):
    """A run saved by an older version (an option since removed) opens with a warning, not an error."""
    flat = to_flat_dict(Config())
    flat["prior_removed_option"] = 3
    with caplog.at_level("WARNING", logger="kinfield"):
        assert from_flat_dict(flat, strict=False) == Config()
    assert "prior_removed_option" in caplog.text


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_builds_a_model_whose_fields_run(path):
    import torch

    from kinfield.train.trainer import build_model

    cfg = parse_args(["--config", str(path)])
    model = build_model(cfg, torch.tensor([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]), 0.05)
    x, t = torch.rand(8, 3) - 0.5, torch.rand(8)
    if model.kinematic is not None:
        q = model.kinematic(x, t)
        assert q.shape == (8, model.kinematic.order, 3) and torch.isfinite(q).all()
    sigma, rgb = model.dynamic(x, t, torch.nn.functional.normalize(torch.randn(8, 3), dim=-1))
    assert torch.isfinite(sigma).all() and rgb.shape == (8, 3)


@pytest.mark.parametrize("where", ["file", "command line", "list"])
def test_non_finite_float_options_are_errors_naming_the_option(tmp_path, capsys, where):
    """A NaN or infinite number (YAML's ``.nan`` / ``.inf``, or ``nan`` on the command line) stops at parsing,
    naming the option, rather than turning into NaNs in training."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("render_step_size: .nan\n" if where == "file" else "iters: 1\n")
    extra = {"file": [], "command line": ["--kin_rigidity_weight", "inf"], "list": ["--background", "1", "nan", "1"]}
    with pytest.raises(SystemExit) as exc:
        parse_train_args(["scene", str(cfg)] + extra[where])
    assert exc.value.code == 2
    option = {"file": "--render_step_size", "command line": "--kin_rigidity_weight", "list": "--background"}[where]
    assert f"argument {option}: expected a finite number" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("iters: 4\niters: 7\n", "'iters' is given twice"),
    ("train_rayz: 64\n", "unknown option 'train_rayz' (did you mean train_rays?)"),
    ("train_rays:\n", "train_rays has no value"),
    ("train_eval_split: no\n", "train_eval_split: YAML reads the bare word as the boolean False"),
    ("- iters\n", "expected 'option: value' lines"),
    ("iters: [4\n", "config file"),
])
def test_config_file_mistakes_are_refused_naming_the_file_and_the_key(tmp_path, text, message):
    """What configargparse would take silently (a repeated key: the last wins; no value: the default; ``no``: the
    text 'False') or report without naming the file (an unknown key) stops with the file, the key and the fix."""
    cfg_file = tmp_path / "mine.yaml"
    cfg_file.write_text(text)
    with pytest.raises(SystemExit) as exc:
        parse_train_args(["scene", str(cfg_file)])
    assert str(cfg_file) in str(exc.value.code) and message in str(exc.value.code)
    assert "<unicode string>" not in str(exc.value.code)  # (YAML's own name for the text: the file is named instead)


@pytest.mark.parametrize("option, value, message", [("--device", "gpu", "expected cpu, cuda, cuda:N or auto"),
                                                    ("--train_loss", "l1", "expected mse, huber or charbonnier")])
def test_options_with_fixed_values_are_checked_while_parsing(option, value, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_train_args(["scene", str(REPO / "configs" / "debug.yaml"), option, value])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    cfg = parse_train_args(["scene", str(REPO / "configs" / "debug.yaml"), "--device", "cuda:1", "--train_loss", "Huber"])
    assert cfg.train.device == "cuda:1" and cfg.train.loss == "huber"


def test_help_shows_every_default_and_list_options_can_be_emptied(capsys):
    with pytest.raises(SystemExit):
        parse_train_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())

    def shown_default(option):  # the "(default: ...)" that ends the option's entry
        entry = help_text.split(f" {option} {option[2:].upper()} ", 1)[1]
        return entry.split("(default: ", 1)[1].split(")", 1)[0]

    assert shown_default("--seed") == "0" and shown_default("--train_min_rays") == "256"
    cfg = parse_train_args(["scene", str(REPO / "configs" / "debug.yaml"), "--prior_decay_milestones"])
    assert cfg.prior.decay_milestones == ()
    assert Config().prior.decay_milestones != ()  # (a non-empty default, emptied)


def test_every_option_says_what_it_does():
    """Every option of the parser has a help text of its own (``field(..., metadata={"help": ...})`` next to the
    code that uses it), not only the default --help shows for an option without one: no option goes undocumented."""
    parser = build_parser()
    options = [a for a in parser._actions if a.option_strings]
    assert len(options) > 100  # (every option of Config, not a parser without them)
    undocumented = []
    for action in options:
        text = re.sub(r"\(?default: %\(default\)s\)?", "", action.help or "")  # (the placeholder of a bare field)
        if action.help == argparse.SUPPRESS or not re.search(r"[a-zA-Z]{2}", text):
            undocumented.append(action.option_strings[-1])
    assert not undocumented, f"options without a help text (give their fields metadata={{'help': ...}}): {undocumented}"


def test_config_file_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("iters: 5\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(SystemExit) as exc:
        parse_train_args(["scene", str(path)])
    assert str(path) in str(exc.value.code) and "line 2 is not UTF-8" in str(exc.value.code)


def test_option_errors_are_short_and_point_at_the_fix(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("iters: abc\ntrain_rays: 64\n")
    with pytest.raises(SystemExit) as exc:  # a bad value in the file names the file and its line
        parse_train_args(["scene", str(cfg)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.splitlines()) == 2, err  # one usage line, not the ~130 options
    assert err.startswith("usage: python tools/train.py SCENE CONFIG")
    assert "--iters: invalid int value: 'abc'" in err and f"config file {cfg}: fix its iters line" in err
    with pytest.raises(SystemExit):  # the same bad value on the command line: no file named
        parse_train_args(["scene", str(cfg), "--iters", "x"])
    err = capsys.readouterr().err
    assert "'x'" in err and "config file" not in err
    assert err.splitlines()[0].endswith("[--option value ...] (--help lists the options)")
    with pytest.raises(SystemExit):  # a misspelt option: the closest one, only when close
        parse_train_args(["scene", str(cfg), "--iters", "3", "--train_ray", "5", "--bogus"])
    err = capsys.readouterr().err
    assert "--train_ray (did you mean --train_rays?)" in err and "--bogus (" not in err


def test_help_opens_with_the_usage_alone(capsys):
    """--help lists the options: its usage line does not point at --help (an error's does, above)."""
    with pytest.raises(SystemExit):
        parse_train_args(["--help"])
    assert capsys.readouterr().out.splitlines()[0] == "usage: python tools/train.py SCENE CONFIG [--option value ...]"


def test_config_values_of_the_wrong_kind_name_the_line_and_the_fix(tmp_path, capsys):
    from kinfield.cli import main_train

    listed = tmp_path / "listed.yaml"
    listed.write_text("train_eval_split: [test]\n")
    with pytest.raises(SystemExit) as exc:
        parse_train_args(["scene", str(listed)])
    assert str(exc.value.code) == f"config file {listed}: train_eval_split takes one value, got ['test']; write " \
                                  f"train_eval_split: test"
    word = tmp_path / "word.yaml"
    word.write_text("background: white\n")
    assert main_train(["scene", str(word)]) == 2
    err = capsys.readouterr().err
    assert "--background: expected a number, got 'white'" in err and "fix its background line" in err
    assert main_train([str(word), str(tmp_path)]) == 2  # SCENE and CONFIG swapped
    err = capsys.readouterr().err
    assert err.startswith(f"error: config file not found: {tmp_path}") and "arguments are SCENE CONFIG" in err


@pytest.mark.parametrize("tool, option", [("render", "--no-progress"), ("eval", "--no-progress"), ("export", "--points"),
                                          ("eval_motion", "--substeps"), ("plot", "--smoothing"),
                                          ("preprocess", "--no-progress")])
def test_every_tool_errs_in_one_usage_line_and_names_the_option_meant(tool, option, capsys):
    from kinfield import cli

    main = getattr(cli, f"main_{tool}")
    positional = ["in", "out"] if tool == "preprocess" else ["run"]
    with pytest.raises(SystemExit) as exc:
        main(positional + [option[:-1], "--frobnicate"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.splitlines()) == 2, err  # not argparse's wrapped list of every option
    assert err.startswith("usage: tools/") and "[options] (--help lists the options)" in err.splitlines()[0]
    assert f"{option[:-1]} (did you mean {option}?)" in err and "--frobnicate (" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_device_the_machine_lacks_is_a_bad_input_error(tmp_path, capsys):
    from kinfield.cli import main_train
    from kinfield.data.synthetic import PRESETS, write_scene

    scene = write_scene(PRESETS["tiny"], tmp_path / "scene")
    before = signal.getsignal(signal.SIGTERM)
    code = main_train([str(scene), str(Path(__file__).parents[1] / "configs" / "debug.yaml"), "--device", "cuda", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --device cuda: no CUDA device") and "use --device cpu" in err
    assert signal.getsignal(signal.SIGTERM) is before  # training's SIGTERM-as-Ctrl-C handler is put back



def test_the_config_may_be_given_with_the_option_help_lists():
    """``SCENE CONFIG``, ``SCENE -c CONFIG``, ``SCENE --config CONFIG`` and ``SCENE --config=CONFIG`` are the same."""
    cfg_file = str(Path(__file__).parents[1] / "configs" / "debug.yaml")
    plain = parse_train_args(["scene", cfg_file, "--iters", "7"])
    assert plain.train.iters == 7
    for form in (["-c", cfg_file], ["--config", cfg_file], [f"--config={cfg_file}"]):
        assert parse_train_args(["scene", *form, "--iters", "7"]) == plain, form


@pytest.mark.parametrize("text, value", [("1", True), ("true", True), ("YES", True), (" On ", True), ("True", True),
                                         ("0", False), ("false", False), ("No", False), ("OFF", False),
                                         ("False", False)])
def test_boolean_options_take_every_documented_spelling_in_any_case(text, value):
    """1/true/yes/on and 0/false/no/off, case and surrounding spaces ignored (YAML's booleans arrive as True/False)."""
    assert parse_args(["--train_progress", text]).train.progress is value
    assert parse_args(["--model_use_static", text]).model.use_static is value


@pytest.mark.parametrize("text, device", [("cpu", "cpu"), (" CPU ", "cpu"), ("Cuda", "cuda"), ("CUDA:1", "cuda:1"),
                                          ("cuda:12", "cuda:12"), ("auto", "auto")])
def test_device_spellings_are_normalised_for_training_and_the_tools(text, device):
    """--device: cpu, cuda, cuda:N or auto in any case; the tools' ``_device`` checks it the same way."""
    from kinfield.cli import _device

    assert parse_args(["--device", text]).train.device == device
    assert _device(text) == device


@pytest.mark.parametrize("text", ["cuda:", "cuda:x", "cuda:-1", "cuda1", "gpu", ""])
def test_device_spellings_that_name_no_device_are_refused(text, capsys):
    from kinfield.cli import _device

    with pytest.raises(SystemExit):
        parse_args(["--device", text])
    assert "expected cpu, cuda, cuda:N or auto" in capsys.readouterr().err
    with pytest.raises(argparse.ArgumentTypeError, match="expected cpu, cuda, cuda:N or auto"):
        _device(text)
