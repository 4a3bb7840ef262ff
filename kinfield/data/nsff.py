"""Forward-facing captures in the NSFF / DynamicNeRF layout (METHOD 1.5 and 5).

Layout (what ``tools/preprocess.py`` and the synthetic generator write; NVIDIA Balloon1 is a real example)::

    images/000.png ...            RGB frames in time order (or the first images_* folder)
    poses_bounds.npy              (N, 17): LLFF [R | t | (h, w, f)] per frame (columns down, right,
                                  back) + near/far depth bounds
    disp/*.npy | disp_png/*.png   optional inverse-depth prior per frame (larger = nearer)
    flow_i1/NNN_fwd.npz, _bwd.npz optional flow to the next / previous frame: ``flow`` (H, W, 2) px, ``mask``
    motion_masks/NNN.png          optional, 255 where content moves
    sparse_depth/NNN.npz          optional SfM depths: ``uv`` (K, 2) px, ``depth`` (K,), ``weight`` (K,)
    mv_images/IIIII/camCC.png     optional held-out views (every rig camera at every frame time)
    mv_masks/IIIII/camCC.png      optional dynamic-region masks of the held-out views
    rig_poses.npy                 optional (C, 3, 5) LLFF poses of the rig cameras (else frames 0..C-1)

Frame ``i`` of ``N`` has time ``i / (N - 1)``. Poses are rescaled so the nearest bound sits at
``1 / 0.75`` (LLFF's ``bd_factor``), recentred on their mean pose, and rays are rendered in NDC with
``near = 1`` (scene box ``[-1.5, 1.5]^2 x [-1, 1]`` in NDC, so warped points may leave the frustum).
Per-pixel priors are returned as ``SceneSplit.extras`` (resampled with the images).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..preprocess.frames import natural_key  # same frame order as tools/preprocess.py
from ..preprocess.writer import llff_to_opengl  # the writer's inverse lives beside it
from .dnerf import area_downscale, check_downscale, downscaled_size, is_rotation, read_image
from .errors import DatasetError, as_dataset_error
from .scene import Scene, SceneSplit

log = logging.getLogger("kinfield")

NDC_AABB = (-1.5, -1.5, -1.0, 1.5, 1.5, 1.0)
BD_FACTOR = 0.75
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
_ASPECT_TOL = 0.02


def is_nsff_scene(path: Union[str, Path]) -> bool:
    return (Path(path) / "poses_bounds.npy").is_file()


# ---------------------------------------------------------------------------------------- poses
def mean_pose(c2w: np.ndarray) -> np.ndarray:
    """The average camera ``[4, 4]``: mean centre, mean viewing axis, mean up (LLFF's ``poses_avg``)."""
    center = c2w[:, :3, 3].mean(0)
    z = c2w[:, :3, 2].sum(0)
    z /= np.linalg.norm(z)
    up = c2w[:, :3, 1].sum(0)
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    out = np.eye(4)
    out[:3, :3] = np.stack([x, y, z], axis=1)
    out[:3, 3] = center
    return out


def normalize_poses(c2w: np.ndarray, bounds: np.ndarray) -> Tuple[np.ndarray, float, np.ndarray]:
    """Rescale so the nearest bound is ``1 / BD_FACTOR`` and recentre on the mean pose.

    Returns:
        ``(c2w [N, 4, 4], scale, world_from_llff [4, 4])``; apply the same ``scale`` then
        ``world_from_llff`` to any other pose or point of the capture.
    """
    scale = 1.0 / (float(bounds.min()) * BD_FACTOR)
    scaled = c2w.copy()
    scaled[:, :3, 3] *= scale
    world_from_llff = np.linalg.inv(mean_pose(scaled))
    return world_from_llff[None] @ scaled, scale, world_from_llff


def world_transform(root: Union[str, Path]) -> Tuple[float, np.ndarray]:
    """``(scale, world_from_llff [4, 4])`` that :func:`load_nsff` applies to the capture at ``root``:
    a point ``p`` of the capture's own frame is ``world_from_llff @ (scale * p)`` in the training world."""
    pb = _read_poses_bounds(Path(root))
    poses = pb[:, :15].reshape(-1, 3, 5)
    _, scale, world_from_llff = normalize_poses(llff_to_opengl(poses), pb[:, 15:])
    return scale, world_from_llff


# ---------------------------------------------------------------------------------------- files
def _natural_sorted(paths) -> List[Path]:
    """``paths`` in natural name order (``2.png`` before ``10.png``): the time order of the frames."""
    return sorted(paths, key=lambda p: natural_key(p.name))


def _frame_files(folder: Path) -> List[Path]:
    return _natural_sorted(p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES and not p.name.startswith("."))


def _load(path: Path, problem: str, fix: str, *keys: str) -> Union[np.ndarray, Dict[str, np.ndarray]]:
    """``path`` as a float64 array (.npy), or with ``keys`` an .npz as a dict of float64 arrays that must
    hold ``keys``; any failure (corrupt or truncated file, missing key) raises :class:`DatasetError`."""
    with as_dataset_error(path, problem, fix):
        z = np.load(path, allow_pickle=False)
        if not keys:
            return np.asarray(z, dtype=np.float64)
        with z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise KeyError(f"no array {', '.join(map(repr, missing))} (has {sorted(z.files)})")
            return {k: z[k].astype(np.float64) for k in z.files}


def _check_array(a: np.ndarray, shape: Tuple[Optional[int], ...], path: Path, name: str, fix: str,
                 finite: bool = True) -> np.ndarray:
    """Raise unless ``a`` has ``shape`` (``None`` matches any length) and, with ``finite``, no NaN / inf."""
    if a.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
        want = ", ".join("*" if s is None else str(s) for s in shape)
        raise DatasetError(path, f"{name} has shape {a.shape}, expected ({want})", fix)
    if finite and not np.isfinite(a).all():
        raise DatasetError(path, f"{name} has NaN or infinite values", fix)
    return a


def _aspect_differs(hw, other_hw) -> bool:
    return abs(hw[0] * other_hw[1] / (hw[1] * other_hw[0]) - 1.0) > _ASPECT_TOL


def _read_poses_bounds(root: Path) -> np.ndarray:
    """The validated ``[N, 17]`` float64 rows of ``root / poses_bounds.npy``."""
    path = root / "poses_bounds.npy"
    fix = "regenerate it with tools/preprocess.py (LLFF rows: 15 pose values, 3x5 [R|t|hwf], then near and far)"
    if not path.is_file():
        raise DatasetError(path, "file not found", "run tools/preprocess.py on the video, or add LLFF poses_bounds.npy")
    pb = _load(path, "cannot read", fix)
    if pb.ndim != 2 or pb.shape[1] != 17 or pb.shape[0] < 2:
        raise DatasetError(path, f"shape {pb.shape}, expected (N >= 2, 17)",
                           "write one row per frame: 15 pose values (3x5 [R|t|hwf]) then near and far")
    if not np.isfinite(pb).all():
        raise DatasetError(path, "non-finite values in the poses or bounds", "re-run SfM (tools/preprocess.py)")
    hwf, bounds = pb[:, 4:15:5], pb[:, 15:]
    not_rotation = [i for i, row in enumerate(pb[:, :15].reshape(-1, 3, 5)) if not is_rotation(row[:, :3])]
    if not_rotation:
        i = not_rotation[0]
        raise DatasetError(path, f"row {i}: its 3x3 block {np.round(pb[i, :15].reshape(3, 5)[:, :3], 4).tolist()} is "
                                 f"not a rotation ({len(not_rotation)} such rows)", fix)
    bad = np.flatnonzero((hwf <= 0).any(1) | (bounds[:, 0] <= 0) | (bounds[:, 0] >= bounds[:, 1]))
    if bad.size:
        i = int(bad[0])
        raise DatasetError(path, f"row {i} has (h, w, f) = {tuple(hwf[i].tolist())}, (near, far) = "
                                 f"{tuple(bounds[i].tolist())}; need h, w, f > 0 and 0 < near < far", fix)
    return pb


def _image_dir(root: Path) -> Path:
    if (root / "images").is_dir():
        return root / "images"
    cands = _natural_sorted(p for p in root.glob("images_*") if p.is_dir() and p.name != "images_colmap")
    if cands:
        return cands[0]
    raise DatasetError(root / "images", "no images/ folder (nor images_*/)",
                       "put the frames, in time order, into images/ (tools/preprocess.py writes this layout)")


def _load_rgb(path: Path, factor) -> np.ndarray:
    img = read_image(path)
    if img.shape[-1] == 4:
        img = img[..., :3] * img[..., 3:]  # opaque captures: alpha, if any, composited on black
    return area_downscale(np.ascontiguousarray(img, dtype=np.float32), factor)


def _resize(x: np.ndarray, size: Tuple[int, int], mode: str) -> np.ndarray:
    """``[H, W, C]`` float32 to ``size`` (area for values, nearest for masks/sparse maps)."""
    if x.shape[:2] == tuple(size):
        return x
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(2, 0, 1)[None]
    t = torch.nn.functional.interpolate(t, size=size, mode=mode)
    return t[0].permute(1, 2, 0).contiguous().numpy()


def _read_priors(root: Path, n: int, size: Tuple[int, int], orig_size: Tuple[int, int]) -> Dict[str, torch.Tensor]:
    """Optional per-pixel priors ``[N, H, W(, C)]`` resampled to the training size."""
    h, w = size
    extras: Dict[str, torch.Tensor] = {}
    disp_files = _natural_sorted((root / "disp").glob("*.npy")) if (root / "disp").is_dir() else []
    if not disp_files and (root / "disp_png").is_dir():
        disp_files = _frame_files(root / "disp_png")
    if disp_files:
        if len(disp_files) != n:
            raise DatasetError(disp_files[0].parent, f"{len(disp_files)} disparity maps for {n} frames",
                               "provide one disparity map per frame (or remove the folder)")
        maps = []
        fix = "store one finite (H, W) inverse-depth map per frame, at the images' aspect ratio (or remove it)"
        for p in disp_files:
            d = _load(p, "cannot read disparity map", fix) if p.suffix == ".npy" else read_image(p)[..., 0]
            d = d[..., 0] if d.ndim == 3 and d.shape[-1] == 1 else d  # (H, W, 1) is fine too
            _check_array(d, (None, None), p, "disparity map", fix)
            if _aspect_differs(d.shape, orig_size):
                raise DatasetError(p, f"disparity map is {d.shape[1]}x{d.shape[0]}, the images are "
                                      f"{orig_size[1]}x{orig_size[0]}", fix)
            maps.append(_resize(d[..., None].astype(np.float32), size, "area")[..., 0])
        extras["disp"] = torch.from_numpy(np.stack(maps))
    if (root / "motion_masks").is_dir():
        files = _frame_files(root / "motion_masks")
        if len(files) != n:
            raise DatasetError(root / "motion_masks", f"{len(files)} motion masks for {n} frames",
                               "provide one mask per frame (or remove the folder)")
        # a pixel with any motion in it after downscaling is dynamic (METHOD 5: > 1e-3), so that the static terms
        # (pre-training, the static masked loss) never see a partly moving pixel
        masks = []
        for p in files:
            m = read_image(p)[..., :1]
            if _aspect_differs(m.shape, orig_size):
                raise DatasetError(p, f"motion mask is {m.shape[1]}x{m.shape[0]}, the images are "
                                      f"{orig_size[1]}x{orig_size[0]}",
                                   "store one mask per frame at the images' aspect ratio (or remove the folder)")
            masks.append(_resize(m, size, "area")[..., 0] > 1e-3)
        extras["motion_mask"] = torch.from_numpy(np.stack(masks).astype(np.float32))
    flow_dir = root / "flow_i1"
    if flow_dir.is_dir():
        for kind, other in (("fwd", 1), ("bwd", -1)):
            flows = np.zeros((n, h, w, 2), np.float32)
            valid = np.zeros((n, h, w), np.float32)
            missing = []
            for i in range(n):
                p = flow_dir / f"{i:03d}_{kind}.npz"
                if not 0 <= i + other < n:
                    continue
                if not p.is_file():
                    missing.append(p.name)
                    continue
                z = _load(p, "unreadable flow file", "it must hold arrays 'flow' (H, W, 2) and 'mask' (H, W)",
                          "flow", "mask")
                f, m = z["flow"].astype(np.float32), z["mask"].astype(np.float32)
                if f.ndim != 3 or f.shape[-1] != 2 or m.shape != f.shape[:2]:
                    raise DatasetError(p, f"flow {f.shape} / mask {m.shape} have the wrong shapes", "expect (H, W, 2) and (H, W)")
                sx, sy = w / f.shape[1], h / f.shape[0]
                f = _resize(f, size, "area") * np.array([sx, sy], np.float32)
                m = _resize(m[..., None], size, "area")[..., 0] > 0.99
                ok = np.isfinite(f).all(-1)
                flows[i] = np.where(ok[..., None], f, 0.0)
                valid[i] = m & ok
            if missing:  # (the flow prior is left out on those frames)
                log.warning("%s: %d of the %d %s flow files are missing (%s%s): those frames get no flow prior; "
                            "re-run tools/preprocess.py to write them (names: NNN_%s.npz, NNN the frame number)",
                            flow_dir, len(missing), n - 1, "forward" if kind == "fwd" else "backward",
                            ", ".join(missing[:3]), ", ..." if len(missing) > 3 else "", kind)
            if valid.any():
                extras[f"flow_{kind}"] = torch.from_numpy(flows)
                extras[f"flow_{kind}_mask"] = torch.from_numpy(valid)
    return extras


def _read_sparse_depth(root: Path, n: int, size: Tuple[int, int], orig_size: Tuple[int, int], scale: float
                       ) -> Dict[str, torch.Tensor]:
    """SfM depths splatted into sparse maps ``[N, H, W]`` (0 = none), in rescaled world units."""
    folder = root / "sparse_depth"
    if not folder.is_dir():
        return {}
    h, w = size
    depth = np.zeros((n, h, w), np.float32)
    weight = np.zeros((n, h, w), np.float32)
    sx, sy = w / orig_size[1], h / orig_size[0]
    fix = "write 'uv' (K, 2) pixel coordinates, 'depth' (K,) and optionally 'weight' (K,) >= 0 (or remove the file)"
    for i in range(n):
        p = folder / f"{i:03d}.npz"
        if not p.is_file():
            continue
        z = _load(p, "unreadable sparse-depth file", fix, "uv", "depth")
        d = _check_array(z["depth"], (None,), p, "'depth'", fix, finite=False)  # invalid depths are skipped
        uv = _check_array(z["uv"], (len(d), 2), p, "'uv'", fix)
        wt = _check_array(z.get("weight", np.ones_like(d)), (len(d),), p, "'weight'", fix)
        if (wt < 0).any():
            raise DatasetError(p, f"'weight' has negative values (min {wt.min():.3g})", fix)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < orig_size[1]) & (uv[:, 1] >= 0) & (uv[:, 1] < orig_size[0])
        if (~inside).mean() > 0.05:  # (a few at the border are rounding; more: pixels of another image size)
            raise DatasetError(p, f"{int((~inside).sum())} of its {len(uv)} 'uv' lie outside the "
                                  f"{orig_size[1]}x{orig_size[0]} images", "its points were written for images of another "
                                  "size (resized after tools/preprocess.py?): re-run tools/preprocess.py on the images "
                                  "as they are now, or remove sparse_depth/ ('uv' are pixels of these images)")
        col = np.clip((uv[:, 0] * sx).astype(int), 0, w - 1)
        row = np.clip((uv[:, 1] * sy).astype(int), 0, h - 1)
        ok = np.isfinite(d) & (d > 0) & inside
        depth[i, row[ok], col[ok]] = d[ok] * scale
        weight[i, row[ok], col[ok]] = wt[ok]
    return {"sparse_depth": torch.from_numpy(depth), "sparse_depth_weight": torch.from_numpy(weight)}


