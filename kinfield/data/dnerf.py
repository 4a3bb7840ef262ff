"""Reader for the D-NeRF / Blender dynamic-scene format.

Layout of a scene folder::

    root/
      transforms_train.json   (required)
      transforms_val.json     (optional)
      transforms_test.json    (optional)
      train/r_000.png ...

Each ``transforms_{split}.json`` holds ``camera_angle_x`` (horizontal field of view, radians) and
``frames``: a list of ``{"file_path": "./train/r_000", "time": t in [0, 1],
"transform_matrix": 4x4 camera-to-world (OpenGL axes)}``. Images are RGBA (or RGB) PNGs, 8- or
16-bit. Colours are averaged premultiplied when downscaling, then composited on the background.

Every problem with the input raises :class:`~kinfield.data.errors.DatasetError` naming the file.
"""
from __future__ import annotations

import json
import logging
import math
import os
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DatasetError
from .scene import Scene, SceneSplit

log = logging.getLogger("kinfield")
PathLike = Union[str, os.PathLike]

DEFAULT_AABB = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)
_IMAGE_EXTS = (".png", ".jpg", ".jpeg")
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_POSE_TOL = 1e-4
_ROT_TOL = 1e-3  # relative deviation of a pose's R^T R from a multiple of the identity
_NUM_THREADS = 2

__all__ = ["load_dnerf", "area_downscale", "DEFAULT_AABB"]


# ----------------------------------------------------------------------------------------------
# argument checks shared with the other readers
# ----------------------------------------------------------------------------------------------
def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _all_numbers(x) -> bool:
    """``x`` is a number, or a (nested) list / tuple of numbers only (no strings, booleans, None)."""
    return all(_all_numbers(v) for v in x) if isinstance(x, (list, tuple)) else _is_number(x)


def _float(x) -> float:
    """``float(x)`` of a number; an integer too large for a float (JSON ``1000...0``) becomes +-inf."""
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def check_downscale(downscale, where: PathLike) -> Union[int, float]:
    """Validate ``downscale``; returns an ``int`` when it is a whole number, else a ``float``."""
    if not _is_number(downscale) or not math.isfinite(_float(downscale)) or _float(downscale) < 1:
        raise DatasetError(
            where,
            f"downscale must be a number >= 1, got {downscale!r}",
            "give --downscale 1 for full resolution, or a factor >= 1 such as 2, 4, 8 or 2.5 (downscale=... in Python)",
        )
    d = float(downscale)
    return int(d) if d.is_integer() else d


