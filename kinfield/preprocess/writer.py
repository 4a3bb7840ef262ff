"""Writers of the "NSFF layout" shared by ``tools/preprocess.py`` and the synthetic generator.

Layout of ``OUT_DIR`` (frame ``i`` has time ``i / (N - 1)``)::

    images/000.png ...              RGB uint8, all the same size, in time order
    poses_bounds.npy                float64 [N, 17]: per frame the LLFF 3x5 [R | t | hwf] flattened row-major
                                    (camera-to-world, rotation columns (down, right, backwards) = LLFF's
                                    [-y, x, z] of OpenGL; hwf = height, width, focal in pixels), then near, far
    sparse/points3D.npy             float32 [M, 3] world points (sparse/0/: the COLMAP model, preprocess only, not
                                    written when the frames were undistorted)
    sparse_depth/000.npz ...        uv float32 [K, 2] (x right, y down, pixel centres at +0.5), depth float32 [K]
                                    (along the viewing axis), weight float32 [K]
    flow_i1/000_fwd.npz, 001_bwd.npz  flow float32 [H, W, 2] (pixels, x y) i -> i+1 (fwd) / i -> i-1 (bwd),
                                    mask float32 [H, W] in {0, 1}: forward-backward consistency
    motion_masks/000.png ...        uint8, 255 where the content moves
    preprocess.json                 metadata

OpenGL camera-to-world columns ``(r, u, b)`` (right, up, backwards) become LLFF columns ``(-u, r, b)``.
"""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from .frames import natural_key

#: what the writers below create in OUT_DIR (removed by :func:`prepare_out_dir` with ``overwrite``)
OUTPUT_NAMES = ("images", "poses_bounds.npy", "sparse", "sparse_depth", "flow_i1", "motion_masks",
                "preprocess.json", "motion_gt.npz", "mv_images", "mv_masks", "rig_poses.npy", "scene_meta.json",
                "sfm_work")


# ------------------------------------------------------------------------------------ conventions
def opengl_to_llff(c2w: np.ndarray, hwf: Sequence[float]) -> np.ndarray:
    """OpenGL camera-to-world ``[N, 3|4, 4]`` -> LLFF ``[N, 3, 5]`` (columns ``-u, r, b, t, hwf``)."""
    c2w = np.asarray(c2w, dtype=np.float64)[:, :3, :4]
    n = len(c2w)
    rot = np.stack([-c2w[:, :, 1], c2w[:, :, 0], c2w[:, :, 2]], axis=-1)
    hwf_col = np.broadcast_to(np.asarray(hwf, dtype=np.float64).reshape(1, 3, 1), (n, 3, 1))
    return np.concatenate([rot, c2w[:, :, 3:4], hwf_col], axis=-1)


