"""Writing rendered frames as videos, and a dependency-free depth colormap.

:func:`write_video` tries, in order: mp4 (H.264 / yuv420p through ``imageio-ffmpeg``), an animated
GIF (``imageio``), a folder of PNGs; it returns the path actually written.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from .._io import replaced_on_success

__all__ = ["write_video", "colorize_depth", "turbo"]

log = logging.getLogger("kinfield")

ArrayLike = Union[np.ndarray, torch.Tensor]


# ------------------------------------------------------------------------------------ colormap
# Polynomial fit of Google's Turbo colormap (A. Mikhailov, 2019; fit by R. Du): channel(x) =
# c0 + c1 x + ... + c5 x^5 for x in [0, 1].
_TURBO_COEFFS = np.array([
    [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],  # red
    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],  # green
    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],  # blue
])


def turbo(x: np.ndarray) -> np.ndarray:
    """Turbo-like colours ``[..., 3]`` float in [0, 1] for values ``x [...]`` in [0, 1] (clipped)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    powers = np.stack([x ** k for k in range(6)], axis=-1)  # [..., 6]
    return np.clip(powers @ _TURBO_COEFFS.T, 0.0, 1.0)


def _np(x: Optional[ArrayLike]) -> Optional[np.ndarray]:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def depth_range(depths: Sequence[ArrayLike], opacities: Optional[Sequence[Optional[ArrayLike]]] = None,
                percentiles=(1.0, 99.0), max_samples: int = 1_000_000) -> Optional[tuple]:
    """``(near, far)`` from percentiles of the visible depths of one or more maps (None if none visible).

    Used to give every frame of a video the same depth scale.
    """
    vals = []
    for i, d in enumerate(depths):
        d = _np(d)
        o = _np(opacities[i]) if opacities is not None else None
        vis = _visible(d, o)
        vals.append(d[vis].ravel())
    v = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    if v.size == 0:
        return None
    if v.size > max_samples:
        v = v[np.linspace(0, v.size - 1, max_samples).astype(np.int64)]
    near, far = np.percentile(v, percentiles)
    return float(near), float(far)


def _visible(depth: np.ndarray, opacity: Optional[np.ndarray]) -> np.ndarray:
    vis = np.isfinite(depth)
    if opacity is not None:
        vis &= opacity >= 0.5
    else:
        vis &= depth > 0
    return vis


def colorize_depth(depth: ArrayLike, opacity: Optional[ArrayLike] = None, near: Optional[float] = None,
                   far: Optional[float] = None) -> np.ndarray:
    """Depth map ``[H, W]`` -> uint8 ``[H, W, 3]`` with a Turbo-like colormap (near = red, far = blue).

    Args:
        depth: ``[H, W]`` distances (torch or numpy).
        opacity: ``[H, W]`` accumulated opacity; pixels below 0.5 are background, drawn black.
            Without it, pixels with depth <= 0 or non-finite are background.
        near, far: depth range of the colormap; each missing one is the 1st / 99th percentile of the
            visible depths (pass both, e.g. from :func:`depth_range`, for a flicker-free video).
    """
    d = _np(depth)
    if d.ndim != 2:
        raise ValueError(f"depth must be [H, W], got {d.shape}")
    o = _np(opacity)
    if o is not None and o.shape != d.shape:
        raise ValueError(f"opacity shape {o.shape} differs from depth shape {d.shape}")
    vis = _visible(d, o)
    out = np.zeros(d.shape + (3,), dtype=np.uint8)
    if not vis.any():
        return out
    if near is None or far is None:
        lo, hi = np.percentile(d[vis], (1.0, 99.0))
        near = float(lo) if near is None else float(near)
        far = float(hi) if far is None else float(far)
    span = max(far - near, 1e-8)
    x = 1.0 - (d[vis] - near) / span  # near -> 1 (red), far -> 0 (blue)
    out[vis] = (turbo(x) * 255.0 + 0.5).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------- video