def check_background(background, where: PathLike) -> torch.Tensor:
    """Validate a background colour; returns a ``[3]`` float32 tensor."""
    try:
        bg = np.asarray(background, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        bg = np.zeros(0)
    if bg.shape != (3,) or not np.all(np.isfinite(bg)) or bg.min() < 0 or bg.max() > 1:
        raise DatasetError(
            where,
            f"background must be 3 finite numbers in [0, 1], got {background!r}",
            "give --background 1 1 1 for white or --background 0 0 0 for black (background=(1.0, 1.0, 1.0) in Python; "
            "a config file: background: [1.0, 1.0, 1.0])",
        )
    return torch.tensor(bg, dtype=torch.float32)


def check_aabb(aabb, where: PathLike) -> torch.Tensor:
    """Validate a world box ``(xmin, ymin, zmin, xmax, ymax, zmax)``; returns ``[6]`` float32."""
    if aabb is None:
        aabb = DEFAULT_AABB
    try:
        a = np.asarray(aabb, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        a = np.zeros(0)
    if a.shape != (6,) or not np.all(np.isfinite(a)) or np.any(a[:3] >= a[3:]):
        raise DatasetError(
            where,
            f"aabb must be 6 finite numbers (xmin, ymin, zmin, xmax, ymax, zmax) with min < max, got {aabb!r}",
            f"pass aabb=None for the default {DEFAULT_AABB} or a valid box",
        )
    return torch.tensor(a, dtype=torch.float32)


def check_near_far(near, far, where: PathLike) -> Tuple[float, float]:
    if not (_is_number(near) and _is_number(far) and math.isfinite(_float(near)) and math.isfinite(_float(far))
            and 0 <= near < far):
        raise DatasetError(
            where,
            f"need finite 0 <= near < far, got near={near!r}, far={far!r}",
            "pass e.g. near=2.0, far=6.0 (the D-NeRF defaults)",
        )
    return float(near), float(far)


def check_pose(m, where: PathLike, what: str) -> np.ndarray:
    """Validate one camera-to-world matrix; returns a ``[4, 4]`` float64 array."""
    fix = ("write a finite 4x4 camera-to-world matrix (OpenGL axes) whose last row is [0, 0, 0, 1]")
    if not (m.dtype.kind in "fiu" if isinstance(m, np.ndarray) else _all_numbers(m)):
        raise DatasetError(where, f"{what}: transform_matrix is not a numeric matrix (every entry must be a "
                                  "number, not a string, boolean or null)", fix)
    try:
        a = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise DatasetError(where, f"{what}: transform_matrix is not a numeric matrix ({e})", fix) from None
    if a.shape != (4, 4):
        raise DatasetError(where, f"{what}: transform_matrix has shape {list(a.shape)}, expected [4, 4]", fix)
    if not np.all(np.isfinite(a)):
        raise DatasetError(where, f"{what}: transform_matrix contains NaN or inf", fix)
    if not np.allclose(a[3], (0.0, 0.0, 0.0, 1.0), rtol=0.0, atol=_POSE_TOL):
        raise DatasetError(
            where, f"{what}: transform_matrix last row is {a[3].tolist()}, expected [0, 0, 0, 1]", fix
        )
    if not is_rotation(a[:3, :3]):
        raise DatasetError(where, f"{what}: transform_matrix's 3x3 block {np.round(a[:3, :3], 4).tolist()} is not a "
                                  "rotation (orthogonal columns of one length, positive determinant)", fix)
    return a


def is_rotation(rot: np.ndarray) -> bool:
    """Whether ``rot [3, 3]`` is a rotation up to a uniform scale: orthogonal columns of one length, no mirroring
    (a degenerate or sheared camera would give NaN or warped rays)."""
    gram = rot.T @ rot
    scale2 = float(np.trace(gram)) / 3.0
    return scale2 > 1e-12 and bool(np.allclose(gram, scale2 * np.eye(3), rtol=0.0, atol=_ROT_TOL * scale2)) \
        and float(np.linalg.det(rot)) > 0.0


def check_time(t, where: PathLike, what: str) -> float:
    fix = "store each frame's normalised time as a number in [0, 1] (frame_index / (num_frames - 1))"
    if not _is_number(t):
        raise DatasetError(where, f"{what}: time must be a number, got {t!r}", fix)
    t = _float(t)
    if not math.isfinite(t) or t < 0.0 or t > 1.0:
        raise DatasetError(where, f"{what}: time {t!r} is outside [0, 1]", fix)
    return t


def median_spacing(times: np.ndarray) -> float:
    """Median spacing of the sorted unique ``times``; 1.0 when fewer than two distinct times."""
    u = np.unique(np.asarray(times, dtype=np.float64))
    if u.size < 2:
        return 1.0
    return float(np.median(np.diff(u)))


# ----------------------------------------------------------------------------------------------
# area resampling
# ----------------------------------------------------------------------------------------------
def downscaled_size(h: int, w: int, factor: Union[int, float]) -> Tuple[int, int]:
    """Output size of :func:`area_downscale`: ``(round(h / factor), round(w / factor))``, at least 1."""
    if isinstance(factor, int) and h % factor == 0 and w % factor == 0:
        return h // factor, w // factor
    return max(1, int(round(h / factor))), max(1, int(round(w / factor)))


def area_downscale(x: np.ndarray, factor: Union[int, float]) -> np.ndarray:
    """Area-average ``x`` ``[H, W, C]`` float32 by ``factor`` -> ``[h, w, C]`` float32.

    Integer factors dividing both sides use an exact block mean (reshape-mean); anything else uses
    ``torch.nn.functional.interpolate(mode="area")`` to ``(round(H / factor), round(W / factor))``.
    """
    if factor == 1:
        return x
    h, w, c = x.shape
    if isinstance(factor, int) and h % factor == 0 and w % factor == 0:
        oh, ow = h // factor, w // factor
        rows = x.reshape(oh, factor, w * c).sum(axis=1, dtype=np.float32)  # two cheap passes
        out = rows.reshape(oh, ow, factor, c).sum(axis=2, dtype=np.float32)
        out *= np.float32(1.0 / (factor * factor))
        return out
    oh, ow = downscaled_size(h, w, factor)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(2, 0, 1)[None]
    return F.interpolate(t, size=(oh, ow), mode="area")[0].permute(1, 2, 0).contiguous().numpy()


# ----------------------------------------------------------------------------------------------
# image decoding
# ----------------------------------------------------------------------------------------------
def _unfilter_png(data: bytes, h: int, w: int, bpp: int) -> np.ndarray:
    """Undo PNG scanline filters in pure Python/numpy; returns ``[h, w * bpp]`` uint8 (slow fallback)."""
    stride = w * bpp
    rows = np.frombuffer(data, dtype=np.uint8, count=h * (stride + 1)).reshape(h, stride + 1)
    out = np.empty((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(h):
        ftype, line = int(rows[y, 0]), rows[y, 1:]
        if ftype == 0:
            cur = line.copy()
        elif ftype == 1:
            cur = np.cumsum(line.reshape(w, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif ftype == 2:
            cur = line + prev
        elif ftype in (3, 4):
            cur_l = line.tolist()
            up = prev.tolist()
            for i in range(stride):
                a = cur_l[i - bpp] if i >= bpp else 0
                b = up[i]
                if ftype == 3:
                    pred = (a + b) >> 1
                else:
                    c = up[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                cur_l[i] = (cur_l[i] + pred) & 0xFF
            cur = np.asarray(cur_l, dtype=np.uint8)
        else:
            raise ValueError(f"invalid PNG filter type {ftype} on row {y}")
        out[y] = cur
        prev = cur
    return out


def _read_png16(path: Path, raw: bytes) -> Optional[np.ndarray]:
    """Decode a 16-bit colour PNG exactly; returns ``[H, W, C]`` uint16, or ``None`` to defer to Pillow.

    Pillow reads 16-bit RGB(A) PNGs as 8-bit; this keeps the full precision. The scanline filters are
    undone by Pillow's C zip decoder (high and low bytes decoded separately) with a pure-Python
    fallback.
    """
    pos, ihdr, idat, trns = 8, None, [], None
    while pos + 8 <= len(raw):
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        ctype = raw[pos + 4:pos + 8]
        body = raw[pos + 8:pos + 8 + length]
        crc = raw[pos + 8 + length:pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise ValueError("PNG is truncated")
        if struct.unpack(">I", crc)[0] != (zlib.crc32(ctype + body) & 0xFFFFFFFF):
            raise ValueError(f"PNG chunk {ctype!r} has a bad CRC (file corrupted)")
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"tRNS":
            trns = body
        elif ctype == b"IEND":
            break
        pos += 12 + length
    if ihdr is None or not idat:
        raise ValueError("PNG has no IHDR or IDAT chunk")
    w, h, depth, color, _, _, interlace = ihdr
    channels = {2: 3, 4: 2, 6: 4}.get(color)
    if depth != 16 or channels is None:
        return None
    if interlace:
        warnings.warn(f"{path}: interlaced 16-bit PNG is read at 8-bit precision by Pillow", stacklevel=3)
        return None
    comp = b"".join(idat)
    bpp = 2 * channels
    try:
        from PIL import Image

        if channels == 2:  # grey+alpha: 4 bytes per pixel, copy them raw through an RGBA image
            b = np.asarray(Image.frombytes("RGBA", (w, h), comp, "zip", "RGBA"))
            hi, lo = b[..., 0::2], b[..., 1::2]
        else:
            mode = "RGB" if channels == 3 else "RGBA"
            hi = np.asarray(Image.frombytes(mode, (w, h), comp, "zip", f"{mode};16B"))
            lo = np.asarray(Image.frombytes(mode, (w, h), comp, "zip", f"{mode};16L"))
        arr = (hi.astype(np.uint16) << 8) | lo.astype(np.uint16)
    except Exception:
        data = zlib.decompress(comp)
        if len(data) < h * (w * bpp + 1):
            raise ValueError("PNG image data is truncated")
        rows = _unfilter_png(data, h, w, bpp)
        arr = rows.view(">u2").reshape(h, w, channels).astype(np.uint16)
    if channels == 2:
        arr = arr[..., [0, 0, 0, 1]]
    elif channels == 3 and trns is not None and len(trns) == 6:
        key = np.array(struct.unpack(">HHH", trns), dtype=np.uint16)
        alpha = np.where(np.all(arr == key, axis=-1), 0, 65535).astype(np.uint16)
        arr = np.concatenate([arr, alpha[..., None]], axis=-1)
    return arr


def read_image(path: PathLike) -> np.ndarray:
    """Read an image as ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA, straight alpha) float32 in [0, 1].

    8- and 16-bit PNGs (grey, grey+alpha, RGB, RGBA, palette) and JPEGs are supported.
    Raises :class:`DatasetError` when the file cannot be decoded.
    """
    path = Path(path)
    fix = "re-export the image as an 8- or 16-bit RGB/RGBA PNG, or restore it from the original dataset"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DatasetError(path, f"cannot read image file ({e.strerror or e})", fix) from None
    try:
        arr = None
        if raw[:8] == _PNG_SIG and len(raw) >= 33 and raw[24] == 16:
            arr = _read_png16(path, raw)
        if arr is not None:
            return arr.astype(np.float32) / np.float32(65535.0)
        import io

        from PIL import Image

        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            mode = im.mode
            if mode in ("RGB", "RGBA"):
                a = np.asarray(im)
            elif mode == "L":
                a = np.repeat(np.asarray(im)[..., None], 3, axis=-1)
            elif mode == "LA":
                a = np.asarray(im)[..., [0, 0, 0, 1]]
            elif mode.startswith("I;16") or mode == "I":
                g = np.asarray(im).astype(np.float32) / np.float32(65535.0)
                return np.repeat(np.clip(g, 0, 1)[..., None], 3, axis=-1)
            elif mode == "F":
                g = np.asarray(im).astype(np.float32)
                return np.repeat(np.clip(g, 0, 1)[..., None], 3, axis=-1)
            else:
                has_alpha = "A" in mode or "transparency" in im.info
                a = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
        if a.dtype != np.uint8:
            raise ValueError(f"unexpected pixel type {a.dtype} for mode {mode}")
        out = a.astype(np.float32)
        out *= np.float32(1.0 / 255.0)
        return out
    except DatasetError:
        raise
    except Exception as e:
        why = f"{type(e).__name__}: {e}"
        if type(e).__name__ == "UnidentifiedImageError":
            why = "not a recognised image format"
        raise DatasetError(path, f"cannot decode image ({why})", fix) from None


def _load_and_resample(path: Path, factor, bg: np.ndarray):
    """Read, area-downscale (premultiplied) and composite one image.

    Returns ``(rgb [h, w, 3] float32, alpha [h, w] float32 or None, (H, W) source size)``.
    """
    img = read_image(path)  # a fresh array we own: premultiply in place
    hw = img.shape[:2]
    if img.shape[-1] == 4:
        t = torch.from_numpy(img)
        t[..., :3].mul_(t[..., 3:])  # torch broadcasts this much faster than numpy
        prem = area_downscale(img, factor)
        a = prem[..., 3:4]
        rgb = prem[..., :3] + (1.0 - a) * bg
        return np.clip(rgb, 0.0, 1.0), np.clip(a[..., 0], 0.0, 1.0), hw
    return area_downscale(img, factor), None, hw


# ----------------------------------------------------------------------------------------------
# transforms_*.json parsing
# ----------------------------------------------------------------------------------------------
@dataclass
class _SplitSpec:
    name: str
    json_path: Path
    camera_angle_x: float
    image_paths: List[Path]
    times: np.ndarray  # [N] float64
    poses: np.ndarray  # [N, 4, 4] float64


def _resolve_image(root: Path, file_path: str, json_path: Path, what: str) -> Path:
    rel = file_path.replace("\\", "/")
    base = Path(rel) if os.path.isabs(rel) else root / rel
    if base.suffix.lower() in _IMAGE_EXTS:
        candidates = [base]
    else:
        candidates = [base.with_name(base.name + ext) for ext in _IMAGE_EXTS + tuple(e.upper() for e in _IMAGE_EXTS)]
        candidates.append(base)
    for c in candidates:
        if c.is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    wanted = {c.name.lower() for c in candidates}
    near = sorted(p.name for p in base.parent.iterdir() if p.name.lower() in wanted) if base.parent.is_dir() else []
    case = f"; {base.parent / near[0]} is there, with other letter case" if near else ""
    raise DatasetError(
        json_path,
        f"{what}: image for file_path {file_path!r} not found (looked for: {tried}{case})",
        "put the image at that path (file_path is relative to the scene folder; '.png' is added when "
        "it has no extension) or correct file_path",
    )


def _parse_transforms(json_path: Path, split: str, root: Path) -> _SplitSpec:
    try:
        text = json_path.read_text(encoding="utf-8-sig")  # (a byte-order mark, as some Windows editors write, is fine)
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(json_path, f"cannot read file ({e})", "restore the file from the dataset") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(
            json_path,
            f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}",
            "fix the JSON syntax at that position (e.g. a missing comma, bracket or quote)",
        ) from None
    except ValueError as e:  # e.g. an integer literal longer than Python's 4300-digit limit
        raise DatasetError(json_path, f"unreadable JSON value ({e})",
                           "write the numbers as ordinary decimals") from None
    if not isinstance(meta, dict):
        raise DatasetError(json_path, f"top level is a {type(meta).__name__}, expected an object",
                           'write {"camera_angle_x": ..., "frames": [...]}')
    if "camera_angle_x" not in meta:
        raise DatasetError(json_path, "missing key 'camera_angle_x'",
                           "add the horizontal field of view in radians, e.g. \"camera_angle_x\": 0.6911")
    angle = meta["camera_angle_x"]
    if not _is_number(angle) or not (0.0 < _float(angle) < math.pi):
        raise DatasetError(json_path, f"camera_angle_x must be a number in (0, pi), got {angle!r}",
                           "store the horizontal field of view in radians")
    if "frames" not in meta:
        raise DatasetError(json_path, "missing key 'frames'",
                           'add "frames": [{"file_path": ..., "time": ..., "transform_matrix": ...}, ...]')
    frames = meta["frames"]
    if not isinstance(frames, list):
        raise DatasetError(json_path, f"'frames' is a {type(frames).__name__}, expected a list",
                           "make 'frames' a list of frame objects")
    if len(frames) == 0:
        raise DatasetError(json_path, f"the {split!r} split has no frames",
                           "add frames to the list" + ("" if split == "train" else
                           ", or delete the file if the split is unused (only transforms_train.json is required)"))
    paths, times, poses = [], [], []
    for i, fr in enumerate(frames):
        what = f"frame {i}"
        if not isinstance(fr, dict):
            raise DatasetError(json_path, f"{what} is a {type(fr).__name__}, expected an object",
                               "write each frame as {\"file_path\": ..., \"time\": ..., \"transform_matrix\": ...}")
        for key in ("file_path", "time", "transform_matrix"):
            if key not in fr:
                raise DatasetError(json_path, f"{what}: missing key {key!r}",
                                   f"add {key!r} to frame {i} (every frame needs file_path, time, transform_matrix)")
        fp = fr["file_path"]
        if not isinstance(fp, str) or not fp.strip():
            raise DatasetError(json_path, f"{what}: file_path must be a non-empty string, got {fp!r}",
                               "write the image path relative to the scene folder, e.g. \"./train/r_000\"")
        times.append(check_time(fr["time"], json_path, what))
        poses.append(check_pose(fr["transform_matrix"], json_path, what))
        paths.append(_resolve_image(root, fp, json_path, what))
    return _SplitSpec(split, json_path, _float(angle), paths, np.asarray(times), np.stack(poses))


# ----------------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------------
def load_dnerf(
    root: PathLike,
    splits: Sequence[str] = ("train", "val", "test"),
    downscale: Union[int, float] = 1,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    aabb: Optional[Sequence[float]] = None,
    near: float = 2.0,
    far: float = 6.0,
) -> Scene:
    """Load a D-NeRF / Blender dynamic scene folder.

    Args:
        root: scene folder holding ``transforms_train.json`` (required) and optionally
            ``transforms_val.json`` / ``transforms_test.json``.
        splits: splits to load; a missing val/test file silently omits that split.
        downscale: area-averaging factor >= 1 (int, or float -> ``round(H / N), round(W / N)``).
        background: RGB colour in [0, 1] the RGBA images are composited on (after averaging).
        aabb: world box ``(xmin, ymin, zmin, xmax, ymax, zmax)``; default ``(-1.5,)*3 + (1.5,)*3``.
        near, far: ray range.

    Returns:
        :class:`Scene` whose splits hold ``images [N, h, w, 3]``, ``alphas [N, h, w]`` (or None for RGB
        sources), ``poses [N, 4, 4]``, ``times [N]``, ``intrinsics [N, 4]`` with
        ``fx = fy = 0.5 w / tan(0.5 camera_angle_x)``, ``cx, cy = w / 2, h / 2``.
        ``frame_dt`` is the median spacing of the sorted unique training times.

    Raises:
        DatasetError: on any missing, malformed or inconsistent input (the message names the file).
    """
    root = Path(root)
    factor = check_downscale(downscale, root)
    bg_t = check_background(background, root)
    aabb_t = check_aabb(aabb, root)
    near, far = check_near_far(near, far, root)
    if not root.exists():
        raise DatasetError(root, "dataset folder does not exist",
                           "check the path; a D-NeRF scene folder contains transforms_train.json and the image folders")
    if not root.is_dir():
        raise DatasetError(root, "expected a D-NeRF scene folder, got a file",
                           "pass the folder that contains transforms_train.json")
    if isinstance(splits, str):
        splits = (splits,)
    splits = list(dict.fromkeys(splits))
    if not splits:
        raise DatasetError(root, "no splits requested", "pass e.g. splits=('train', 'val', 'test')")

    train_json = root / "transforms_train.json"
    if not train_json.is_file():
        present = sorted(p.name for p in root.glob("transforms_*.json"))
        hint = f" (found: {', '.join(present)})" if present else ""
        raise DatasetError(train_json, f"missing the required training-split file{hint}",
                           "a D-NeRF scene needs transforms_train.json next to its image folders; "
                           "check that the path points at the scene folder")

    # Parse every JSON first so a broken file fails fast, before any image is decoded.
    specs: Dict[str, _SplitSpec] = {}
    train_spec = _parse_transforms(train_json, "train", root)
    for name in splits:
        if name == "train":
            specs[name] = train_spec
            continue
        jp = root / f"transforms_{name}.json"
        if jp.exists():
            specs[name] = _parse_transforms(jp, name, root)
            shared = sorted({Path(p).resolve() for p in specs[name].image_paths}
                            & {Path(p).resolve() for p in train_spec.image_paths})
            if shared:  # (the .npz reader refuses this; a copied JSON is the usual cause)
                log.warning("%s lists %d of its %d images that transforms_train.json lists too (e.g. %s): scores on "
                            "the %s split are not held out", jp, len(shared), len(specs[name].image_paths), shared[0],
                            name)

    bg = bg_t.numpy().astype(np.float32)
    jobs = [(name, i, p) for name, s in specs.items() for i, p in enumerate(s.image_paths)]
    buffers: Dict[str, dict] = {name: {"rgb": None, "alpha": None} for name in specs}
    first: Optional[Tuple[Path, Tuple[int, int]]] = None
    kinds: Dict[bool, List[Path]] = {True: [], False: []}  # the images with / without an alpha channel

    def work(job):
        return _load_and_resample(job[2], factor, bg)

    pool = ThreadPoolExecutor(max_workers=_NUM_THREADS)
    try:
        for (name, i, path), (rgb, alpha, hw) in zip(jobs, pool.map(work, jobs)):
            if first is None:
                first = (path, hw)
            elif hw != first[1]:
                raise DatasetError(
                    path,
                    f"image size {hw[1]}x{hw[0]} (WxH) differs from {first[0]} which is "
                    f"{first[1][1]}x{first[1][0]}",
                    "all images of a scene must have the same size; re-export or resize them consistently",
                )
            kinds[alpha is not None].append(path)
            buf, n = buffers[name], len(specs[name].image_paths)
            if buf["rgb"] is None:
                buf["rgb"] = np.empty((n,) + rgb.shape, dtype=np.float32)
            buf["rgb"][i] = rgb
            if alpha is not None:
                if buf["alpha"] is None:
                    buf["alpha"] = np.ones((n,) + alpha.shape, dtype=np.float32)
                buf["alpha"][i] = alpha
            elif buf["alpha"] is not None:
                buf["alpha"][i] = 1.0  # opaque RGB frame (earlier ones are 1 from np.ones)
    finally:  # on error, do not wait for the remaining images to decode
        pool.shutdown(wait=True, cancel_futures=True)
    if kinds[True] and kinds[False]:
        log.warning("%d of the scene's %d images have no alpha channel (e.g. %s), the others do (e.g. %s): those are "
                    "taken as opaque, on the background they were saved with, the others composited on the "
                    "background option; if their alpha was lost by mistake, re-export them as RGBA",
                    len(kinds[False]), len(jobs), kinds[False][0], kinds[True][0])

    out: Dict[str, SceneSplit] = {}
    for name, s in specs.items():
        rgb = buffers[name]["rgb"]
        alpha = buffers[name]["alpha"]
        h, w = rgb.shape[1:3]
        fx = 0.5 * w / math.tan(0.5 * s.camera_angle_x)
        intr = torch.tensor([fx, fx, 0.5 * w, 0.5 * h], dtype=torch.float32).expand(len(s.image_paths), 4)
        out[name] = SceneSplit(
            name=name,
            images=torch.from_numpy(rgb),
            alphas=None if alpha is None else torch.from_numpy(alpha),
            poses=torch.from_numpy(s.poses.astype(np.float32)),
            times=torch.from_numpy(s.times.astype(np.float32)),
            intrinsics=intr.contiguous(),
            paths=[str(p) for p in s.image_paths],
        )
    src_hw = first[1] if first is not None else None
    return Scene(
        root=str(root),
        splits=out,
        aabb=aabb_t,
        near=near,
        far=far,
        background=bg_t,
        frame_dt=median_spacing(train_spec.times),
        meta={
            "format": "dnerf",
            "downscale": factor,
            "source_hw": src_hw,
            "camera_angle_x": {n: s.camera_angle_x for n, s in specs.items()},
        },
    )
