"""Dataset readers on the real shared data and on tiny hand-made scenes."""
import json
import math
import struct
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from kinfield.data import DatasetError, Scene, load_dnerf, load_scene, load_tiny_npz
from kinfield.data.dnerf import _unfilter_png, area_downscale

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
STANDUP = DATA / "dnerf_standup"
TINY = DATA / "tiny_dnerf_lego" / "tiny_dnerf_data.npz"

needs_standup = pytest.mark.skipif(
    not (STANDUP / "transforms_train.json").is_file(),
    reason=f"shared D-NeRF data not found at {STANDUP} (only present in the development checkout)",
)
needs_tiny = pytest.mark.skipif(
    not TINY.is_file(), reason=f"shared tiny npz not found at {TINY} (only present in the development checkout)"
)

EYE = np.eye(4).tolist()


def write_scene(root: Path, images, times=None, angle=0.5, split="train", file_paths=None):
    """Write ``images`` (list of uint8/uint16 arrays) as PNGs plus transforms_{split}.json."""
    (root / split).mkdir(parents=True, exist_ok=True)
    frames = []
    for i, img in enumerate(images):
        name = f"r_{i:03d}"
        if isinstance(img, bytes):
            (root / split / f"{name}.png").write_bytes(img)
        else:
            iio.imwrite(root / split / f"{name}.png", img)
        fp = file_paths[i] if file_paths else f"./{split}/{name}"
        t = times[i] if times is not None else (i / max(1, len(images) - 1))
        frames.append({"file_path": fp, "time": t, "transform_matrix": EYE})
    (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    return root


def png16(arr: np.ndarray) -> bytes:
    """Encode ``[H, W, C]`` uint16 as a 16-bit PNG, cycling the five scanline filter types."""
    h, w, c = arr.shape
    bpp, stride = 2 * c, w * 2 * c
    rows = np.frombuffer(arr.astype(">u2").tobytes(), np.uint8).reshape(h, stride).astype(np.int64)
    out, prev = bytearray(), np.zeros(stride, np.int64)
    for y in range(h):
        f, cur = y % 5, rows[y]
        a = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        cc = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        b = prev
        if f == 0:
            pred = 0
        elif f == 1:
            pred = a
        elif f == 2:
            pred = b
        elif f == 3:
            pred = (a + b) // 2
        else:
            p = a + b - cc
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
            pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, cc))
        out.append(f)
        out += ((cur - pred) % 256).astype(np.uint8).tobytes()
        prev = cur

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ctype = {2: 4, 3: 2, 4: 6}[c]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------------
# real data
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def standup() -> Scene:
    return load_dnerf(STANDUP, downscale=8)


@needs_standup
def test_standup_splits_and_shapes(standup):
    sizes = {k: v.num_frames for k, v in standup.splits.items()}
    assert sizes == {"train": 150, "val": 20, "test": 20}
    for s in standup.splits.values():
        assert s.images.shape[1:] == (100, 100, 3) and s.images.dtype == torch.float32
        assert s.alphas.shape == s.images.shape[:3]
        assert s.poses.shape == (s.num_frames, 4, 4)
        assert len(s.paths) == s.num_frames and Path(s.paths[0]).is_file()
        assert s.images.min() >= 0 and s.images.max() <= 1


@needs_standup
def test_standup_intrinsics_times_background(standup):
    angle = json.loads((STANDUP / "transforms_train.json").read_text())["camera_angle_x"]
    full_focal = 0.5 * 800 / math.tan(0.5 * angle)
    tr = standup.split("train")
    assert torch.allclose(tr.intrinsics, torch.tensor([full_focal / 8, full_focal / 8, 50.0, 50.0]).expand(150, 4))
    for s in standup.splits.values():
        assert torch.isfinite(s.times).all() and s.times.min() >= 0 and s.times.max() <= 1
    assert tr.times.min() == 0 and tr.times.max() == 1
    assert standup.frame_dt == pytest.approx(1 / 149, rel=1e-4)
    empty = tr.alphas == 0
    assert empty.any()
    assert torch.all(tr.images[empty] == 1.0)  # transparent -> white background
    assert torch.equal(standup.background, torch.ones(3))
    assert standup.aabb.tolist() == [-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]


@needs_standup
def test_standup_single_split_through_load_scene():
    s = load_scene(STANDUP, downscale=8, splits=("val",), background=(0.0, 0.0, 0.0))
    assert list(s.splits) == ["val"] and s.split("val").num_frames == 20
    v = s.split("val")
    assert torch.all(v.images[v.alphas == 0] == 0.0)
    assert s.frame_dt == pytest.approx(1 / 149, rel=1e-4)  # still from the train times


