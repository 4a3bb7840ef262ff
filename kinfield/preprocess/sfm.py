"""Structure from motion with pycolmap: SIFT features (optionally masked), exhaustive or sequential
matching, incremental mapping with one shared camera (SIMPLE_PINHOLE or SIMPLE_RADIAL), and the
conversion of the model to OpenGL poses, sparse points and per-frame sparse depth.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from .errors import SfMError, require_pycolmap
from .writer import opencv_w2c_to_opengl_c2w, project

log = logging.getLogger("kinfield")

CAMERA_MODELS = ("SIMPLE_PINHOLE", "SIMPLE_RADIAL")
MATCHERS = ("auto", "exhaustive", "sequential")


@dataclass
class SfMResult:
    """A registered SfM model in frame order.

    Attributes:
        c2w: OpenGL camera-to-world ``[N, 4, 4]`` float64 (frame order).
        focal, cx, cy: pinhole intrinsics in pixels (COLMAP convention: pixel centres at +0.5).
        k1: radial distortion (SIMPLE_RADIAL; 0 for SIMPLE_PINHOLE).
        points: ``[M, 3]`` world points; ``point_errors [M]`` (mean reprojection error, pixels) and
            ``track_lengths [M]``.
        observations: per frame the indices into ``points`` it observes.
        stats: registered frames, mean reprojection error, number of points / observations, timings.
        reconstruction: the pycolmap model (for writing ``sparse/0``).
    """

    c2w: np.ndarray
    focal: float
    cx: float
    cy: float
    k1: float
    camera_model: str
    width: int
    height: int
    points: np.ndarray
    point_errors: np.ndarray
    track_lengths: np.ndarray
    observations: List[np.ndarray]
    stats: dict = field(default_factory=dict)
    reconstruction: object = None

    def sparse_depth(self, c2w: Optional[np.ndarray] = None, err_sigma: float = 1.0) -> List[dict]:
        """Per frame ``uv [K, 2]``, ``depth [K]``, ``weight [K]`` of the points it observes, projected
        with the pinhole intrinsics (undistorted coordinates). ``weight = min(1, (track - 1) / 4) *
        exp(-0.5 (err / err_sigma)^2)``: long, precise tracks count fully; two-view points 1/4."""
        c2w = self.c2w if c2w is None else c2w
        out = []
        for i, idx in enumerate(self.observations):
            uv, depth = project(self.points[idx], c2w[i], self.focal, self.width, self.height, self.cx, self.cy)
            ok = (np.isfinite(depth) & (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= self.width)
                  & (uv[:, 1] >= 0) & (uv[:, 1] <= self.height))
            w = (np.minimum(1.0, (self.track_lengths[idx] - 1) / 4.0)
                 * np.exp(-0.5 * (self.point_errors[idx] / err_sigma) ** 2))
            out.append({"uv": uv[ok].astype(np.float32), "depth": depth[ok].astype(np.float32),
                        "weight": w[ok].astype(np.float32), "point_index": idx[ok]})
        return out


def _set_colmap_logging(verbose: bool) -> None:
    """COLMAP's own log: everything with ``verbose``, else errors only (its warnings, such as SIFT's RAM-per-thread
    notice and 'Discarding reconstruction due to insufficient size', are routine; a failed SfM is reported by
    :class:`SfMError` with the fix)."""
    pycolmap = require_pycolmap()
    try:
        pycolmap.logging.minloglevel = int(pycolmap.logging.INFO if verbose else pycolmap.logging.ERROR)
        pycolmap.logging.stderrthreshold = int(pycolmap.logging.INFO if verbose else pycolmap.logging.ERROR)
    except Exception:  # noqa: BLE001 - logging knobs differ across pycolmap versions
        pass


def run_sfm(image_dir: Union[str, Path], image_names: Sequence[str], work_dir: Union[str, Path],
            mask_dir: Optional[Union[str, Path]] = None, camera_model: str = "SIMPLE_RADIAL",
            matcher: str = "auto", num_threads: int = -1, max_features: int = 4096, seed: int = 0,
            verbose: bool = False, source: Optional[str] = None, focal: Optional[float] = None) -> SfMResult:
    """Run pycolmap on ``image_dir/<image_names>`` (time order) and return the model in frame order.

    ``mask_dir`` holds COLMAP feature masks ``<image name>.png`` (0 = extract no features there).
    ``matcher="auto"``: exhaustive up to 60 frames, sequential (overlap 10, quadratic) above.
    ``focal`` (pixels), when given, initialises the shared camera and is kept fixed.

    Raises:
        SfMError: no model, or the largest model does not register every frame.
    """
    pycolmap = require_pycolmap()
    if camera_model not in CAMERA_MODELS:
        raise ValueError(f"camera_model must be one of {CAMERA_MODELS}, got {camera_model!r}")
    if matcher not in MATCHERS:
        raise ValueError(f"matcher must be one of {MATCHERS}, got {matcher!r}")
    _set_colmap_logging(verbose)
    image_dir, work_dir = Path(image_dir), Path(work_dir)
    where = source or str(image_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    db = work_dir / "database.db"
    if db.exists():
        db.unlink()
    names = list(image_names)
    n = len(names)
    timings = {}
    try:
        pycolmap.set_random_seed(int(seed))
    except Exception:  # noqa: BLE001
        pass

    t0 = time.perf_counter()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    if mask_dir is not None:
        reader.mask_path = str(mask_dir)
    if focal is not None:
        if names:
            import imageio.v3 as iio

            hh, ww = iio.imread(image_dir / names[0]).shape[:2]
            extra = ", 0" if camera_model == "SIMPLE_RADIAL" else ""
            reader.camera_params = f"{float(focal)}, {ww / 2.0}, {hh / 2.0}{extra}"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = int(num_threads)
    extraction.sift.max_num_features = int(max_features)
    pycolmap.extract_features(db, image_dir, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)
    timings["extract_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = int(num_threads)
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = int(seed)
    used = "exhaustive" if matcher == "exhaustive" or (matcher == "auto" and n <= 60) else "sequential"
    if used == "exhaustive":
        pycolmap.match_exhaustive(db, matching_options=matching, verification_options=verification,
                                  device=pycolmap.Device.cpu)
    else:
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = 10
        pairing.quadratic_overlap = True
        pairing.num_threads = int(num_threads)
        pycolmap.match_sequential(db, matching_options=matching, pairing_options=pairing,
                                  verification_options=verification, device=pycolmap.Device.cpu)
    timings["match_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = int(num_threads)
    opts.random_seed = int(seed)
    opts.min_model_size = int(min(10, max(3, n // 2)))
    opts.extract_colors = False
    if focal is not None:
        opts.ba_refine_focal_length = False
        opts.mapper.abs_pose_refine_focal_length = False
    opts.mapper.random_seed = int(seed)
    opts.triangulation.random_seed = int(seed)
    out_models = work_dir / "models"
    out_models.mkdir(exist_ok=True)
    try:
        recs = pycolmap.incremental_mapping(db, image_dir, out_models, options=opts)
    except Exception as exc:  # noqa: BLE001 - COLMAP raises RuntimeError / ValueError on degenerate input
        raise SfMError(where, f"structure from motion crashed ({type(exc).__name__}: {exc})", total=n) from None
    timings["map_s"] = time.perf_counter() - t0
    if not recs:
        raise SfMError(where, f"structure from motion found no initial image pair / built no model from {n} frames "
                              "(too little texture, parallax or overlap)", registered=0, total=n)
    rec = max(recs.values(), key=lambda r: r.num_reg_images())
    reg_names = {img.name for img in rec.images.values() if img.has_pose}
    missing = [nm for nm in names if nm not in reg_names]
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise SfMError(where, f"structure from motion registered only {n - len(missing)} of {n} frames in one model "
                              f"({len(recs)} model(s); not registered: {shown})",
                       registered=n - len(missing), total=n)
    return _to_result(rec, names, camera_model, timings, used)


def _to_result(rec, names: List[str], camera_model: str, timings: dict, matcher: str) -> SfMResult:
    if rec.num_cameras() != 1:
        raise SfMError("<sfm>", f"expected one shared camera, got {rec.num_cameras()}")
    cam = next(iter(rec.cameras.values()))
    params = np.asarray(cam.params, dtype=np.float64)
    focal, cx, cy = float(params[0]), float(params[1]), float(params[2])
    k1 = float(params[3]) if cam.model_name == "SIMPLE_RADIAL" else 0.0
    by_name = {img.name: img for img in rec.images.values()}
    point_ids = sorted(rec.points3D.keys())
    pid_to_idx = {pid: k for k, pid in enumerate(point_ids)}
    points = np.array([rec.points3D[p].xyz for p in point_ids], dtype=np.float64).reshape(-1, 3)
    errors = np.array([rec.points3D[p].error for p in point_ids], dtype=np.float64)
    tracks = np.array([rec.points3D[p].track.length() for p in point_ids], dtype=np.float64)
    w2c, obs = [], []
    for nm in names:
        img = by_name[nm]
        w2c.append(np.asarray(img.cam_from_world().matrix(), dtype=np.float64))
        ids = [pid_to_idx[p.point3D_id] for p in img.points2D if p.has_point3D() and p.point3D_id in pid_to_idx]
        obs.append(np.unique(np.asarray(ids, dtype=np.int64)))
    c2w = opencv_w2c_to_opengl_c2w(np.stack(w2c))
    stats = {
        "registered_frames": len(names), "total_frames": len(names),
        "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
        "num_points3D": int(len(points)), "num_observations": int(rec.compute_num_observations()),
        "mean_track_length": float(rec.compute_mean_track_length()) if len(points) else 0.0,
        "camera_model": cam.model_name, "camera_params": params.tolist(), "matcher": matcher,
        **{k: round(v, 3) for k, v in timings.items()},
    }
    return SfMResult(c2w=c2w, focal=focal, cx=cx, cy=cy, k1=k1, camera_model=cam.model_name, width=int(cam.width),
                     height=int(cam.height), points=points, point_errors=errors, track_lengths=tracks,
                     observations=obs, stats=stats, reconstruction=rec)


def undistort_maps(result: SfMResult):
    """``(map_x, map_y)`` for ``cv2.remap`` that remove SIMPLE_RADIAL distortion, keeping the same
    focal, principal point and size; ``None`` when the distortion moves no pixel by more than 0.25 px."""
    if result.k1 == 0.0:
        return None
    w, h = result.width, result.height
    r_max = np.hypot(max(result.cx, w - result.cx), max(result.cy, h - result.cy)) / result.focal
    if abs(result.k1) * r_max**3 * result.focal < 0.25:
        return None
    xx, yy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x = (xx - result.cx) / result.focal
    y = (yy - result.cy) / result.focal
    s = 1.0 + result.k1 * (x * x + y * y)
    # sample the distorted source image at the distorted position of every undistorted pixel centre
    map_x = (result.cx + result.focal * x * s - 0.5).astype(np.float32)
    map_y = (result.cy + result.focal * y * s - 0.5).astype(np.float32)
    return map_x, map_y


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True):
    """Similarity ``(s, R, t)`` minimising ``sum |dst - (s R src + t)|^2`` (Umeyama 1991) for
    ``src, dst [M, 3]``, ``M >= 3``."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sgn = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sgn[2, 2] = -1.0
    rot = u @ sgn @ vt
    var = (xs**2).sum() / len(src)
    scale = float(np.trace(np.diag(d) @ sgn) / var) if with_scale else 1.0
    return scale, rot, mu_d - scale * rot @ mu_s