def _as_frames(frames: Sequence[ArrayLike]) -> List[np.ndarray]:
    out = []
    for i, f in enumerate(frames):
        if isinstance(f, torch.Tensor):
            f = f.detach().cpu().numpy()
        f = np.asarray(f)
        if f.dtype != np.uint8:
            if np.issubdtype(f.dtype, np.floating):
                f = (np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            else:
                f = np.clip(f, 0, 255).astype(np.uint8)
        if f.ndim == 2:
            f = np.repeat(f[:, :, None], 3, axis=2)
        if f.ndim != 3 or f.shape[2] not in (3, 4):
            raise ValueError(f"frame {i} must be [H, W, 3], got shape {f.shape}")
        f = f[:, :, :3]
        if out and f.shape != out[0].shape:
            raise ValueError(f"frame {i} has shape {f.shape}, frame 0 has {out[0].shape}")
        out.append(np.ascontiguousarray(f))
    if not out:
        raise ValueError("write_video: no frames")
    return out


def _pad_even(f: np.ndarray) -> np.ndarray:
    """Pad ``[H, W, 3]`` by edge replication to even H and W (yuv420p needs even sizes)."""
    ph, pw = f.shape[0] % 2, f.shape[1] % 2
    if ph or pw:
        f = np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return f


def _write_mp4(frames: List[np.ndarray], path: Path, fps: float) -> Path:
    import imageio_ffmpeg

    frames = [_pad_even(f) for f in frames]
    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=float(fps), codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
        quality=8, macro_block_size=1, ffmpeg_log_level="error",
    )
    writer.send(None)  # start the ffmpeg process
    try:
        for f in frames:
            writer.send(f)
    finally:
        writer.close()
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"ffmpeg wrote no data to {path}")
    return path


def _write_gif(frames: List[np.ndarray], path: Path, fps: float) -> Path:
    import imageio.v3 as iio

    iio.imwrite(path, np.stack(frames), extension=".gif", duration=1000.0 / float(fps), loop=0)
    return path


def _write_png_dir(frames: List[np.ndarray], path: Path, fps: float) -> Path:
    import imageio.v3 as iio

    path.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        iio.imwrite(path / f"{i:04d}.png", f)
    return path


def video_targets(path) -> List[tuple]:
    """``[(format, path)]`` :func:`write_video` tries, in order, for a video requested at ``path``."""
    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".mp4")
    mp4 = [("mp4", path)] if path.suffix.lower() != ".gif" else []
    return mp4 + [("gif", path.with_suffix(".gif")), ("png folder", path.with_suffix(""))]


def write_video(frames: Sequence[ArrayLike], path, fps: float = 24) -> Path:
    """Write frames (uint8 ``[H, W, 3]``; float frames in [0, 1] are converted) as a video.

    Tries an H.264 mp4 at ``path`` (odd sizes are edge-padded to even), then a GIF next to it
    (``path`` with suffix ``.gif``), then a folder of PNGs (``path`` without suffix). A ``path``
    ending in ``.gif`` skips the mp4 attempt.

    Returns:
        the file (or folder) actually written; which one is logged.
    """
    if not (math.isfinite(float(fps)) and float(fps) > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps}")
    frames = _as_frames(frames)
    writers = {"mp4": _write_mp4, "gif": _write_gif, "png folder": _write_png_dir}
    errors = []
    for kind, target in video_targets(path):
        fn = writers[kind]
        try:  # a failed attempt leaves whatever was at its target (an earlier render) as it was
            with replaced_on_success(target) as tmp:
                fn(frames, tmp, fps)
        except Exception as exc:  # noqa: BLE001 - any failure moves on to the next format
            errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            log.warning("could not write %s as %s (%s: %s); trying the next format", target, kind,
                        type(exc).__name__, exc)
            continue
        h, w = frames[0].shape[:2]
        size = f"{w}x{h}"
        if kind == "mp4" and (w % 2 or h % 2):
            size = f"{w + w % 2}x{h + h % 2}, edge-padded from {size}"
        log.info("wrote %s (%s, %d frames, %s, %g fps)", target, kind, len(frames), size, fps)
        return target
    raise RuntimeError(f"could not write {path} in any format: " + "; ".join(errors))