@needs_tiny
def test_tiny_npz_splits():
    s = load_tiny_npz(TINY)
    assert {k: v.num_frames for k, v in s.splits.items()} == {"train": 50, "val": 11, "test": 20}
    tr = s.split("train")
    assert tr.images.shape == (50, 100, 100, 3) and tr.alphas is None
    assert tr.intrinsics[0].tolist() == pytest.approx([138.8889, 138.8889, 50.0, 50.0], rel=1e-4)
    assert torch.equal(s.background, torch.zeros(3))
    with np.load(TINY) as z:
        assert np.allclose(s.split("val").images.numpy(), z["images"][50:61])
        assert np.allclose(s.split("test").times.numpy(), z["times"][61:])
    s2 = load_scene(TINY, downscale=2)
    assert s2.split("test").images.shape == (20, 50, 50, 3)
    assert s2.split("test").intrinsics[0, 0].item() == pytest.approx(138.8889 / 2, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# tiny hand-made scenes
# ---------------------------------------------------------------------------------------------
def test_area_average_matches_hand_computed_mean(tmp_path):
    img = np.zeros((2, 4, 4), np.uint8)  # H=2, W=4, RGBA
    img[0, 0] = (255, 0, 0, 255)  # opaque red
    img[0, 1] = (0, 255, 0, 51)  # green, alpha 0.2
    img[1, 0] = (0, 0, 255, 0)  # transparent (its colour must not leak)
    img[1, 1] = (255, 255, 255, 255)  # opaque white
    img[:, 2:] = (51, 102, 153, 255)  # right block: opaque constant
    write_scene(tmp_path, [img])
    s = load_dnerf(tmp_path, downscale=2, background=(0.0, 0.0, 1.0))
    out, alpha = s.split("train").images[0], s.split("train").alphas[0]
    assert out.shape == (1, 2, 3) and alpha.shape == (1, 2)
    # left block, by hand: premultiplied mean = (red + 0.2 * green + 0 + white) / 4, alpha = 2.2 / 4
    a = (1 + 0.2 + 0 + 1) / 4
    prem = np.array([1 + 0 + 1, 0.2 + 1, 0 + 1]) / 4
    want = prem + (1 - a) * np.array([0.0, 0.0, 1.0])
    assert alpha[0, 0].item() == pytest.approx(a, abs=1e-6)
    assert out[0, 0].numpy() == pytest.approx(want, abs=1e-6)
    assert out[0, 1].numpy() == pytest.approx([0.2, 0.4, 0.6], abs=1e-6)
    fx = 0.5 * 2 / math.tan(0.25)
    assert s.split("train").intrinsics[0].tolist() == pytest.approx([fx, fx, 1.0, 0.5])


def test_area_downscale_helper():
    x = np.arange(6 * 6 * 2, dtype=np.float32).reshape(6, 6, 2)
    assert np.allclose(area_downscale(x, 3), x.reshape(2, 3, 2, 3, 2).mean(axis=(1, 3)))
    y = area_downscale(x, 2.5)  # non-integer: round(6 / 2.5) = 2
    assert y.shape == (2, 2, 2)
    assert np.allclose(y.mean(axis=(0, 1)), x.mean(axis=(0, 1)))  # area averaging keeps the mean
    assert area_downscale(x, 4).shape == (2, 2, 2)  # 6 / 4 = 1.5 -> round -> 2


def test_float_downscale_and_intrinsics(tmp_path):
    write_scene(tmp_path, [np.full((10, 20, 4), 255, np.uint8)], angle=1.0)
    s = load_dnerf(tmp_path, downscale=2.5)
    tr = s.split("train")
    assert tr.images.shape == (1, 4, 8, 3)
    fx = 0.5 * 8 / math.tan(0.5)
    assert tr.intrinsics[0].tolist() == pytest.approx([fx, fx, 4.0, 2.0])
    assert torch.allclose(tr.images, torch.ones(1, 4, 8, 3))


def test_rgb_without_alpha_png_extension_and_backslashes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3)).astype(np.uint8)
    write_scene(tmp_path, [rgb, rgb], file_paths=["./train/r_000.png", ".\\train\\r_001"])
    s = load_dnerf(tmp_path)
    tr = s.split("train")
    assert tr.alphas is None and list(s.splits) == ["train"]  # missing val/test -> omitted
    assert np.allclose(tr.images[0].numpy(), rgb / 255.0, atol=1e-6)
    assert tr.paths[1].endswith("r_001.png")
    assert load_scene(tmp_path / "transforms_train.json").split("train").num_frames == 2


def test_frame_dt_is_median_spacing(tmp_path):
    img = np.zeros((2, 2, 4), np.uint8)
    write_scene(tmp_path, [img] * 5, times=[0.0, 0.1, 0.1, 0.3, 0.4])
    assert load_dnerf(tmp_path).frame_dt == pytest.approx(0.1)


def test_16bit_rgba_png_is_read_exactly(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 65536, (6, 5, 4)).astype(np.uint16)
    arr[0, 0, 3] = 0
    write_scene(tmp_path, [png16(arr)])
    tr = load_dnerf(tmp_path, background=(0.0, 0.0, 0.0)).split("train")
    a = arr[..., 3] / 65535.0
    assert np.allclose(tr.alphas[0].numpy(), a, atol=1e-6)
    assert np.allclose(tr.images[0].numpy(), arr[..., :3] / 65535.0 * a[..., None], atol=1e-6)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_png_unfilter_fallback_matches(channels):
    arr = np.random.default_rng(channels).integers(0, 65536, (7, 3, channels)).astype(np.uint16)
    raw = png16(arr)
    data = zlib.decompress(raw[41:-16])  # single IDAT chunk: after IHDR, before its CRC and IEND
    rows = _unfilter_png(data, 7, 3, 2 * channels)
    assert np.array_equal(rows.view(">u2").reshape(arr.shape), arr)


def test_load_scene_picks_reader(tmp_path):
    with pytest.raises(DatasetError, match="transforms_train.json"):
        load_scene(tmp_path)
    write_scene(tmp_path, [np.zeros((2, 2, 4), np.uint8)])
    assert load_scene(tmp_path).meta["format"] == "dnerf"
