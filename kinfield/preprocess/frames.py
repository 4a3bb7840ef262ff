"""Read the frames of a video file (imageio-ffmpeg) or of a folder of images, with stride, a frame
cap and resizing. Every failure raises :class:`PreprocessError` naming the file and the fix."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from .errors import PreprocessError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MIN_FRAMES = 3
# shortest frame side processed (OpenCV's optical flow needs 12 px; SfM is unlikely to register much below ~64)
MIN_SIDE = 16


@dataclass
class Frames:
    """Decoded frames and where they came from.

    Attributes:
        images: ``[N]`` RGB uint8 ``[H, W, 3]`` arrays, all the same size, in time order.
        source: the input path; ``source_type`` ``"video"`` or ``"frames"``.
        fps: the source frame rate (videos; ``None`` for a folder) and ``fps_effective = fps / stride``.
        source_indices: index of every kept frame in the source.
        original_size / size: ``(width, height)`` before / after resizing; ``scale = size / original``.
    """

    images: List[np.ndarray]
    source: str
    source_type: str
    fps: Optional[float]
    stride: int
    source_indices: List[int]
    original_size: tuple
    size: tuple
    scale: float
    names: List[str] = field(default_factory=list)

    @property
    def fps_effective(self) -> Optional[float]:
        return None if self.fps is None else self.fps / self.stride

    def info(self) -> dict:
        return {
            "source": self.source, "source_type": self.source_type, "fps": self.fps,
            "fps_effective": self.fps_effective, "stride": self.stride, "frame_count": len(self.images),
            "source_indices": list(self.source_indices), "original_size": list(self.original_size),
            "size": list(self.size), "resize_scale": self.scale,
        }


def natural_key(name: str):
    """Sort key of a file name in natural order (``2.png`` before ``10.png``, ``999`` before ``1000``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def target_size(width: int, height: int, resize_long_side: Optional[int] = None,
                width_out: Optional[int] = None) -> tuple:
    """``(w, h)`` after resizing so that the long side is ``resize_long_side`` (or the width is
    ``width_out``), keeping the aspect ratio; never upsamples; ``None`` keeps the size."""
    if resize_long_side and width_out:
        raise ValueError("give either resize_long_side or width, not both")
    if resize_long_side:
        s = min(1.0, float(resize_long_side) / max(width, height))
    elif width_out:
        s = min(1.0, float(width_out) / width)
    else:
        s = 1.0
    return max(1, int(round(width * s))), max(1, int(round(height * s)))


def _resize(img: np.ndarray, size: tuple) -> np.ndarray:
    if (img.shape[1], img.shape[0]) == tuple(size):
        return img
    from .errors import require_cv2

    cv2 = require_cv2()
    return cv2.resize(img, tuple(int(v) for v in size), interpolation=cv2.INTER_AREA)


def _read_image(path: Path) -> np.ndarray:
    """A frame file as an array, turned upright by its EXIF orientation (phone photos), and in RGB(A) unless it
    holds 16-bit / float samples (which :func:`_to_rgb` scales): palette, grey + alpha, 1-bit and CMYK files are
    converted by Pillow (CMYK read as four channels would have lost K and its colours)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode not in ("RGB", "RGBA", "L", "I;16", "I;16B", "I;16L", "I", "F"):
            im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
        return np.asarray(im)


def _to_rgb(img: np.ndarray, path) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.int32 and img.size and img.min() >= 0 and img.max() <= 65535:  # Pillow's 16-bit "I" mode
        img = img.astype(np.uint16)
    if img.dtype == np.uint16:
        img = (img.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
        else:
            raise PreprocessError(path, f"unsupported pixel type {img.dtype}", "use 8-bit RGB images")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
        raise PreprocessError(path, f"unsupported image shape {img.shape}", "use RGB images")
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def _check_args(stride: int, max_frames: Optional[int]) -> None:
    if int(stride) < 1:
        raise ValueError(f"--stride must be >= 1, got {stride}")
    if max_frames is not None and int(max_frames) < 1:
        raise ValueError(f"--max-frames must be >= 1, got {max_frames}")


def read_frames(source: Union[str, os.PathLike], max_frames: Optional[int] = None, stride: int = 1,
                resize_long_side: Optional[int] = None, width: Optional[int] = None, progress: bool = True,
                min_frames: int = MIN_FRAMES) -> Frames:
    """Frames ``0, stride, 2 stride, ...`` (at most ``max_frames``) of a video or image folder.

    Raises:
        PreprocessError: the input is missing, not a readable video / image folder, holds images of
            different sizes, or yields fewer than ``min_frames`` frames.
    """
    _check_args(stride, max_frames)
    path = Path(source)
    if not path.exists():
        raise PreprocessError(path, "does not exist",
                              "pass an existing video file (mp4, mov, avi, ...) or a folder of frames (png/jpg)")
    if path.is_dir():
        fr = _read_folder(path, max_frames, stride, resize_long_side, width, progress)
    else:
        fr = _read_video(path, max_frames, stride, resize_long_side, width, progress)
    if len(fr.images) < min_frames:
        raise PreprocessError(
            path, f"only {len(fr.images)} frame(s) to process (stride {stride}, max frames {max_frames}); "
                  f"at least {min_frames} are needed",
            "use a longer clip or more images, a smaller --stride or a larger --max-frames")
    if min(fr.size) < MIN_SIDE:
        raise PreprocessError(path, f"frames of {fr.size[0]}x{fr.size[1]} px are too small to process (shortest side "
                                    f"below {MIN_SIDE} px)", "use larger frames, or a larger --resize-long-side / --width")
    return fr


def _read_folder(path: Path, max_frames, stride, resize_long_side, width, progress) -> Frames:
    from tqdm import tqdm

    files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                    and not p.name.startswith(".")),  # (hidden files, e.g. macOS's ._000.png resource forks)
                   key=lambda p: natural_key(p.name))
    picked = list(range(0, len(files), int(stride)))
    if max_frames is not None:
        picked = picked[: int(max_frames)]
    if not files:
        raise PreprocessError(path, f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})",
                              "pass a folder of frames named in time order (000.png, 001.png, ...) or a video")
    images, size0, size = [], None, None
    for k in tqdm(picked, desc="read frames", disable=not progress, unit="frame"):
        f = files[k]
        try:
            img = _to_rgb(_read_image(f), f)
        except PreprocessError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder error
            raise PreprocessError(f, f"cannot read image ({type(exc).__name__}: {exc})",
                                  "remove or re-save the file as PNG/JPEG") from None
        if size0 is None:
            size0 = (img.shape[1], img.shape[0])
            size = target_size(*size0, resize_long_side, width)
        elif (img.shape[1], img.shape[0]) != size0:
            raise PreprocessError(f, f"image size {img.shape[1]}x{img.shape[0]} differs from the first frame's "
                                     f"{size0[0]}x{size0[1]}", "give frames of one size (one video)")
        images.append(_resize(img, size))
    size0 = size0 or (0, 0)
    return Frames(images=images, source=str(path.resolve()), source_type="frames", fps=None, stride=int(stride),
                  source_indices=picked, original_size=size0, size=size or size0,
                  scale=(size[0] / size0[0]) if size0[0] else 1.0, names=[files[k].name for k in picked])


def _read_video(path: Path, max_frames, stride, resize_long_side, width, progress) -> Frames:
    import imageio_ffmpeg
    from tqdm import tqdm

    fix = ("check that the file plays in a video player; re-encode it, e.g. "
           f"`ffmpeg -i {path.name} -c:v libx264 -pix_fmt yuv420p fixed.mp4`, or pass a folder of frames")
    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        meta = next(gen)
    except Exception as exc:  # noqa: BLE001 - ffmpeg failures come as RuntimeError / OSError / StopIteration
        msg = str(exc).strip().splitlines()
        raise PreprocessError(path, f"cannot be read as a video ({type(exc).__name__}: "
                                    f"{msg[-1] if msg else 'no details'})", fix) from None
    w, h = (int(v) for v in meta["size"])
    fps = float(meta.get("fps") or 0.0) or None
    n_est = meta.get("nframes")
    size = target_size(w, h, resize_long_side, width)
    images, indices = [], []
    total = None
    if isinstance(n_est, (int, float)) and np.isfinite(n_est) and n_est > 0:
        total = len(range(0, int(n_est), int(stride)))
        if max_frames is not None:
            total = min(total, int(max_frames))
    bar = tqdm(total=total, desc="decode video", disable=not progress, unit="frame")
    try:
        for k, buf in enumerate(gen):
            if k % int(stride):
                continue
            img = np.frombuffer(buf, dtype=np.uint8)
            if img.size != w * h * 3:
                break  # truncated last frame
            images.append(_resize(img.reshape(h, w, 3), size))
            indices.append(k)
            bar.update(1)
            if max_frames is not None and len(images) >= int(max_frames):
                break
    except Exception as exc:  # noqa: BLE001
        if not images:
            raise PreprocessError(path, f"cannot decode the video ({type(exc).__name__}: {exc})", fix) from None
    finally:
        bar.close()
        try:
            gen.close()
        except Exception:  # noqa: BLE001
            pass
    if not images:
        raise PreprocessError(path, "the video has no decodable frames", fix)
    return Frames(images=images, source=str(path.resolve()), source_type="video", fps=fps, stride=int(stride),
                  source_indices=indices, original_size=(w, h), size=size, scale=size[0] / w)