# ------------------------------------------------------------------------------ render to frames
#: video outputs and the render keys they need: rgb (blended), depth (blended, colourised),
#: static / dynamic (each field rendered alone)
KINEMATIC_OUTPUTS = ("velocity", "acceleration", "jerk")
VIDEO_OUTPUTS = ("rgb", "depth", "static", "dynamic") + KINEMATIC_OUTPUTS


def frames_memory(n_frames: int, height: int, width: int, outputs: Sequence[str]) -> int:
    """Bytes :func:`render_frames` and :func:`write_video` hold for ``n_frames`` frames of ``outputs`` (every frame is
    kept until the path is done: depth and vector videos take one colour scale over all of them): the uint8 frames, the
    float depth / opacity and vector planes, and the writer's one contiguous copy of a video."""
    outputs = list(dict.fromkeys(outputs))  # (render_frames renders a repeated output once)
    pixels = int(n_frames) * int(height) * int(width)
    per_pixel = 3 * len(outputs) + 3  # the frames, and the copy of one video being written
    per_pixel += 8 if "depth" in outputs else 0  # float32 depth + opacity before colouring
    per_pixel += 16 * sum(o in KINEMATIC_OUTPUTS for o in outputs)  # float64 [H, W, 2] vectors
    return pixels * per_pixel


