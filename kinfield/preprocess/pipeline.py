"""``preprocess(INPUT, OUT_DIR)``: a video (or a folder of frames) -> the NSFF layout (see
:mod:`kinfield.preprocess.writer`).

Stages: read frames -> optical flow between neighbours (DIS) with forward-backward masks -> first
motion masks without camera poses (flow violating a RANSAC fundamental matrix / homography per pair,
:func:`kinfield.preprocess.masks.motion_masks`) -> pycolmap SfM on the frames with those masks
(dilated) as feature masks (a second pass without masks if the masked pass fails) -> undistortion
when SIMPLE_RADIAL found a noticeable distortion (then the flow is recomputed on the undistorted
frames) -> final motion masks from the flow and the SfM cameras
(:func:`kinfield.preprocess.masks.motion_masks_from_poses`: per pixel a depth is fitted to both
neighbours' flow; pixels a static point cannot explain are moving) -> LLFF poses_bounds, sparse points,
per-frame sparse depth, flow, motion masks and ``preprocess.json``.
"""
from __future__ import annotations

import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .errors import PreprocessError, SfMError, require_cv2, require_pycolmap
from .frames import read_frames
from .flow import neighbour_flows
from .masks import dilate, motion_masks, motion_masks_from_poses
from .sfm import run_sfm, undistort_maps
from .writer import (
    OUTPUT_NAMES,
    depth_bounds,
    frame_name,
    make_poses_bounds,
    prepare_out_dir,
    write_flows,
    write_images,
    write_json,
    write_masks,
    write_poses_bounds,
    write_sparse_depth,
)

log = logging.getLogger("kinfield")
PREPROCESS_VERSION = 1


@dataclass
class PreprocessOptions:
    """Options of :func:`preprocess` (the CLI flags of ``tools/preprocess.py``)."""

    max_frames: Optional[int] = None
    stride: int = 1
    resize_long_side: Optional[int] = None
    width: Optional[int] = None
    camera_model: str = "SIMPLE_PINHOLE"
    focal: Optional[float] = None          # known focal in output pixels: fixed during SfM
    matcher: str = "auto"
    max_features: int = 4096
    mask_features: bool = True             # hide moving pixels from SfM feature extraction
    mask_dilate_px: Optional[int] = None   # default: 1% of the long side, at least 2
    flow_method: str = "dis"
    flow_preset: Optional[str] = None      # DIS preset; default: fine up to 640 px, medium above
    fb_abs_thresh: float = 1.0
    fb_rel_thresh: float = 0.05
    motion_threshold: Optional[float] = None  # pixels; default max(1, 1% of the long side)
    num_threads: int = -1
    seed: int = 0
    overwrite: bool = False
    keep_work: bool = False
    progress: bool = True
    verbose: bool = False


def _versions() -> dict:
    import imageio
    import imageio_ffmpeg

    from .. import __version__

    v = {"kinfield": __version__, "numpy": np.__version__, "imageio": imageio.__version__,
         "imageio_ffmpeg": imageio_ffmpeg.__version__, "python": platform.python_version()}
    try:
        v["ffmpeg"] = imageio_ffmpeg.get_ffmpeg_version()
    except Exception:  # noqa: BLE001
        pass
    try:
        import cv2

        v["opencv"] = cv2.__version__
    except ImportError:
        pass
    try:
        import pycolmap

        v["pycolmap"] = pycolmap.__version__
        v["colmap"] = str(getattr(pycolmap, "COLMAP_version", ""))
    except ImportError:
        pass
    return v


def _flows_and_masks(images, opts: PreprocessOptions):
    h, w = images[0].shape[:2]
    flows = neighbour_flows(images, opts.flow_method, opts.flow_preset, opts.fb_abs_thresh, opts.fb_rel_thresh,
                            progress=opts.progress)
    masks, info = motion_masks(flows, (h, w), threshold=opts.motion_threshold)
    return flows, masks, info


