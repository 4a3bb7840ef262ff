"""Bad input for tools/preprocess.py: clear messages naming the file and the fix, exit code 2, no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from kinfield.cli import main_preprocess
from kinfield.preprocess import PreprocessError, PreprocessOptions, SfMError, preprocess
from kinfield.preprocess.frames import read_frames

REPO = Path(__file__).resolve().parents[2]


def _cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(REPO / "tools/preprocess.py"), *map(str, args), "--no-progress"],
                          capture_output=True, text=True, env=env)


def _write_video(path: Path, frames, fps=10):
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec="libx264", pix_fmt_in="rgb24",
                                         pix_fmt_out="yuv420p", macro_block_size=1, ffmpeg_log_level="error")
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()


def test_missing_input(tmp_path):
    r = _cli(tmp_path / "nope.mp4", tmp_path / "out")
    assert r.returncode == 2
    assert "nope.mp4" in r.stderr and "does not exist" in r.stderr and "fix:" in r.stderr
    assert "Traceback" not in r.stderr


def test_folder_with_one_image(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    iio.imwrite(frames / "000.png", np.zeros((16, 16, 3), np.uint8))
    r = _cli(frames, tmp_path / "out")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "only 1 frame" in r.stderr and "at least 3" in r.stderr and str(frames) in r.stderr


def test_corrupt_video(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(4000))
    r = _cli(bad, tmp_path / "out")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "broken.mp4" in r.stderr and "cannot" in r.stderr and "ffmpeg" in r.stderr
    assert not (tmp_path / "out").exists()  # nothing written for unreadable input


def test_empty_folder_and_mixed_sizes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PreprocessError, match="no images"):
        read_frames(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, s in enumerate((16, 16, 20)):
        iio.imwrite(mixed / f"{i}.png", np.zeros((s, s, 3), np.uint8))
    with pytest.raises(PreprocessError, match="differs from the first frame"):
        read_frames(mixed)


def test_read_frames_stride_cap_resize(tmp_path):
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(9)]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):  # natural order: 2.png before 10.png
        iio.imwrite(folder / f"frame{i * 4}.png", f)
    fr = read_frames(folder, stride=2, max_frames=4, resize_long_side=32, progress=False)
    assert fr.source_indices == [0, 2, 4, 6] and fr.size == (32, 24) and fr.images[0].shape == (24, 32, 3)
    assert [int(im.mean()) for im in fr.images] == [0, 40, 80, 120]
    video = tmp_path / "v.mp4"
    _write_video(video, frames)
    fr = read_frames(video, stride=3, width=32, progress=False)
    assert fr.source_type == "video" and fr.fps == pytest.approx(10.0) and fr.source_indices == [0, 3, 6]
    assert fr.images[1].shape == (24, 32, 3) and abs(float(fr.images[1].mean()) - 60) < 4
    with pytest.raises(PreprocessError, match="at least 3"):
        read_frames(video, stride=5)


def test_sfm_failure_is_a_clear_error(tmp_path, capsys):
    """Independent noise images have nothing to match: SfM fails with the dedicated error."""
    pytest.importorskip("cv2")
    pytest.importorskip("pycolmap")
    rng = np.random.default_rng(0)
    folder = tmp_path / "noise"
    folder.mkdir()
    for i in range(4):
        iio.imwrite(folder / f"{i:03d}.png", (rng.random((48, 64, 3)) * 255).astype(np.uint8))
    with pytest.raises(SfMError) as info:
        preprocess(folder, tmp_path / "out", PreprocessOptions(num_threads=1, progress=False))
    msg = str(info.value)
    assert str(folder) in msg and "fix:" in msg and "more frames" in msg and "texture" in msg
    assert info.value.total == 4 and info.value.registered < 4
    assert not (tmp_path / "out").exists()  # the partial layout is removed again
    assert not (tmp_path / ".out.partial").exists()
    # --overwrite over an earlier result: the failed run leaves it as it was
    earlier = tmp_path / "earlier"
    (earlier / "images").mkdir(parents=True)
    (earlier / "images" / "000.png").write_bytes(b"an earlier frame")
    (earlier / "poses_bounds.npy").write_bytes(b"earlier poses")
    (earlier / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()}
    with pytest.raises(SfMError):
        preprocess(folder, earlier, PreprocessOptions(num_threads=1, progress=False, overwrite=True, keep_work=True))
    assert {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == before
    assert (tmp_path / ".earlier.partial" / "sfm_work").is_dir()  # --keep-work: kept for a look, beside OUT_DIR
    code = main_preprocess([str(folder), str(tmp_path / "out2"), "--threads", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "structure from motion" in err and "fix:" in err


def test_missing_pycolmap_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap -> ImportError
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        iio.imwrite(folder / f"{i:03d}.png", np.zeros((16, 16, 3), np.uint8))
    code = main_preprocess([str(folder), str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install pycolmap" in err and ".[preprocess]" in err


def test_an_input_inside_the_outputs_it_would_replace_is_refused(tmp_path):
    """Frames in OUT_DIR/images (a previous result's, say) with --overwrite would be deleted by the run that reads
    them: refused before anything is read or written."""
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    for i in range(3):
        iio.imwrite(out / "images" / f"{i:03d}.png", np.zeros((40, 40, 3), np.uint8))
    before = sorted(p.name for p in (out / "images").iterdir())
    with pytest.raises(PreprocessError, match="lies in .*'s images, which this run replaces"):
        preprocess(out / "images", out, PreprocessOptions(num_threads=1, progress=False, overwrite=True))
    assert sorted(p.name for p in (out / "images").iterdir()) == before


def test_frames_too_small_to_process_are_a_clear_error(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        iio.imwrite(folder / f"{i:03d}.png", np.zeros((40, 60, 3), np.uint8))
    with pytest.raises(PreprocessError, match="frames of 12x8 px are too small") as info:
        read_frames(folder, resize_long_side=12, progress=False)
    assert str(folder) in str(info.value) and "--resize-long-side" in str(info.value)
    assert read_frames(folder, progress=False).size == (60, 40)


@pytest.mark.parametrize("option, value", [("--fb-threshold", "-1"), ("--motion-threshold", "0")])
def test_thresholds_that_would_void_the_flow_or_masks_are_refused(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        main_preprocess([str(tmp_path), str(tmp_path / "out"), option, value])
    assert exc.value.code == 2 and option in capsys.readouterr().err


def test_frames_are_read_upright_and_in_rgb_whatever_their_file_mode(tmp_path):
    """Phone photos stored sideways with an EXIF orientation come out upright; grey + alpha, palette and CMYK files
    come out as their RGB colours; hidden files (macOS's ._000.png) are not frames."""
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 0] = 200
    for i in range(3):  # 60 wide, 40 high as stored; EXIF 6: the camera was turned, the upright frame is 40 x 60
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(red).save(folder / f"{i:03d}.jpg", exif=exif, quality=95)
    (folder / "._000.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    fr = read_frames(folder, progress=False)
    assert fr.size == (40, 60) and fr.images[0].shape == (60, 40, 3)
    assert abs(float(fr.images[0][..., 0].mean()) - 200) < 3 and float(fr.images[0][..., 1:].mean()) < 3
    for mode, colour in (("LA", (90, 90, 90)), ("P", (200, 0, 0)), ("CMYK", (200, 0, 0))):
        sub = tmp_path / mode
        sub.mkdir()
        for i in range(3):
            rgb = Image.fromarray(np.full((20, 20, 3), colour, np.uint8))
            im = {"LA": lambda: rgb.convert("LA"), "P": lambda: rgb.quantize(4), "CMYK": lambda: rgb.convert("CMYK")}[mode]()
            im.save(sub / f"{i:03d}.{'jpg' if mode == 'CMYK' else 'png'}", quality=95)
        img = read_frames(sub, progress=False).images[0]
        assert img.shape == (20, 20, 3) and np.abs(img.astype(int) - colour).max() <= 3, mode
