"""Bad input to render / export_trajectories / eval_motion: one ``error: ...`` line and exit code 2 before any
rendering or integration; the Taylor orders a checkpoint had not unlocked yet stay zero (and are said to be)."""
import json
import shutil

import numpy as np
import pytest
import torch

import kinfield.motion
import kinfield.motion.export
import kinfield.render.video
from kinfield.cli import _render_parser, main_eval_motion, main_export, main_render


def _variant(run, dst, edit):
    """A copy of ``run`` (its config and latest checkpoint) with the checkpoint's model state changed by ``edit``."""
    (dst / "ckpts").mkdir(parents=True)
    shutil.copy(run / "config.yaml", dst / "config.yaml")
    ckpt = max((run / "ckpts").glob("ckpt_*.pt"))
    state = torch.load(ckpt, weights_only=False)
    edit(state["model"])
    torch.save(state, dst / "ckpts" / ckpt.name)
    return dst


def _no_kinematic_field(model):
    for k in [k for k in model if k.startswith(("kinematic.", "normal_net."))]:
        del model[k]


def _jerk_locked(model):
    """Stopped between the acceleration and the jerk unlock, with a head that gives every order non-zero values."""
    model["kinematic.taylor_mask"] = torch.tensor([1.0, 1.0, 0.0])
    model["kinematic.mlp.net.4.bias"] = torch.linspace(0.5, 1.5, model["kinematic.mlp.net.4.bias"].numel())


def _forbid(monkeypatch, module, name):
    """Make ``module.name`` (a long computation) fail the test if it is reached."""
    def boom(*args, **kwargs):
        raise AssertionError(f"{name} ran before the bad input was reported")

    monkeypatch.setattr(module, name, boom)


@pytest.fixture
def points(tmp_path):
    path = tmp_path / "pts.txt"
    path.write_text("0 0 0\n0.1 0.2 0.3\n")
    return path


def _export(run, *extra):  # 3 times around --time 0.5, one RK4 step each way: quick
    return main_export([str(run), "--device", "cpu", "--times", "0.4,0.5,0.6", "--substeps", "1", *map(str, extra)])