def available_memory(cgroup_root: Union[str, Path] = "/sys/fs/cgroup") -> Optional[int]:
    """Bytes of memory available to this process now: Linux's ``MemAvailable`` (free memory and reclaimable cache),
    else the free pages, lowered to the headroom of the process's memory cgroup where one sets a limit (a container's
    limit, which ``MemAvailable`` does not see); ``None`` where the system says neither."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            pass
    headroom = cgroup_headroom(cgroup_root)
    if headroom is None:
        return free
    return headroom if free is None else min(free, headroom)


def cgroup_headroom(root: Union[str, Path] = "/sys/fs/cgroup") -> Optional[int]:
    """Bytes the memory cgroup mounted at ``root`` still allows (its limit less its usage, the reclaimable inactive
    page cache counted as free), for cgroup v2 (``memory.max``) or v1 (``memory/memory.limit_in_bytes``); ``None``
    without a readable limit or with none set."""
    root = Path(root)
    for limit_file, usage_file, stat_file, cache_key in (
            (root / "memory.max", root / "memory.current", root / "memory.stat", "inactive_file"),
            (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes",
             root / "memory" / "memory.stat", "total_inactive_file")):
        try:
            limit_text = limit_file.read_text().strip()
            if limit_text == "max":
                return None
            limit, usage = int(limit_text), int(usage_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if limit >= 1 << 60:  # v1 writes "no limit" as a page-rounded 2^63 - 1
            return None
        reclaimable = 0
        try:
            for line in stat_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == cache_key:
                    reclaimable = int(value)
                    break
        except (OSError, ValueError):
            pass
        return max(0, limit - usage + reclaimable)
    return None


def render_frames(model, poses: torch.Tensor, times: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int,
                  background, outputs: Sequence[str] = ("rgb",), progress: bool = True, desc: str = "render"):
    """Render a camera/time path into uint8 frames per output.

    Args:
        model: a :class:`~kinfield.render.SceneModel`.
        poses: ``[F, 4, 4]`` c2w; times: ``[F]``; intrinsics: ``[4]`` shared or ``[F, 4]`` per frame.
        outputs: subset of :data:`VIDEO_OUTPUTS`. Depth uses one colour scale for the whole path
            (percentiles of the visible depths over all frames). ``velocity``/``acceleration``/``jerk``
            colour-code the kinematic field at the visible surface, projected on the image plane (hue =
            direction, brightness = magnitude, one scale per video).

    Returns:
        dict output name -> list of ``F`` uint8 ``[H, W, 3]`` arrays.
    """
    from tqdm.auto import tqdm

    outputs = list(dict.fromkeys(outputs))
    bad = [o for o in outputs if o not in VIDEO_OUTPUTS]
    if bad:
        raise ValueError(f"unknown output(s) {bad}; choose from {', '.join(VIDEO_OUTPUTS)}")
    kinematic = [o for o in outputs if o in KINEMATIC_OUTPUTS]
    if kinematic and model.kinematic is None:  # before any frame is rendered
        raise RuntimeError(f"this run has no kinematic field: the {','.join(kinematic)} output(s) need one")
    n = int(poses.shape[0])
    if intrinsics.dim() == 1:
        intrinsics = intrinsics[None].expand(n, 4)
    decompose = "static" in outputs or "dynamic" in outputs
    if decompose and getattr(model, "static", None) is None:
        log.warning("this model has no static field (model_use_static false): its 'static' video shows only the "
                    "background and its 'dynamic' video equals 'rgb'")
    frames = {o: [] for o in outputs}
    depths, opacities = [], []
    was_training = model.training
    model.eval()
    try:
        for i in tqdm(range(n), desc=desc, disable=not progress, unit="frame"):
            out = model.render_image(poses[i], intrinsics[i], height, width, float(times[i]), background,
                                     decompose=decompose)
            for name, key in (("rgb", "rgb"), ("static", "rgb_static"), ("dynamic", "rgb_dynamic")):
                if name in frames:
                    frames[name].append((out[key].clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8))
            if "depth" in frames:
                depths.append(out["depth"].float().cpu().numpy())
                opacities.append(out["opacity"].float().cpu().numpy())
            for name in KINEMATIC_OUTPUTS:
                if name in frames:
                    frames[name].append(image_plane_kinematics(model, poses[i], intrinsics[i], height, width,
                                                               float(times[i]), out, name))
    finally:
        model.train(was_training)
    if "depth" in frames:
        rng = depth_range(depths, opacities)
        near, far = rng if rng is not None else (None, None)
        frames["depth"] = [colorize_depth(d, o, near, far) for d, o in zip(depths, opacities)]
    for name in KINEMATIC_OUTPUTS:
        if name in frames:
            frames[name] = colorize_vectors(frames[name])
    return frames


@torch.no_grad()
def image_plane_kinematics(model, c2w, intrinsics, height, width, time, render_out, quantity) -> np.ndarray:
    """Camera-plane components (right, up) ``[H, W, 2]`` of ``quantity`` at the rendered surface (NaN where empty);
    the model must have a kinematic field (:func:`render_frames` checks)."""
    dev = model.aabb.device
    x = model.surface_points(c2w, intrinsics, height, width, render_out["depth"])
    k = model.kinematics_at(x, torch.full((x.shape[0],), time, device=dev))[quantity]
    cam = k @ c2w[:3, :3].to(dev)  # world vector -> camera axes (x right, y up)
    vec = cam[:, :2].reshape(height, width, 2).cpu().numpy().astype(np.float64)
    vec[render_out["opacity"].cpu().numpy() < 0.5] = np.nan
    return vec


def colorize_vectors(vectors: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Colour-code ``[H, W, 2]`` vector maps (hue = direction, value = magnitude / 99th percentile); NaN -> black."""
    mags = np.concatenate([np.linalg.norm(v, axis=-1).ravel() for v in vectors])
    mags = mags[np.isfinite(mags)]
    scale = float(np.percentile(mags, 99)) if mags.size else 1.0
    scale = scale if scale > 1e-12 else 1.0
    out = []
    for v in vectors:
        ang = (np.arctan2(v[..., 1], v[..., 0]) / (2 * np.pi)) % 1.0
        val = np.clip(np.linalg.norm(v, axis=-1) / scale, 0.0, 1.0)
        img = hue_wheel(ang) * val[..., None]
        img[~np.isfinite(img).all(-1)] = 0.0
        out.append((img * 255 + 0.5).astype(np.uint8))
    return out


def hue_wheel(hue: np.ndarray) -> np.ndarray:
    """Fully saturated RGB ``[..., 3]`` in [0, 1] for hues ``[...]`` in [0, 1) (0 = red, 1/3 = green, 2/3 = blue)."""
    h6 = np.asarray(hue, np.float64)[..., None] * 6.0
    return np.clip(np.concatenate([np.abs(h6 - 3) - 1, 2 - np.abs(h6 - 2), 2 - np.abs(h6 - 4)], -1), 0.0, 1.0)