def llff_to_opengl(poses: np.ndarray) -> np.ndarray:
    """LLFF ``[N, 3, 5]`` (or poses_bounds ``[N, 17]``) -> OpenGL camera-to-world ``[N, 4, 4]``."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim == 2:
        poses = poses[:, :15].reshape(-1, 3, 5)
    out = np.tile(np.eye(4), (len(poses), 1, 1))
    out[:, :3, 0] = poses[:, :, 1]
    out[:, :3, 1] = -poses[:, :, 0]
    out[:, :3, 2] = poses[:, :, 2]
    out[:, :3, 3] = poses[:, :, 3]
    return out


def opencv_w2c_to_opengl_c2w(w2c: np.ndarray) -> np.ndarray:
    """COLMAP / OpenCV world-to-camera ``[N, 3|4, 4]`` (x right, y down, z forward) -> OpenGL c2w ``[N, 4, 4]``."""
    w2c = np.asarray(w2c, dtype=np.float64)
    n = len(w2c)
    m = np.tile(np.eye(4), (n, 1, 1))
    m[:, :3, :4] = w2c[:, :3, :4]
    c2w = np.linalg.inv(m)
    c2w[:, :3, 1:3] *= -1.0  # (x, y, z)_cv -> (r, u, b) = (x, -y, -z)
    return c2w


def depth_bounds(depths: np.ndarray, lo: float = 1.0, hi: float = 99.0, near_scale: float = 0.9,
                 far_scale: float = 1.1) -> Tuple[float, float]:
    """``(near, far)`` = ``(percentile(lo) * near_scale, percentile(hi) * far_scale)`` of positive finite depths."""
    d = np.asarray(depths, dtype=np.float64).reshape(-1)
    d = d[np.isfinite(d) & (d > 0)]
    if d.size == 0:
        raise ValueError("no positive finite depths to take bounds from")
    return float(np.percentile(d, lo) * near_scale), float(np.percentile(d, hi) * far_scale)


def make_poses_bounds(c2w_gl: np.ndarray, hwf: Sequence[float], bounds: np.ndarray) -> np.ndarray:
    """``[N, 17]`` float64 from OpenGL c2w ``[N, 4, 4]``, ``hwf`` and ``bounds [N, 2]`` (near, far)."""
    llff = opengl_to_llff(c2w_gl, hwf)
    bounds = np.asarray(bounds, dtype=np.float64).reshape(len(llff), 2)
    return np.concatenate([llff.reshape(len(llff), 15), bounds], axis=1)


# ------------------------------------------------------------------------------------------ files
def prepare_out_dir(out_dir: Union[str, Path], overwrite: bool = False) -> Path:
    """Create ``out_dir``; if it is non-empty raise ``FileExistsError`` unless ``overwrite``, in which
    case the layout's own files (:data:`OUTPUT_NAMES`) are removed and other files are kept."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite (overwrite=True in Python) to replace its outputs")
        for name in OUTPUT_NAMES:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_npz(path: Union[str, Path], arrays: Dict[str, np.ndarray], compress: bool = False) -> None:
    """Like ``np.savez`` / ``np.savez_compressed`` (readable by ``np.load``) with fixed zip timestamps,
    so equal arrays give byte-identical files."""
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=mode) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = mode
            zf.writestr(info, buf.getvalue())


def frame_name(i: int) -> str:
    return f"{i:03d}"


def write_images(folder: Union[str, Path], images: Iterable[np.ndarray]) -> int:
    """RGB uint8 PNGs ``folder/000.png ...``; returns the count."""
    import imageio.v3 as iio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"image {i}: expected uint8 [H, W, 3], got {img.dtype} {img.shape}")
        iio.imwrite(folder / f"{frame_name(i)}.png", img)
        n += 1
    return n


def write_masks(folder: Union[str, Path], masks: Iterable[np.ndarray]) -> int:
    """uint8 PNGs (255 where ``mask`` is true) ``folder/000.png ...``; returns the count."""
    import imageio.v3 as iio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, m in enumerate(masks):
        iio.imwrite(folder / f"{frame_name(i)}.png", np.where(np.asarray(m) > 0, 255, 0).astype(np.uint8))
        n += 1
    return n


def write_flows(folder: Union[str, Path], flows: Sequence[dict]) -> int:
    """``flow_i1/{i}_fwd.npz`` (i -> i+1) and ``{i+1}_bwd.npz`` (i+1 -> i) for every neighbour pair
    dict of :func:`kinfield.preprocess.flow.neighbour_flows`; returns the number of files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, fl in enumerate(flows):
        save_npz(folder / f"{frame_name(i)}_fwd.npz",
                 {"flow": fl["fwd"].astype(np.float32), "mask": fl["fwd_mask"].astype(np.float32)}, compress=True)
        save_npz(folder / f"{frame_name(i + 1)}_bwd.npz",
                 {"flow": fl["bwd"].astype(np.float32), "mask": fl["bwd_mask"].astype(np.float32)}, compress=True)
    return 2 * len(flows)


def write_sparse_depth(folder: Union[str, Path], per_frame: Sequence[dict]) -> int:
    """``sparse_depth/000.npz ...`` with ``uv [K, 2]``, ``depth [K]``, ``weight [K]`` (float32)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, d in enumerate(per_frame):
        uv = np.asarray(d["uv"], dtype=np.float32).reshape(-1, 2)
        depth = np.asarray(d["depth"], dtype=np.float32).reshape(-1)
        weight = np.asarray(d.get("weight", np.ones_like(depth)), dtype=np.float32).reshape(-1)
        if not len(uv) == len(depth) == len(weight):
            raise ValueError(f"sparse depth of frame {i}: uv, depth, weight lengths differ")
        save_npz(folder / f"{frame_name(i)}.npz", {"uv": uv, "depth": depth, "weight": weight})
    return len(per_frame)