def test_kinematic_outputs_of_a_run_without_the_field_are_refused_before_rendering(trained_run, tmp_path, capsys,
                                                                                     monkeypatch):
    help_text = " ".join(_render_parser().format_help().split())
    assert "rgb,depth,static,dynamic,velocity,acceleration,jerk" in help_text
    run = _variant(trained_run, tmp_path / "nokin", _no_kinematic_field)
    _forbid(monkeypatch, kinfield.render.video, "render_frames")
    out = tmp_path / "vids"
    assert main_render([str(run), "--path", "orbit", "--frames", "1", "--outputs", "rgb,velocity,jerk",
                        "--device", "cpu", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--outputs velocity,jerk" in err and "kinematic field" in err
    assert not out.exists()
    assert _export(run) == 2 and "kinematic field" in capsys.readouterr().err
    assert main_eval_motion([str(run), "--device", "cpu"]) == 2 and "kinematic field" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--out", "{tmp}/tracks.txt"], "--out"),
    (["--view", "99"], "--view 99 out of range"),
])
def test_export_checks_its_options_before_integrating(trained_run, tmp_path, capsys, monkeypatch, argv, message):
    _forbid(monkeypatch, kinfield.motion, "compute_trajectories")
    _forbid(monkeypatch, kinfield.motion, "sample_dynamic_points")
    assert _export(trained_run, *[a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    if "--out" in argv:
        assert "'txt'" in err and "--format" in err and not list(tmp_path.iterdir())


def test_export_to_a_path_it_cannot_write_fails_before_integrating(trained_run, tmp_path, capsys, monkeypatch):
    """An --out under a file (or a read-only folder) is one error line, before any track is integrated (it failed
    only at the write, after the tracks were computed); its folder is made only once the other options are checked
    (a bad --times leaves no new folder)."""
    _forbid(monkeypatch, kinfield.motion, "compute_trajectories")
    (tmp_path / "a_file").write_text("")
    (tmp_path / "pts.txt").write_text("0 0 0\n")
    assert _export(trained_run, "--points", tmp_path / "pts.txt", "--out", str(tmp_path / "a_file" / "t.npz")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "a file is where a folder is expected: choose another --out" in err
    assert _export(trained_run, "--points", tmp_path / "pts.txt", "--times", "1.5", "--out",
                   str(tmp_path / "new" / "t.npz")) == 2
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("tool, option", [(main_export, "--substeps"), (main_export, "--n-points"),
                                          (main_eval_motion, "--substeps")])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_step_and_point_counts_below_one_are_refused(trained_run, capsys, monkeypatch, tool, option, value):
    _forbid(monkeypatch, kinfield.motion.export, "compute_trajectories")
    _forbid(monkeypatch, kinfield.motion, "compute_trajectories")
    with pytest.raises(SystemExit) as exc:
        tool([str(trained_run), option, value, "--device", "cpu"])
    assert exc.value.code == 2 and f"{option} must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("out, fmt, written", [("tracks", None, "tracks.npz"), ("x.json", "npz", "x.json.npz"),
                                               ("t.json", None, "t.json")])
def test_export_reports_the_file_it_really_writes(trained_run, tmp_path, points, capsys, out, fmt, written):
    argv = ["--points", points, "--out", tmp_path / out] + (["--format", fmt] if fmt else [])
    assert _export(trained_run, *argv) == 0
    reported = json.loads(capsys.readouterr().out)["written"]
    assert reported == str(tmp_path / written) and (tmp_path / written).is_file()
    if written.endswith(".npz"):  # what tools/render.py --overlay-tracks is then given
        assert np.load(reported)["positions"].shape == (3, 2, 3)


def test_orders_the_checkpoint_had_not_unlocked_stay_zero_and_are_named(trained_run, tmp_path, points, capsys):
    run = _variant(trained_run, tmp_path / "run", _jerk_locked)
    assert _export(run, "--points", points, "--out", tmp_path / "tracks.npz") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["untrained_orders"] == ["jerk"]
    assert "note: jerk not yet trained at step 4" in captured.err
    tracks = np.load(tmp_path / "tracks.npz")
    assert tracks["untrained_orders"].tolist() == ["jerk"]
    assert not tracks["jerk"].any() and np.abs(tracks["acceleration"]).min() > 0
    assert _export(run, "--points", points, "--out", tmp_path / "tracks.json") == 0
    assert json.loads((tmp_path / "tracks.json").read_text())["untrained_orders"] == ["jerk"]
    capsys.readouterr()

    assert main_eval_motion([str(run), "--device", "cpu", "--substeps", "1"]) == 0
    captured = capsys.readouterr()
    scores = json.loads(captured.out)
    assert scores["jerk_abs_err"] is None and scores["jerk_rel_err"] is None
    assert scores["acceleration_abs_err"] > 0 and scores["velocity_abs_err"] > 0
    assert json.loads((run / "metrics.json").read_text())["motion"]["jerk_rel_err"] is None
    assert "their errors are reported as null" in captured.err


def _motion_files(tmp_path, gt_path):
    """Broken variants of a scene's motion_gt.npz: (file, what the error must say)."""
    gt = dict(np.load(gt_path))
    (tmp_path / "garbage.npz").write_bytes(b"\x80\x04 not an archive at all" * 8)
    np.savez(tmp_path / "no_keys.npz", **{k: v for k, v in gt.items() if k not in ("times", "jerk")})
    np.savez(tmp_path / "short.npz", **{**gt, "positions": gt["positions"][:-1]})
    # the run's own exported tracks hold the same arrays: they would score the field against itself
    np.savez(tmp_path / "tracks.npz", **{k: gt[k] for k in ("times", "query_time", "query_points", "positions",
                                                             "velocity", "acceleration", "jerk")},
             untrained_orders=np.array([], dtype=str))
    return [(tmp_path / "garbage.npz", "not an npz archive"), (tmp_path / "no_keys.npz", "missing times, jerk"),
            (tmp_path / "short.npz", "positions has shape"), (tmp_path / "absent.npz", "no such file"),
            (tmp_path / "tracks.npz", "a trajectory file exported from a run")]


def test_a_bad_ground_truth_file_is_reported_before_integrating(trained_run, tmp_path, capsys, monkeypatch):
    _forbid(monkeypatch, kinfield.motion.export, "compute_trajectories")
    for path, problem in _motion_files(tmp_path, trained_run.parent / "scene" / "motion_gt.npz"):
        assert main_eval_motion([str(trained_run), "--device", "cpu", "--gt", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --gt ") and str(path) in err and problem in err
        assert "tools/make_scene.py" in err


def test_a_missing_ground_truth_of_the_runs_own_scene_is_not_blamed_on_gt(trained_run, tmp_path, capsys):
    """Without --gt the default, <the run's scene>/motion_gt.npz, is read; when it is missing the error says so
    rather than naming an option the user did not give."""
    scene = shutil.copytree(trained_run.parent / "scene", tmp_path / "scene")
    (scene / "motion_gt.npz").unlink()
    run = shutil.copytree(trained_run, tmp_path / "run")
    for ckpt in (run / "ckpts").glob("ckpt_*.pt"):  # the run's scene (as its checkpoints record it) is the copy
        state = torch.load(ckpt, weights_only=False)
        state["config"]["scene"] = str(scene)
        torch.save(state, ckpt)
    assert main_eval_motion([str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the ground truth of the run's scene (no --gt given): ")
    assert str(scene / "motion_gt.npz") in err and "no such file" in err


def test_a_bad_tracks_file_is_reported_before_rendering(trained_run, tmp_path, capsys, monkeypatch):
    _forbid(monkeypatch, kinfield.render.video, "render_frames")
    files = _motion_files(tmp_path, trained_run.parent / "scene" / "motion_gt.npz")[:4]  # (a tracks file is fine here)
    np.savez(tmp_path / "no_positions.npz", times=np.zeros(3))
    for path, problem in files[:1] + files[2:] + [(tmp_path / "no_positions.npz", "missing positions")]:
        assert main_render([str(trained_run), "--path", "orbit", "--frames", "1", "--device", "cpu",
                            "--overlay-tracks", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --overlay-tracks ") and str(path) in err and problem in err
        assert "tools/export_trajectories.py" in err


def test_export_replaces_an_earlier_file_only_when_asked(trained_run, tmp_path, points, capsys, monkeypatch):
    out = tmp_path / "tracks.npz"
    assert _export(trained_run, "--points", points, "--out", out) == 0
    first = out.read_bytes()
    _forbid(monkeypatch, kinfield.motion, "compute_trajectories")
    assert _export(trained_run, "--points", points, "--out", out, "--times", "3") == 2
    err = capsys.readouterr().err
    assert f"{out} already written by an earlier export" in err and "--overwrite" in err
    assert out.read_bytes() == first
    monkeypatch.undo()
    assert _export(trained_run, "--points", points, "--out", out, "--times", "0.2,0.9", "--overwrite") == 0
    assert np.load(out)["times"].tolist() == pytest.approx([0.2, 0.9])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pts.txt", "tracks.npz"]  # no partial file left


def test_export_refuses_a_folder_as_its_output(trained_run, tmp_path, points, capsys):
    folder = tmp_path / "motion"
    folder.mkdir()
    (folder / "mine.txt").write_text("a user's file")
    for extra in ([], ["--overwrite"]):
        assert _export(trained_run, "--points", points, "--out", folder, "--format", "csv", *extra) == 2
        assert f"--out {folder} is a folder" in capsys.readouterr().err
    assert (folder / "mine.txt").read_text() == "a user's file"


def test_the_ground_truth_of_another_scene_is_refused(trained_run, tmp_path, capsys, monkeypatch):
    """A --gt from a synthetic scene with other moving objects than the run's would score the field against motion it
    never saw; one of the same layout (another folder, image size or seed) is the run's motion and is scored."""
    import dataclasses

    from kinfield.data.synthetic import PRESETS, write_scene

    other = write_scene(dataclasses.replace(PRESETS["projectile"], resolution=8, n_train=2, n_val=0, n_test=0,
                                            supersample=1, n_dense_times=0), tmp_path / "projectile")
    with monkeypatch.context() as m:
        _forbid(m, kinfield.motion.export, "compute_trajectories")
        assert main_eval_motion([str(trained_run), "--device", "cpu", "--gt", str(other / "motion_gt.npz")]) == 2
    err = capsys.readouterr().err
    assert "is the ground truth of another scene" in err and "'projectile'" in err and "'tiny'" in err
    same = shutil.copytree(trained_run.parent / "scene", tmp_path / "copy")
    run = shutil.copytree(trained_run, tmp_path / "run")
    assert main_eval_motion([str(run), "--device", "cpu", "--gt", str(same / "motion_gt.npz")]) == 0


def test_points_outside_the_scene_box_are_named(trained_run, tmp_path, capsys):
    path = tmp_path / "far.txt"
    path.write_text("0 0 0\n0 0 0.1\n9 0 0\n")  # the tiny scene's box is [-1.5, 1.5]^3
    assert _export(trained_run, "--points", path, "--out", tmp_path / "t.npz") == 0
    err = capsys.readouterr().err
    assert "1 of the 3 --points lie outside the run's scene box [-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]" in err
    assert "point 2: [9.0, 0.0, 0.0]" in err
    path.write_text("0 0 0\n1.5 -1.5 0\n")  # inside (the faces included): no note
    assert _export(trained_run, "--points", path, "--out", tmp_path / "u.npz") == 0
    assert "outside" not in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["npz", "json", "csv", "ply"])
def test_export_overwrite_replaces_only_an_earlier_export(trained_run, tmp_path, points, capsys, fmt):
    out = tmp_path / f"tracks.{fmt}"
    assert _export(trained_run, "--points", points, "--out", out) == 0  # an earlier export: replaced
    assert _export(trained_run, "--points", points, "--out", out, "--overwrite", "--times", "0.3,0.7") == 0
    for name, content in (("ckpt_0000004.pt", b"PK\x03\x04 a checkpoint"), ("metrics.json", b'{"test": {}}')):
        other = tmp_path / name  # someone's file given as --out by mistake
        other.write_bytes(content)
        code = _export(trained_run, "--points", points, "--out", other, "--format", fmt, "--overwrite")
        named = other.suffix[1:]
        if fmt == "npz" or (named in ("json", "csv", "ply") and named != fmt):
            # (numpy writes NAME.npz, and a name of another format gets the format's suffix: not the target)
            assert code == 0 and (tmp_path / f"{name}.{fmt}").is_file()
        else:
            assert code == 2 and "--overwrite replaces only those" in capsys.readouterr().err
        assert other.read_bytes() == content
    if fmt == "npz":  # an npz that is not an export
        np.savez(tmp_path / "mine.npz", positions=np.zeros((1, 1, 3)))
        assert _export(trained_run, "--points", points, "--out", tmp_path / "mine.npz", "--overwrite") == 2
        assert "--overwrite replaces only those" in capsys.readouterr().err


def test_a_ground_truth_copied_out_of_its_scene_is_checked_by_its_objects(trained_run, tmp_path, capsys, monkeypatch):
    import dataclasses

    from kinfield.data.synthetic import PRESETS, write_scene

    spin = write_scene(dataclasses.replace(PRESETS["spin"], resolution=8, n_train=2, n_val=0, n_test=0,
                                           supersample=1, n_dense_times=0), tmp_path / "spin")
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(spin / "motion_gt.npz", loose / "spin_gt.npz")  # no scene_meta.json beside it
    _forbid(monkeypatch, kinfield.motion.export, "compute_trajectories")
    assert main_eval_motion([str(trained_run), "--device", "cpu", "--gt", str(loose / "spin_gt.npz")]) == 2
    assert "it names the moving objects" in capsys.readouterr().err


def test_tracks_in_every_export_format_read_back_as_the_npz(trained_run, tmp_path):
    """load_tracks (the overlay's and plot's reader) reads json, csv and ply exports, told by their content, to the
    npz's arrays: json exactly, csv to its 6 significant digits (with velocity, acceleration, jerk), ply positions
    to its 6 decimals (render and plot read npz only before); a csv cut short is a MotionFileError naming the file."""
    from kinfield.motion.export import MotionFileError, load_tracks

    pts = tmp_path / "pts.txt"
    pts.write_text("0 0 0\n0.1 0.2 0.3\n-0.4 0.1 0.2\n0.3 -0.3 0.1\n0.2 0.2 -0.2\n")
    files = {}
    for fmt in ("npz", "json", "csv", "ply"):
        files[fmt] = tmp_path / f"t.{fmt}"
        assert _export(trained_run, "--points", pts, "--format", fmt, "--out", str(files[fmt])) == 0
    ref = load_tracks(files["npz"])
    T, N, _ = ref["positions"].shape
    assert T == 3 and N == 5
    js = load_tracks(files["json"])
    for key in ("times", "positions", "velocity", "acceleration", "jerk", "query_points"):
        assert np.array_equal(js[key], ref[key].astype(np.float32)), key
    csv = load_tracks(files["csv"])
    for key in ("positions", "velocity", "acceleration", "jerk"):
        assert csv[key].shape == (T, N, 3)
        assert np.allclose(csv[key], ref[key], rtol=1e-5, atol=1e-6), key
    ply = load_tracks(files["ply"])
    assert set(ply) == {"times", "positions"} and np.allclose(ply["positions"], ref["positions"], atol=1e-6)
    assert np.allclose(ply["times"], ref["times"], atol=1e-6)
    csv_text, ply_text = files["csv"].read_text(), files["ply"].read_text()
    damaged = {"row.csv": "\n".join(csv_text.splitlines()[:-1]) + "\n",  # one (time, track) row short
               "line.csv": csv_text[:-4],  # cut inside its last line
               "vertex.ply": "\n".join(ply_text.splitlines()[:-N]) + "\n"}  # a whole time short of its header
    for name, text in damaged.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(MotionFileError, match=f"cannot read it as a {name[-3:]} trajectory file"):
            load_tracks(tmp_path / name)
    (tmp_path / "crlf.ply").write_bytes(ply_text.replace("\n", "\r\n").encode())  # re-saved on Windows
    assert np.array_equal(load_tracks(tmp_path / "crlf.ply")["positions"], ply["positions"])
    (tmp_path / "indented.json").write_text(json.dumps(json.loads(files["json"].read_text()), indent=2))
    assert np.array_equal(load_tracks(tmp_path / "indented.json")["positions"], js["positions"])
    # the overlay draws a csv export (no object ids: not taken for a scene's ground truth)
    out = tmp_path / "v"
    assert main_render([str(trained_run), "--path", "fixed-view", "--frames", "2", "--outputs", "rgb", "--device",
                        "cpu", "--out", str(out), "--no-progress", "--overlay-tracks", str(files["csv"])]) == 0