def preprocess(source: Union[str, Path], out_dir: Union[str, Path], opts: Optional[PreprocessOptions] = None) -> dict:
    """Turn ``source`` (video file or folder of frames) into the NSFF layout in ``out_dir``.

    Returns the ``preprocess.json`` document. Raises :class:`PreprocessError` (bad input, existing
    output without ``overwrite``, missing dependency) or :class:`SfMError` (SfM failed / registered
    too few frames). The layout is written to a hidden sibling folder and moved into ``out_dir`` only once
    complete, so a failed run leaves ``out_dir`` as it was (with ``keep_work``, the COLMAP work folder stays in
    that sibling); the input may not lie in the outputs a run replaces in ``out_dir``.
    """
    opts = opts or PreprocessOptions()
    timings = {}
    require_cv2()
    require_pycolmap()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PreprocessError(out, "exists and is not a folder", "choose another OUT_DIR")
    if out.is_dir() and any(out.iterdir()) and not opts.overwrite:
        raise PreprocessError(out, "output folder is not empty", "pass --overwrite or choose an empty OUT_DIR")
    src, dst = Path(source).resolve(), out.resolve()
    replaced = [dst / name for name in OUTPUT_NAMES]  # (other files in OUT_DIR, a video say, are left alone)
    if any(src == r or r in src.parents for r in replaced):
        raise PreprocessError(source, f"the input lies in {out}'s {src.relative_to(dst).parts[0]}, which this run "
                                      "replaces", "move the input elsewhere, or write to another OUT_DIR")

    t0 = time.perf_counter()
    frames = read_frames(source, max_frames=opts.max_frames, stride=opts.stride,
                         resize_long_side=opts.resize_long_side, width=opts.width, progress=opts.progress)
    timings["read_s"] = time.perf_counter() - t0
    images = frames.images
    n = len(images)
    h, w = images[0].shape[:2]
    log.info("%d frames of %dx%d from %s", n, w, h, frames.source)

    cv2 = require_cv2()
    if opts.num_threads > 0:
        cv2.setNumThreads(int(opts.num_threads))
    t0 = time.perf_counter()
    flows, masks, mask_info = _flows_and_masks(images, opts)
    timings["flow_and_masks_s"] = time.perf_counter() - t0

    # the layout is written beside OUT_DIR and moved in once complete: a failed run leaves OUT_DIR as it was (an
    # earlier result included, with --overwrite), and never half a layout
    stage = dst.parent / f".{dst.name}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        doc = _reconstruct(stage, frames, images, flows, masks, mask_info, opts, timings)
    except BaseException:
        if opts.keep_work and (stage / "sfm_work").is_dir():
            log.warning("the run failed; its COLMAP work folder is kept in %s", stage / "sfm_work")
        else:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    try:
        out = prepare_out_dir(out, overwrite=opts.overwrite)
    except FileExistsError as exc:
        raise PreprocessError(out, str(exc), "pass --overwrite or choose an empty OUT_DIR") from None
    for p in stage.iterdir():
        os.replace(p, out / p.name)
    stage.rmdir()
    return doc