def _mv_views(root: Path, n_frames: int, n_train_cams: int) -> List[Tuple[int, int, Path]]:
    """Held-out views ``(frame, camera, path)``: every rig camera at every frame except the training view."""
    folder = root / "mv_images"
    if not folder.is_dir():
        return []
    views = []
    for fdir in _natural_sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()):
        for p in _frame_files(fdir):
            m = re.fullmatch(r"cam(\d+)", p.stem)
            if m:
                views.append((int(fdir.name), int(m.group(1)), p))
    if not views:
        return []
    base = min(c for _, c, _ in views)  # NSFF numbers cameras from 1, the generator from 0
    return [(i, c - base, p) for i, c, p in views if i < n_frames and (c - base) != i % n_train_cams]


# ---------------------------------------------------------------------------------------- reader
def load_nsff(root: Union[str, Path], downscale: Union[int, float] = 1, splits=None, **_) -> Scene:
    """Read a forward-facing capture (see the module docstring) into a :class:`Scene` rendered in NDC.

    Splits: ``train`` (every frame), and ``test`` (held-out rig views) when ``mv_images/`` exists.

    Raises:
        DatasetError: naming the file and the fix for missing/malformed poses, images or priors.
    """
    root = Path(root)
    factor = check_downscale(downscale, root)
    pb = _read_poses_bounds(root)
    n = pb.shape[0]
    poses, bounds = pb[:, :15].reshape(n, 3, 5), pb[:, 15:]
    img_dir = _image_dir(root)
    files = _frame_files(img_dir)
    if len(files) != n:
        raise DatasetError(img_dir, f"{len(files)} images but {n} poses in poses_bounds.npy",
                           "keep exactly one image per row of poses_bounds.npy, in the same order")
    first = read_image(files[0])
    oh, ow = first.shape[:2]
    h_pose, w_pose, f_pose = poses[0, :, 4]
    focal = float(f_pose) * ow / float(w_pose)  # images may be resized relative to the poses' hwf
    if _aspect_differs((oh, ow), (h_pose, w_pose)):
        raise DatasetError(files[0], f"image {ow}x{oh} has another aspect ratio than the poses' {w_pose:.0f}x{h_pose:.0f}",
                           "use the images the poses were computed for")
    h, w = downscaled_size(oh, ow, factor)
    images = []
    for p in files:
        img = _load_rgb(p, factor)
        if img.shape[:2] != (h, w):
            raise DatasetError(p, f"image is {img.shape[1]}x{img.shape[0]} after downscaling, others are {w}x{h}",
                               "all frames must have the same size")
        images.append(img)
    focal *= w / ow
    c2w, scale, world_from_llff = normalize_poses(llff_to_opengl(poses), bounds)
    intr = torch.tensor([focal, focal, w / 2.0, h / 2.0], dtype=torch.float32)
    times = np.linspace(0.0, 1.0, n)
    extras = _read_priors(root, n, (h, w), (oh, ow))
    extras.update(_read_sparse_depth(root, n, (h, w), (oh, ow), scale))
    out_splits = {"train": SceneSplit(
        "train", torch.from_numpy(np.stack(images)), None, torch.from_numpy(c2w).float(),
        torch.from_numpy(times).float(), intr[None].expand(n, 4).clone(), [str(p) for p in files], extras=extras)}
    want = set(splits) if splits else {"train", "test"}
    if "test" in want:
        test = _read_test_split(root, n, factor, (h, w), intr, c2w, scale, world_from_llff, times)
        if test is not None:
            out_splits["test"] = test
    return Scene(root=str(root), splits=out_splits, aabb=torch.tensor(NDC_AABB, dtype=torch.float32),
                 near=0.0, far=1.0, background=torch.zeros(3), frame_dt=1.0 / (n - 1),
                 ndc=(float(focal), float(w), float(h), 1.0),
                 meta={"format": "nsff", "world_scale": scale, "world_from_llff": world_from_llff.tolist(),
                       "image_dir": img_dir.name, "source_hw": (oh, ow), "downscale": factor})