def write_poses_bounds(path: Union[str, Path], poses_bounds: np.ndarray) -> None:
    pb = np.asarray(poses_bounds, dtype=np.float64)
    if pb.ndim != 2 or pb.shape[1] != 17 or not np.all(np.isfinite(pb)):
        raise ValueError(f"poses_bounds must be finite [N, 17], got {pb.shape}")
    if np.any(pb[:, 15] <= 0) or np.any(pb[:, 16] <= pb[:, 15]):
        raise ValueError("poses_bounds: need 0 < near < far for every frame")
    np.save(path, pb)


def write_json(path: Union[str, Path], doc: dict) -> None:
    Path(path).write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def project(points: np.ndarray, c2w_gl: np.ndarray, focal: float, width: int, height: int,
            cx: Optional[float] = None, cy: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Pinhole projection of world ``points [M, 3]`` into an OpenGL camera: ``(uv [M, 2], depth [M])``
    with pixel centres at +0.5 (principal point default ``(W/2, H/2)``) and depth along the viewing axis."""
    c2w = np.asarray(c2w_gl, dtype=np.float64)
    pc = (np.asarray(points, dtype=np.float64) - c2w[:3, 3]) @ c2w[:3, :3]
    depth = -pc[:, 2]
    cx = 0.5 * width if cx is None else cx
    cy = 0.5 * height if cy is None else cy
    with np.errstate(divide="ignore", invalid="ignore"):
        u = cx + focal * pc[:, 0] / depth
        v = cy - focal * pc[:, 1] / depth
    return np.stack([u, v], axis=-1), depth


def check_layout(root: Union[str, Path], require_sfm: bool = False) -> dict:
    """Check that ``root`` follows the NSFF layout; returns ``{"n_frames", "height", "width", "focal"}``.

    Checks file presence and naming, image sizes and dtypes, ``poses_bounds`` shape / dtype / hwf /
    bounds and rotation orthonormality, ``sparse_depth`` arrays, flow files (``fwd`` for frames
    ``0..N-2``, ``bwd`` for ``1..N-1``, none else), masks in {0, 255} / {0, 1}. ``require_sfm``: also
    ``sparse/0/`` (the COLMAP model; not written for undistorted frames) and ``sparse_depth/``. Raises
    ``ValueError`` listing every problem.
    """
    import imageio.v3 as iio

    root = Path(root)
    problems = []
    imgs = sorted((root / "images").glob("*.png"), key=lambda p: natural_key(p.name))  # (1000.png after 999.png)
    n = len(imgs)
    if n < 2:
        raise ValueError(f"{root}: images/ holds {n} PNGs, expected at least 2")
    if [p.name for p in imgs] != [f"{frame_name(i)}.png" for i in range(n)]:
        problems.append("images/ are not named 000.png, 001.png, ... without gaps")
    shapes = set()
    for p in imgs:
        im = iio.imread(p)
        shapes.add(im.shape)
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[-1] != 3:
            problems.append(f"{p.name}: expected RGB uint8, got {im.dtype} {im.shape}")
    if len(shapes) != 1:
        problems.append(f"images have different sizes: {sorted(shapes)}")
    h, w = next(iter(shapes))[:2]
    pb = np.load(root / "poses_bounds.npy")
    if pb.dtype != np.float64 or pb.shape != (n, 17):
        problems.append(f"poses_bounds.npy: expected float64 ({n}, 17), got {pb.dtype} {pb.shape}")
        raise ValueError(f"{root}: " + "; ".join(problems))
    poses = pb[:, :15].reshape(n, 3, 5)
    hwf = poses[:, :, 4]
    if not (np.allclose(hwf[:, 0], h) and np.allclose(hwf[:, 1], w) and np.all(hwf[:, 2] > 0)):
        problems.append(f"poses_bounds hwf {hwf[0].tolist()} does not match the images ({h}, {w}, focal > 0)")
    rot = poses[:, :, :3]
    if not np.allclose(np.einsum("nij,nik->njk", rot, rot), np.eye(3), atol=1e-5):
        problems.append("poses_bounds rotations are not orthonormal")
    if not np.allclose(np.linalg.det(rot), 1.0, atol=1e-5):
        problems.append("poses_bounds rotations are not right-handed (det != 1)")
    if not (np.all(pb[:, 15] > 0) and np.all(pb[:, 16] > pb[:, 15])):
        problems.append("poses_bounds: need 0 < near < far")
    pts_path = root / "sparse" / "points3D.npy"
    if not pts_path.is_file():
        problems.append("sparse/points3D.npy is missing")
    else:
        pts = np.load(pts_path)
        if pts.dtype != np.float32 or pts.ndim != 2 or pts.shape[1] != 3:
            problems.append(f"sparse/points3D.npy: expected float32 [M, 3], got {pts.dtype} {pts.shape}")
    doc = root / "preprocess.json"
    undistorted = doc.is_file() and bool(json.loads(doc.read_text()).get("undistorted"))
    if require_sfm and not undistorted and not (root / "sparse" / "0").is_dir():  # (undistorted: none is written)
        problems.append("sparse/0/ (the COLMAP model) is missing")
    sd = root / "sparse_depth"
    if sd.is_dir() or require_sfm:
        for i in range(n):
            f = sd / f"{frame_name(i)}.npz"
            if not f.is_file():
                problems.append(f"sparse_depth/{f.name} is missing")
                continue
            with np.load(f) as z:
                uv, depth, weight = z["uv"], z["depth"], z["weight"]
            if uv.dtype != np.float32 or depth.dtype != np.float32 or weight.dtype != np.float32:
                problems.append(f"sparse_depth/{f.name}: arrays must be float32")
            if uv.ndim != 2 or uv.shape[1:] != (2,) or depth.shape != (len(uv),) or weight.shape != (len(uv),):
                problems.append(f"sparse_depth/{f.name}: shapes uv {uv.shape}, depth {depth.shape}, weight {weight.shape}")
            elif len(uv) and (np.any(depth <= 0) or np.any(uv < 0) or np.any(uv[:, 0] > w) or np.any(uv[:, 1] > h)):
                problems.append(f"sparse_depth/{f.name}: depth <= 0 or uv outside the image")
    fl = root / "flow_i1"
    if fl.is_dir():
        expected = {f"{frame_name(i)}_fwd.npz" for i in range(n - 1)} | {f"{frame_name(i)}_bwd.npz" for i in range(1, n)}
        have = {p.name for p in fl.glob("*.npz")}
        if have != expected:
            problems.append(f"flow_i1/: missing {sorted(expected - have)[:4]}, unexpected {sorted(have - expected)[:4]}")
        for name in sorted(have & expected):
            with np.load(fl / name) as z:
                flow, mask = z["flow"], z["mask"]
            if flow.dtype != np.float32 or flow.shape != (h, w, 2) or mask.dtype != np.float32 or mask.shape != (h, w):
                problems.append(f"flow_i1/{name}: flow {flow.dtype} {flow.shape}, mask {mask.dtype} {mask.shape}")
            elif not np.all(np.isin(mask, (0.0, 1.0))) or not np.all(np.isfinite(flow)):
                problems.append(f"flow_i1/{name}: mask not in {{0, 1}} or non-finite flow")
    mm = sorted((root / "motion_masks").glob("*.png"), key=lambda p: natural_key(p.name))
    if len(mm) != n:
        problems.append(f"motion_masks/ holds {len(mm)} PNGs, expected {n}")
    for p in mm:
        m = iio.imread(p)
        if m.dtype != np.uint8 or m.shape != (h, w) or not np.all(np.isin(m, (0, 255))):
            problems.append(f"motion_masks/{p.name}: expected uint8 ({h}, {w}) in {{0, 255}}, got {m.dtype} {m.shape}")
    if not (root / "preprocess.json").is_file():
        problems.append("preprocess.json is missing")
    if problems:
        raise ValueError(f"{root}: " + "; ".join(problems))
    return {"n_frames": n, "height": int(h), "width": int(w), "focal": float(hwf[0, 2])}