def _reconstruct(out: Path, frames, images, flows, masks, mask_info, opts: PreprocessOptions, timings: dict) -> dict:
    cv2 = require_cv2()
    n = len(images)
    h, w = images[0].shape[:2]
    write_images(out / "images", images)
    names = [f"{frame_name(i)}.png" for i in range(n)]

    if opts.keep_work:
        work = out / "sfm_work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        cleanup = None
    else:
        cleanup = tempfile.TemporaryDirectory(prefix="kinfield_sfm_")
        work = Path(cleanup.name)
    try:
        t0 = time.perf_counter()
        log.info("structure from motion (pycolmap, %s, one shared camera) on %d frames", opts.camera_model, n)
        result, masked = _sfm_with_fallback(out / "images", names, work, masks, opts, frames.source)
        log.info("SfM registered %d/%d frames, %d points, mean reprojection error %.3f px, focal %.1f px",
                 result.stats["registered_frames"], n, result.stats["num_points3D"],
                 result.stats["mean_reprojection_error_px"], result.focal)
        timings["sfm_s"] = time.perf_counter() - t0
    finally:
        if cleanup is not None:
            cleanup.cleanup()

    # undistort (SIMPLE_RADIAL with a noticeable k1): images, then flow and masks again
    maps = undistort_maps(result)
    if maps is not None:
        log.info("undistorting the frames (k1 = %.4f)", result.k1)
        images = [cv2.remap(im, maps[0], maps[1], interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                  for im in images]
        shutil.rmtree(out / "images")
        write_images(out / "images", images)
        t0 = time.perf_counter()
        flows = neighbour_flows(images, opts.flow_method, opts.flow_preset, opts.fb_abs_thresh, opts.fb_rel_thresh,
                                progress=opts.progress)
        timings["flow_undistorted_s"] = time.perf_counter() - t0

    # poses + bounds from the sparse depths of each frame
    sparse = result.sparse_depth()
    all_depths = np.concatenate([d["depth"] for d in sparse]) if sparse else np.zeros(0)
    if all_depths.size < 8:
        raise SfMError(frames.source, f"the SfM model has only {all_depths.size} usable point observations",
                       registered=n, total=n)
    g_near, g_far = depth_bounds(all_depths)
    bounds = np.array([depth_bounds(d["depth"]) if len(d["depth"]) >= 10 else (g_near, g_far) for d in sparse])

    # final motion masks with the SfM cameras (the pose-free ones only steered the feature masks)
    t0 = time.perf_counter()
    masks, pose_mask_info = motion_masks_from_poses(
        flows, result.c2w, result.focal, result.cx, result.cy, (0.5 * bounds[:, 0].min(), 100.0 * bounds[:, 1].max()),
        threshold=opts.motion_threshold)
    timings["motion_masks_s"] = time.perf_counter() - t0
    pb = make_poses_bounds(result.c2w, (h, w, result.focal), bounds)
    write_poses_bounds(out / "poses_bounds.npy", pb)

    (out / "sparse").mkdir(parents=True, exist_ok=True)
    if maps is None:  # (after undistortion the COLMAP model's camera would describe the distorted frames)
        (out / "sparse" / "0").mkdir()
        result.reconstruction.write(str(out / "sparse" / "0"))
    np.save(out / "sparse" / "points3D.npy", result.points.astype(np.float32))
    write_sparse_depth(out / "sparse_depth", sparse)
    write_flows(out / "flow_i1", flows)
    write_masks(out / "motion_masks", masks)

    doc = {
        "format": "nsff",
        "preprocess_version": PREPROCESS_VERSION,
        **frames.info(),
        "frame_times": (np.arange(n) / max(n - 1, 1)).tolist(),
        "width": w, "height": h, "focal": result.focal,
        "principal_point": [result.cx, result.cy],
        "undistorted": maps is not None,
        "sfm": {**result.stats, "feature_masks": masked,
                "registered_fraction": result.stats["registered_frames"] / n,
                "near_far_global": [g_near, g_far],
                "sparse_depth_points_per_frame": [int(len(d["depth"])) for d in sparse]},
        "flow": {"method": opts.flow_method, "preset": opts.flow_preset or "auto",
                 "fb_abs_thresh_px": opts.fb_abs_thresh, "fb_rel_thresh": opts.fb_rel_thresh,
                 "valid_fraction_fwd": [float(f["fwd_mask"].mean()) for f in flows]},
        "motion_masks": {**pose_mask_info,
                         "feature_masks": {k: v for k, v in mask_info.items() if k != "pairs"}},
        "options": asdict(opts),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "versions": _versions(),
    }
    write_json(out / "preprocess.json", doc)
    return doc


def _sfm_with_fallback(image_dir: Path, names, work: Path, masks, opts: PreprocessOptions, source: str):
    """SfM with motion-masked features first (when enabled and some pixels move), then without."""
    import imageio.v3 as iio

    h, w = masks[0].shape
    px = opts.mask_dilate_px if opts.mask_dilate_px is not None else max(2, int(round(0.01 * max(h, w))))
    attempts = []
    if opts.mask_features and any(m.any() for m in masks):
        mask_dir = work / "feature_masks"
        mask_dir.mkdir(parents=True, exist_ok=True)
        for nm, m in zip(names, masks):
            iio.imwrite(mask_dir / f"{nm}.png", np.where(dilate(m, px), 0, 255).astype(np.uint8))
        attempts.append(mask_dir)
    attempts.append(None)
    err = None
    for k, mask_dir in enumerate(attempts):
        try:
            res = _run(image_dir, names, work / f"pass{k}", mask_dir, opts, source)
            return res, mask_dir is not None
        except SfMError as exc:
            err = exc
            if mask_dir is not None:
                log.warning("SfM with motion-masked features failed (%s); retrying without masks", exc.problem)
    raise err


def _run(image_dir, names, work, mask_dir, opts: PreprocessOptions, source):
    return run_sfm(image_dir, names, work, mask_dir=mask_dir, camera_model=opts.camera_model, matcher=opts.matcher,
                   num_threads=opts.num_threads, max_features=opts.max_features, seed=opts.seed,
                   verbose=opts.verbose, source=source, focal=opts.focal)
