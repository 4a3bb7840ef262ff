"""Video paths, depth colouring, video writing and the render / eval entry points."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import kinfield.render.video as video
from kinfield.geometry.paths import (bullet_time_path, fixed_view_path, look_at, orbit_path, path_defaults,
                                     spiral_path)
from kinfield.render.video import colorize_depth, write_video

REPO = Path(__file__).resolve().parents[2]
try:
    import imageio_ffmpeg  # noqa: F401

    HAVE_FFMPEG = True
except ImportError:
    HAVE_FFMPEG = False


def _unit(v):
    return v / v.norm(dim=-1, keepdim=True)


def _assert_rotations(poses, tol=1e-5):
    rot = poses[:, :3, :3].double()
    eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
    assert torch.allclose(rot.transpose(1, 2) @ rot, eye, atol=tol)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(rot.shape[0], dtype=torch.float64), atol=tol)
    assert torch.equal(poses[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(poses.shape[0], 4))


def _hemisphere_poses(n=12, radius=4.0, target=(0.0, 0.0, 0.0), seed=0):
    g = torch.Generator().manual_seed(seed)
    az = torch.rand(n, generator=g) * 2 * math.pi
    el = torch.deg2rad(10 + 60 * torch.rand(n, generator=g))
    t = torch.tensor(target)
    eyes = t + radius * torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], -1)
    return torch.stack([look_at(e, t, (0, 0, 1)) for e in eyes])


# ----------------------------------------------------------------------------------------- paths
def test_look_at_orthonormal_and_aimed():
    for eye, target, up in [((1, 2, 3), (0, 0, 0), (0, 0, 1)), ((0, 0, 5), (0, 0, 0), (0, 0, 1)),  # degenerate up
                            ((-2, 0.5, 1), (0.3, -0.2, 0.1), (0, 1, 0))]:
        m = look_at(eye, target, up)
        assert m.shape == (4, 4) and m.dtype == torch.float32
        _assert_rotations(m[None])
        aim = _unit(torch.tensor(target, dtype=torch.float32) - torch.tensor(eye, dtype=torch.float32))
        assert torch.allclose(-m[:3, 2], aim, atol=1e-6)
        assert torch.allclose(m[:3, 3], torch.tensor(eye, dtype=torch.float32))
    m = look_at((3, 0, 0), (0, 0, 0), (0, 0, 1))
    assert m[2, 1] > 0.99  # camera y is world up: no roll


@pytest.mark.parametrize("up", [(0.0, 0.0, 1.0), (0.2, 1.0, -0.1)])
def test_orbit_looks_at_centre(up):
    centre, radius, elev = torch.tensor([0.3, -0.2, 0.5]), 3.5, 25.0
    poses, times = orbit_path(centre, radius, elev, 16, up=up)
    assert poses.shape == (16, 4, 4) and times.shape == (16,)
    _assert_rotations(poses)
    eyes = poses[:, :3, 3]
    aim = _unit(centre - eyes)
    assert (-poses[:, :3, 2] - aim).abs().max() < 1e-5
    assert torch.allclose((eyes - centre).norm(dim=-1), torch.full((16,), radius), atol=1e-5)
    u = _unit(torch.tensor(up))
    el = torch.rad2deg(torch.asin(((eyes - centre) @ u) / radius))
    assert torch.allclose(el, torch.full((16,), elev), atol=1e-3)
    assert times[0] == 0 and times[-1] == 1 and bool((times.diff() > 0).all())
    # a full circle: azimuths evenly spaced, no repeated frame
    assert torch.cdist(eyes, eyes).add(torch.eye(16) * 1e3).min() > 0.1


def test_bullet_time_and_fixed_view():
    poses, times = bullet_time_path((0, 0, 0), 4.0, 30.0, 5, time=0.37)
    assert poses.shape == (5, 4, 4)
    assert torch.allclose(times, torch.full((5,), 0.37))
    pose = look_at((1, 2, 3), (0, 0, 0))
    poses, times = fixed_view_path(pose, 4)
    assert torch.equal(poses, pose.expand(4, 4, 4))
    assert torch.allclose(times, torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))


def test_path_defaults_recovers_centre():
    target = (0.4, -0.3, 0.2)
    ref = _hemisphere_poses(10, 4.0, target)
    d = path_defaults(ref)
    assert torch.allclose(d["center"], torch.tensor(target), atol=1e-4)
    assert abs(d["radius"] - 4.0) < 1e-4
    assert d["up"].shape == (3,) and abs(float(d["up"].norm()) - 1) < 1e-5 and d["up"][2] > 0.5
    assert 10.0 <= d["elevation_deg"] <= 80.0
    # parallel axes (one camera): origin fallback
    one = path_defaults(ref[:1])
    assert torch.equal(one["center"], torch.zeros(3))


def test_spiral_finite():
    for ref in (_hemisphere_poses(12), torch.stack([look_at((x, y, 4.0), (0, 0, 0), (0, 1, 0))
                                                    for x in (-0.5, 0.0, 0.5) for y in (-0.3, 0.3)])):
        poses, times = spiral_path(ref, 30)
        assert poses.shape == (30, 4, 4) and bool(torch.isfinite(poses).all())
        _assert_rotations(poses)
        assert times[0] == 0 and times[-1] == 1
        assert (poses[:, :3, 3] - poses[0, :3, 3]).norm(dim=-1).max() > 1e-3  # the camera moves
    poses, _ = spiral_path(_hemisphere_poses(1), 5)
    assert bool(torch.isfinite(poses).all())


# ----------------------------------------------------------------------------------- video / depth
def test_colorize_depth():
    depth = torch.linspace(2.0, 6.0, 12 * 9).reshape(12, 9)
    opacity = torch.ones(12, 9)
    opacity[0] = 0.0
    img = colorize_depth(depth, opacity)
    assert img.shape == (12, 9, 3) and img.dtype == np.uint8
    assert (img[0] == 0).all() and img[1:].max() > 0
    assert not np.array_equal(img[1, 0], img[-1, -1])  # near and far get different colours
    fixed = colorize_depth(depth.numpy(), None, near=2.0, far=6.0)
    assert fixed.shape == (12, 9, 3) and fixed.dtype == np.uint8
    assert (colorize_depth(depth, torch.zeros(12, 9)) == 0).all()


def _frames(n=4, h=15, w=21):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_write_video_mp4(tmp_path, caplog):
    iio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    with caplog.at_level("INFO", logger="kinfield"):
        out = write_video(_frames(), tmp_path / "v.mp4", fps=10)  # odd size: padded to even
    assert out == tmp_path / "v.mp4" and out.stat().st_size > 0
    reader = iio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    assert tuple(meta["size"]) == (22, 16) and sum(1 for _ in reader) == 4
    assert "22x16, edge-padded from 21x15" in caplog.text  # the log gives the file's size


def test_write_video_fallbacks(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("no ffmpeg here")

    monkeypatch.setattr(video, "_write_mp4", boom)
    out = write_video(_frames(), tmp_path / "v.mp4", fps=10)
    assert out == tmp_path / "v.gif" and out.stat().st_size > 0
    monkeypatch.setattr(video, "_write_gif", boom)
    out = write_video(_frames(3), tmp_path / "w.mp4", fps=10)
    assert out == tmp_path / "w" and sorted(p.name for p in out.iterdir()) == ["0000.png", "0001.png", "0002.png"]


def test_a_failed_video_write_keeps_the_earlier_video_and_leaves_no_partial_file(tmp_path, monkeypatch):
    earlier = tmp_path / "v.mp4"
    earlier.write_bytes(b"an earlier render")

    def half_then_boom(frames, path, fps):
        path.write_bytes(b"half")
        raise RuntimeError("ffmpeg died")

    monkeypatch.setattr(video, "_write_mp4", half_then_boom)
    out = write_video(_frames(), earlier, fps=10)
    assert out == tmp_path / "v.gif"
    assert earlier.read_bytes() == b"an earlier render"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.gif", "v.mp4"]  # no partial file left


def test_a_replaced_png_folder_keeps_no_stale_frames(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("no encoder")

    monkeypatch.setattr(video, "_write_mp4", boom)
    monkeypatch.setattr(video, "_write_gif", boom)
    write_video(_frames(4), tmp_path / "w.mp4", fps=10)
    out = write_video(_frames(2), tmp_path / "w.mp4", fps=10)
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "0001.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


@pytest.mark.parametrize("fps", [0.0, -1.0, float("nan"), float("inf")])
def test_write_video_refuses_a_frame_rate_that_is_not_a_positive_number(tmp_path, fps):
    with pytest.raises(ValueError, match="fps"):
        write_video(_frames(), tmp_path / "v.mp4", fps=fps)


# --------------------------------------------------------------------------------------- end to end
# (trained_run: tests/tools/conftest.py)
def test_render_orbit_and_test(trained_run, capsys):
    from kinfield.cli import main_render

    out = trained_run / "vids"
    code = main_render([str(trained_run), "--path", "orbit", "--frames", "3", "--outputs", "rgb,depth,static,dynamic",
                        "--device", "cpu", "--out", str(out), "--no-progress"])
    assert code == 0
    for o in ("rgb", "depth", "static", "dynamic"):
        files = list(out.glob(f"orbit_{o}.*"))
        assert len(files) == 1 and files[0].stat().st_size > 0
        if HAVE_FFMPEG:
            assert files[0].suffix == ".mp4"
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"rgb", "depth", "static", "dynamic"}

    code = main_render([str(trained_run), "--path", "test", "--outputs", "rgb", "--device", "cpu", "--no-progress"])
    assert code == 0
    pngs = sorted((trained_run / "videos" / "test" / "rgb").glob("*.png"))
    assert [p.name for p in pngs] == ["000.png", "001.png"]  # the tiny scene has 2 test views
    assert list((trained_run / "videos").glob("test_rgb.*"))


def test_render_replaces_earlier_videos_only_when_asked(trained_run, capsys):
    from kinfield.cli import main_render

    out = trained_run / "vids_again"
    args = [str(trained_run), "--path", "test", "--outputs", "rgb", "--device", "cpu", "--out", str(out),
            "--no-progress"]
    assert main_render(args) == 0
    video_file = next(out.glob("test_rgb.*"))
    stale = out / "test" / "rgb" / "007.png"  # a frame of some earlier, longer render
    stale.write_bytes(b"old")
    before = video_file.stat().st_mtime_ns
    capsys.readouterr()
    assert main_render(args) == 2
    err = capsys.readouterr().err
    assert "already written by an earlier render" in err and "--overwrite" in err and str(video_file) in err
    assert video_file.stat().st_mtime_ns == before and stale.exists()  # nothing touched
    assert main_render(args + ["--overwrite"]) == 0
    assert sorted(p.name for p in (out / "test" / "rgb").iterdir()) == ["000.png", "001.png"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no partial files


def test_render_refuses_a_bad_frame_rate_and_tracks_without_rgb(trained_run, tmp_path, capsys):
    from kinfield.cli import main_render

    for extra in (["--fps", "nan"], ["--fps", "inf"], ["--overlay-tracks", str(tmp_path / "t.npz"),
                                                       "--outputs", "depth"]):
        with pytest.raises(SystemExit) as exc:
            main_render([str(trained_run), "--device", "cpu", "--out", str(tmp_path / "v"), *extra])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--fps must be a finite number > 0, got nan" in err and "add rgb to --outputs" in err
    assert not (tmp_path / "v").exists()


def test_eval_writes_metrics(trained_run, capsys):
    from kinfield.cli import main_eval

    code = main_eval([str(trained_run), "--device", "cpu", "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    metrics = json.loads((trained_run / "metrics.json").read_text())["test"]
    for m in (summary, metrics):
        assert math.isfinite(m["psnr"]) and math.isfinite(m["ssim"]) and m["n_images"] == 2
        assert m["lpips"] is None and "31" in m["lpips_note"]  # 16x16 images: too small for AlexNet, says why
    assert (trained_run / "metrics_test.csv").is_file()
    assert len(list((trained_run / "renders" / "test").glob("*.png"))) == 2


def test_missing_run_dir(tmp_path, capsys):
    from kinfield.cli import main_eval, main_render

    missing = tmp_path / "no_such_run"
    assert main_render([str(missing), "--path", "orbit", "--device", "cpu"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main_eval([str(missing), "--device", "cpu"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_bad_view_and_split(trained_run, capsys):
    from kinfield.cli import main_render

    assert main_render([str(trained_run), "--path", "fixed-view", "--view", "99", "--device", "cpu"]) == 2
    assert "--view 99" in capsys.readouterr().err
    assert main_render([str(trained_run), "--path", "test", "--split", "nope", "--device", "cpu"]) == 2
    assert "'nope'" in capsys.readouterr().err


def test_decomposition_videos_of_a_model_without_a_static_field_say_so(caplog):
    """With ``model_use_static false`` (the shipped CPU configs) the static / dynamic views say what they show."""
    from kinfield.config import parse_args
    from kinfield.render.video import render_frames
    from kinfield.train.trainer import build_model

    cfg = parse_args(["--config", str(REPO / "configs" / "debug.yaml"), "--model_use_static", "false"])
    model = build_model(cfg, torch.tensor([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]), 0.1)
    pose = torch.eye(4)[None]
    pose[0, 2, 3] = 4.0
    args = (model, pose, torch.zeros(1), torch.tensor([4.0, 4.0, 2.0, 2.0]), 4, 4, torch.ones(3))
    with caplog.at_level("WARNING", logger="kinfield"):
        frames = render_frames(*args, outputs=("rgb", "dynamic"), progress=False)
    assert "no static field" in caplog.text
    assert np.array_equal(frames["rgb"][0], frames["dynamic"][0])
    caplog.clear()
    with caplog.at_level("WARNING", logger="kinfield"):
        render_frames(*args, outputs=("rgb", "velocity"), progress=False)
    assert "no static field" not in caplog.text


def test_a_render_that_would_not_fit_in_memory_stops_before_rendering(trained_run, tmp_path, capsys, monkeypatch):
    from kinfield.cli import main_render

    need = video.frames_memory(10, 8, 8, ["rgb", "depth", "velocity"])
    assert need == 10 * 8 * 8 * (3 * 3 + 3 + 8 + 16)  # the frames, one writer copy, depth + opacity, the vectors
    monkeypatch.setattr(video, "available_memory", lambda: need)  # 0.8 of it is the limit
    monkeypatch.setattr(video, "render_frames", lambda *a, **k: pytest.fail("rendered"))
    out = tmp_path / "videos"
    code = main_render([str(trained_run), "--frames", "1000000", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "1000000 frames of" in err and "render at most about" in err and not out.exists()


@pytest.mark.parametrize("layout", ["v2", "v1"])
def test_the_memory_check_sees_a_cgroup_limit(tmp_path, layout):
    """A container's memory limit (which /proc/meminfo does not show) lowers the memory a render may use."""
    gib = 2**30
    if layout == "v2":
        files = {"memory.max": f"{2 * gib}\n", "memory.current": f"{gib}\n", "memory.stat": f"anon 5\ninactive_file {gib // 4}\n"}
    else:
        files = {"memory/memory.limit_in_bytes": f"{2 * gib}\n", "memory/memory.usage_in_bytes": f"{gib}\n",
                 "memory/memory.stat": f"cache 7\ntotal_inactive_file {gib // 4}\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert video.cgroup_headroom(tmp_path) == gib + gib // 4  # limit - usage + reclaimable cache
    assert video.available_memory(tmp_path) <= gib + gib // 4
    # no limit set: the cgroup does not lower what the system reports
    (tmp_path / ("memory.max" if layout == "v2" else "memory/memory.limit_in_bytes")).write_text(
        "max\n" if layout == "v2" else "9223372036854771712\n")
    assert video.cgroup_headroom(tmp_path) is None
    assert video.cgroup_headroom(tmp_path / "absent") is None