def _read_test_split(root, n, factor, size, intr, c2w_train, scale, world_from_llff, times) -> Optional[SceneSplit]:
    rig_path = root / "rig_poses.npy"
    if rig_path.is_file():
        fix = "write the rig cameras' LLFF poses as a finite (C, 3, 5) array (or remove the file)"
        rig = _load(rig_path, "cannot read rig poses", fix)
        if rig.ndim == 2 and rig.shape[1] == 15:  # rows of poses_bounds.npy without the bounds
            rig = rig.reshape(-1, 3, 5)
        rig = llff_to_opengl(_check_array(rig, (None, 3, 5), rig_path, "rig poses", fix))
        rig[:, :3, 3] *= scale
        rig = world_from_llff[None] @ rig
    else:
        rig = None
    n_cams = rig.shape[0] if rig is not None else min(n, 12)
    views = _mv_views(root, n, n_cams)
    if not views:
        return None
    imgs, poses, ts, paths, masks = [], [], [], [], []
    for i, c, p in views:
        if c >= n_cams:
            continue
        img = _load_rgb(p, factor)
        if img.shape[:2] != size:
            img = _resize(img, size, "area")  # NSFF protocol: GT resized to the training size
        imgs.append(img)
        poses.append(rig[c] if rig is not None else c2w_train[c])
        ts.append(times[i])
        paths.append(str(p))
        mp = root / "mv_masks" / p.parent.name / (p.stem + ".png")
        masks.append(_resize(read_image(mp)[..., :1], size, "area")[..., 0] > 0.5 if mp.is_file() else None)
    if not imgs:
        return None
    k = len(imgs)
    extras = {}
    if all(m is not None for m in masks):
        extras["dynamic_mask"] = torch.from_numpy(np.stack(masks).astype(np.float32))
    return SceneSplit("test", torch.from_numpy(np.stack(imgs)), None, torch.from_numpy(np.stack(poses)).float(),
                      torch.tensor(ts, dtype=torch.float32), intr[None].expand(k, 4).clone(), paths, extras=extras)
