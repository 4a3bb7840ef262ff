"""Trajectory export: query points, time lists, and npz / ply / json / csv writers."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .._io import replaced_on_success
from ..data import Scene
from ..data.nsff import is_nsff_scene
from ..render import SceneModel
from .trajectory import integrate, kinematics_along

TRAJECTORY_FORMATS = ("npz", "ply", "json", "csv")
ORDER_NAMES = ("velocity", "acceleration", "jerk")
TRACKS_FIX = "pass a file written by tools/export_trajectories.py"
GT_FIX = "pass --gt the motion_gt.npz that tools/make_scene.py writes into a synthetic scene"
# the shape of each array a tracks / ground-truth file may hold (T times, N points)
_MOTION_SHAPES = {"times": ("T",), "query_time": (), "query_points": ("N", 3), "positions": ("T", "N", 3),
                  "velocity": ("T", "N", 3), "acceleration": ("T", "N", 3), "jerk": ("T", "N", 3),
                  "object_id": ("N",)}


class MotionFileError(ValueError):
    """A tracks or ground-truth file that cannot be used; the message names the file, the problem and the fix."""


def load_motion_npz(path, required: Sequence[str], fix: str) -> Dict[str, np.ndarray]:
    """All arrays of the npz at ``path``, checked before any use: readable, ``required`` keys present, and the
    shapes of :data:`_MOTION_SHAPES` consistent (one T, one N). Raises :class:`MotionFileError` ending in ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise MotionFileError(f"{path}: no such file; fix: {fix}")
    with open(path, "rb") as f:
        if f.read(2) != b"PK":  # an npz is a zip archive (numpy would try other bytes as a pickle or a .npy)
            raise MotionFileError(f"{path}: not an npz archive (no zip header); fix: {fix}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # a damaged archive, or arrays that need pickle
        raise MotionFileError(f"{path}: cannot read it as an npz archive ({exc}); fix: {fix}") from exc
    return _checked_motion(data, path, required, fix)


def _checked_motion(data: Dict[str, np.ndarray], path: Path, required: Sequence[str], fix: str) -> Dict[str, np.ndarray]:
    """``data`` with ``required`` keys present and the shapes of :data:`_MOTION_SHAPES` consistent, else
    :class:`MotionFileError` naming ``path`` and ending in ``fix``."""
    missing = [k for k in required if k not in data]
    if missing:
        raise MotionFileError(f"{path}: missing {', '.join(missing)} (it has: {', '.join(data) or 'nothing'}); "
                              f"fix: {fix}")
    dims = {}
    for key, want in _MOTION_SHAPES.items():
        if key not in data:
            continue
        got = data[key].shape
        ok = len(got) == len(want) and all(dims.setdefault(w, g) == g if isinstance(w, str) else w == g
                                           for w, g in zip(want, got))
        if not ok or 0 in got:
            want = f"[{', '.join(str(dims.get(w, w)) for w in want)}]" if want else "a scalar"
            raise MotionFileError(f"{path}: {key} has shape {list(got)}, expected {want} (T times, N points, both "
                                  f">= 1, the same in every array); fix: {fix}")
    return data


def load_tracks(path) -> Dict[str, np.ndarray]:
    """Tracks written by :func:`write_trajectories` in any of its formats (npz, or json / csv / ply, told by the
    file's content), checked: ``times [T]`` and ``positions [T, N, 3]`` (csv also velocity, acceleration, jerk)."""
    path = Path(path)
    fmt = next((f for f in TRAJECTORY_FORMATS if f != "npz" and path.is_file() and is_trajectory_file(path, f)), "npz")
    if fmt == "npz":
        return load_motion_npz(path, ("times", "positions"), TRACKS_FIX)
    try:
        data = _read_text_tracks(path, fmt)
    except (ValueError, KeyError, IndexError, TypeError, StopIteration, UnicodeDecodeError, MemoryError) as exc:
        raise MotionFileError(f"{path}: cannot read it as a {fmt} trajectory file ({exc}); fix: {TRACKS_FIX}") from exc
    return _checked_motion(data, path, ("times", "positions"), TRACKS_FIX)


def _read_text_tracks(path: Path, fmt: str) -> Dict[str, np.ndarray]:
    """The arrays of a json / csv / ply trajectory file. csv and ply hold one row (vertex) per time and track, time
    major, as :func:`write_trajectories` writes them: read back in that order (repeated times kept). A file cut short
    inside a time (or mid-line, or a ply with fewer vertices than its header) is an error; one cut exactly between two
    times reads as the times before the cut (csv: nothing in the file tells)."""
    if fmt == "json":
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return {k: np.asarray(v, dtype=str if k == "untrained_orders" else np.float32) for k, v in raw.items()}
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 1))
        if f.read(1) != b"\n":
            raise ValueError("the last line is cut short (no line end)")
    if fmt == "csv":
        rows = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        time_col, track_col = 0, 1
        cols = {name: rows[:, 2 + 3 * i: 5 + 3 * i] for i, name in enumerate(("positions",) + ORDER_NAMES)}
    else:
        header = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                header.append(line.strip())
                if line.strip() == "end_header":
                    break
        props = [h.split()[-1] for h in header if h.startswith("property ")]
        count = next(int(h.split()[-1]) for h in header if h.startswith("element vertex"))
        rows = np.loadtxt(path, skiprows=len(header), ndmin=2)
        if rows.shape[0] != count:
            raise ValueError(f"{rows.shape[0]} vertices, its header says {count}")
        time_col, track_col = props.index("time"), props.index("track")
        cols = {"positions": rows[:, [props.index("x"), props.index("y"), props.index("z")]]}
    track = rows[:, track_col]
    n = int(track.max()) + 1 if track.size else 0
    if n < 1 or n > rows.shape[0] or rows.shape[0] % n or not np.array_equal(
            track, np.tile(np.arange(n, dtype=track.dtype), rows.shape[0] // n)):
        raise ValueError(f"{rows.shape[0]} rows are not whole times of tracks 0..{max(n, 1) - 1} in order (a file "
                         f"cut short or edited)")
    t_count = rows.shape[0] // n
    out = {"times": rows[::n, time_col].astype(np.float32)}
    for name, values in cols.items():
        out[name] = values.reshape(t_count, n, 3).astype(np.float32)
    return out


def load_motion_gt(path) -> Dict[str, np.ndarray]:
    """A synthetic scene's ``motion_gt.npz``, checked (the keys :func:`score_against_ground_truth` reads; every value
    finite: the scores of a NaN would be written as null. Tracks may hold NaN, where a point left the scene)."""
    data = load_motion_npz(path, ("times", "query_time", "query_points", "positions", "velocity", "acceleration",
                                  "jerk"), GT_FIX)
    if "untrained_orders" in data:  # (what compute_trajectories writes: a run's own predictions would score perfectly)
        raise MotionFileError(f"{path}: a trajectory file exported from a run (tools/export_trajectories.py), not a "
                              f"scene's ground truth; fix: {GT_FIX}")
    for key, values in data.items():
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            raise MotionFileError(f"{path}: {key} holds {int((~np.isfinite(values)).sum())} NaN or infinite values; "
                                  f"fix: {GT_FIX}")
    return data


def untrained_orders(kin) -> List[str]:
    """The Taylor orders a kinematic field gives zeros for: those the training curriculum had not unlocked yet
    (``taylor_mask`` 0), as in training, and those it does not model (:func:`unmodelled_orders`)."""
    mask = getattr(kin, "taylor_mask", None)
    locked = [] if mask is None else [ORDER_NAMES[i] for i, m in enumerate(mask.tolist()) if m == 0]
    return locked + unmodelled_orders(kin)


def unmodelled_orders(kin) -> List[str]:
    """The Taylor orders beyond the field's ``order`` (``--kinematic_order``): always zero."""
    return list(ORDER_NAMES[getattr(kin, "order", len(ORDER_NAMES)):])


def read_points(path) -> np.ndarray:
    """``[N, 3]`` points from a ``.npy`` or whitespace/comma separated text file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"points file not found: {path} (give an N x 3 .npy or .txt file)")
    try:
        if path.suffix == ".npy":
            pts = np.load(path, allow_pickle=False)
        else:
            text = path.read_bytes().decode("utf-8")  # (an .npz or other binary file: a clear error below)
            if not text.strip():
                raise ValueError("the file is empty")
            pts = np.loadtxt(text.splitlines(), delimiter="," if "," in text[:200] else None, ndmin=2)
    except Exception as exc:
        what = "not a text file" if isinstance(exc, UnicodeDecodeError) else str(exc).splitlines()[0]
        raise ValueError(f"cannot read points from {path}: {what} (expected an N x 3 .npy, or a text file of N "
                         f"lines of 3 numbers)") from exc
    pts = np.asarray(pts, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
        raise ValueError(f"{path} holds an array of shape {pts.shape}; expected N x 3 points (N >= 1)")
    if not np.isfinite(pts).all():
        raise ValueError(f"{path} holds non-finite coordinates")
    return pts


def parse_times(spec: str, scene: Optional[Scene], query_time: float = 0.5) -> np.ndarray:
    """``train`` (the train frame times), ``N`` (N evenly spaced in [0, 1]; 1: ``query_time`` alone) or ``t1,t2,...``."""
    spec = str(spec).strip()
    if spec == "train":
        if scene is None:
            raise ValueError("--times train needs the scene (pass --scene)")
        return np.unique(scene.split("train").times.numpy().astype(np.float64))
    if spec.isdigit():
        n = int(spec)
        if n < 1:
            raise ValueError("--times N needs N >= 1 (N = 1: the query time --time alone); for the time 0 write "
                             "--times 0.0")
        return np.linspace(0.0, 1.0, n) if n > 1 else np.array([float(query_time)])
    try:
        times = np.array([float(v) for v in spec.split(",") if v.strip()], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"--times {spec!r}: expected 'train', a count, or comma separated times") from exc
    if times.size == 0:
        raise ValueError(f"--times {spec!r}: no time given; expected 'train', a count, or comma separated times")
    if not np.all((times >= 0) & (times <= 1)):
        raise ValueError(f"--times {spec!r}: times must be in [0, 1]")
    return times


@torch.no_grad()
def sample_dynamic_points(model: SceneModel, c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int,
                          time: float, n_points: int, background, seed: int = 0) -> np.ndarray:
    """Visible points on the dynamic part of the scene: back-projected depth where the dynamic field dominates.

    Returns:
        ``[n, 3]`` world points (``n <= n_points``).
    """
    out = model.render_image(c2w, intrinsics, height, width, time, background, decompose=True)
    surface = model.surface_points(c2w, intrinsics, height, width, out["depth"])
    keep = ((out["opacity"] > 0.5) & (out["dynamic_share"] > 0.5)).reshape(-1)
    idx = torch.nonzero(keep)[:, 0]
    if idx.numel() == 0:
        raise RuntimeError(f"no visible dynamic content at time {time} from this view; pick another --view/--time "
                           "or pass --points")
    g = torch.Generator().manual_seed(seed)
    idx = idx[torch.randperm(idx.numel(), generator=g)[:n_points].to(idx.device)]
    pts = surface[idx]
    return pts.cpu().numpy().astype(np.float64)


@torch.no_grad()
def compute_trajectories(model: SceneModel, points: np.ndarray, query_time: float, times: np.ndarray,
                         substeps: int = 4, frame_dt: Optional[float] = None, chunk: int = 65536) -> Dict[str, np.ndarray]:
    """Integrate ``points`` (at ``query_time``) through the kinematic field and sample v, a, j along the tracks.

    Returns:
        dict with ``times [T]``, ``positions``, ``velocity``, ``acceleration``, ``jerk`` ``[T, N, 3]``
        (world units per unit of dataset time, powers 1, 2, 3), ``query_points [N, 3]``, ``query_time``, and
        ``untrained_orders`` (names; the field's mask is kept, so these orders are zeros, as in training).
    """
    kin = model.kinematic
    if kin is None:
        raise RuntimeError("this run has no kinematic field (trained with --kin_enabled false)")
    dev = model.aabb.device
    dt = float(frame_dt if frame_dt is not None else kin.frame_dt)
    x0 = torch.as_tensor(points, dtype=torch.float32, device=dev)
    tt = torch.as_tensor(times, dtype=torch.float32, device=dev)

    def vel(x, t):
        return model.kinematics_at(x, t)["velocity"]

    pos = torch.cat([integrate(vel, x0[i : i + chunk], float(query_time), tt, dt / substeps)
                     for i in range(0, x0.shape[0], chunk)], dim=1)
    kin_along = kinematics_along(model.kinematics_at, pos, tt)
    out = {"times": times.astype(np.float32), "positions": pos.cpu().numpy(), "query_points": np.asarray(points, np.float32),
           "query_time": np.float32(query_time), "untrained_orders": np.array(untrained_orders(kin), dtype=str)}
    out.update({k: v.cpu().numpy() for k, v in kin_along.items()})
    return out


def trajectory_target(path, fmt: Optional[str] = None) -> Tuple[Path, str]:
    """``(file, format)`` a trajectory write produces: ``fmt``, else the suffix, else npz; an npz file always ends
    in ``.npz`` (numpy appends it), and a file whose suffix names another format gets ``fmt``'s appended too.
    Raises ValueError for a format not in :data:`TRAJECTORY_FORMATS`."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".") or "npz").lower()
    if fmt not in TRAJECTORY_FORMATS:
        raise ValueError(f"{path}: unknown trajectory format {fmt!r}; fix: give the file a .npz, .ply, .json or "
                         f".csv suffix, or pass --format {'|'.join(TRAJECTORY_FORMATS)}")
    named = path.suffix.lstrip(".").lower()
    if (fmt == "npz" and path.suffix != ".npz") or (named in TRAJECTORY_FORMATS and named != fmt):
        path = Path(f"{path}.{fmt}")  # (numpy's rule for npz, and no x.csv holding PLY)
    return path, fmt


def write_trajectories(traj: Dict[str, np.ndarray], path, fmt: Optional[str] = None) -> Path:
    """Write trajectories as ``npz`` (all arrays), ``ply`` (points coloured by track, one vertex per
    (time, track)), ``json`` or ``csv`` (one row per time and track). The format defaults to the suffix.
    Returns the file written (see :func:`trajectory_target`)."""
    target, fmt = trajectory_target(path, fmt)
    with replaced_on_success(target) as path:  # an earlier file stays until this one is complete
        _write_trajectory_file(traj, path, fmt)
    return target


def _write_trajectory_file(traj: Dict[str, np.ndarray], path: Path, fmt: str) -> None:
    T, N, _ = traj["positions"].shape
    if fmt == "npz":
        np.savez_compressed(path, **traj)
        return
    # (text formats: + 0.0 writes IEEE negative zeros, e.g. a still point's velocity times a negative step, as 0)
    traj = {k: v + 0.0 if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v for k, v in traj.items()}
    if fmt == "json":
        path.write_text(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else float(v)) for k, v in traj.items()}))
    elif fmt == "csv":
        rows = ["time,track,x,y,z,vx,vy,vz,ax,ay,az,jx,jy,jz"]
        for ti in range(T):
            for n in range(N):
                vals = [*traj["positions"][ti, n], *traj["velocity"][ti, n], *traj["acceleration"][ti, n], *traj["jerk"][ti, n]]
                rows.append(f"{traj['times'][ti]:.6f},{n}," + ",".join(f"{v:.6g}" for v in vals))
        path.write_text("\n".join(rows) + "\n")
    elif fmt == "ply":
        rng = np.random.default_rng(0)
        colours = (rng.random((N, 3)) * 200 + 55).astype(np.uint8)
        lines = ["ply", "format ascii 1.0", f"element vertex {T * N}", "property float x", "property float y",
                 "property float z", "property uchar red", "property uchar green", "property uchar blue",
                 "property float time", "property int track", "end_header"]
        for ti in range(T):
            for n in range(N):
                x, y, z = traj["positions"][ti, n]
                r, g, b = colours[n]
                lines.append(f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {b} {traj['times'][ti]:.6f} {n}")
        path.write_text("\n".join(lines) + "\n")


def is_ground_truth(keys) -> bool:
    """Whether the arrays named ``keys`` are a synthetic scene's ``motion_gt.npz`` (it has object ids; a run's
    exports, in any format, have none)."""
    return "object_id" in keys


def is_trajectory_file(path, fmt: str) -> bool:
    """Whether the file at ``path`` is one :func:`write_trajectories` wrote in ``fmt`` (what ``--overwrite`` of the
    export may replace: not a checkpoint, a metrics file or anything else given as ``--out`` by mistake)."""
    path = Path(path)
    try:
        if fmt == "npz":  # (a ground-truth file has these arrays too, and object ids)
            with np.load(path, allow_pickle=False) as z:
                return {"times", "positions", "query_points"} <= set(z.files) and not is_ground_truth(z.files)
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace")
    except Exception:  # (unreadable, or not an archive)
        return False
    if fmt == "json":  # (also re-indented by a JSON tool)
        return re.match(r'\s*\{\s*"times"\s*:\s*\[', head) is not None
    if fmt == "csv":
        return head.startswith("time,track,x,y,z,")
    return head.startswith(("ply\n", "ply\r\n")) and "property int track" in head


def outside_scene_box(model: SceneModel, points) -> np.ndarray:
    """``[N]`` bool: which world ``points [N, 3]`` lie outside the box the run's fields were trained in (where the
    kinematic field has seen no data; mapped to NDC first on forward-facing runs)."""
    x = torch.as_tensor(np.asarray(points, dtype=np.float32), device=model.aabb.device)
    with torch.no_grad():
        field = model.space.to_field(x)
    box = model.aabb.to(field.dtype)
    inside = ((field >= box[:3]) & (field <= box[3:])).all(dim=-1) & torch.isfinite(field).all(dim=-1)
    return (~inside).cpu().numpy()


def _object_mismatch(gt_path: Path, scene_dir: Path) -> str:
    """Without scene_meta.json (a GT file copied out of its scene): the moving objects ``gt_path`` and the run's
    scene's ``motion_gt.npz`` name (``object_names``), when both files are there and name them; ``""`` otherwise."""
    names = []
    for path in (gt_path, scene_dir / "motion_gt.npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                names.append(sorted(str(v) for v in z["object_names"]) if "object_names" in z.files else None)
        except (OSError, ValueError):
            return ""
    if None in names or names[0] == names[1]:
        return ""
    return f"it names the moving objects {names[0]}, the run's scene {scene_dir}: {names[1]}"


def _layout_mismatch(gt_path: Path, scene_dir: Path) -> str:
    """How the moving objects of the ground truth ``gt_path`` differ from those of the run's ``scene_dir``: by the
    layouts the two folders' ``scene_meta.json`` presets name (cameras, image sizes and seeds do not change the
    motion), else by the objects the two ground-truth files name; ``""`` when they agree or nothing tells."""
    from ..data.synthetic import _LAYOUT_OF_PRESET, spec_of_scene

    gt_dir = gt_path.parent
    if gt_dir.resolve() == scene_dir.resolve():
        return ""
    try:
        gt_spec, run_spec = spec_of_scene(gt_dir), spec_of_scene(scene_dir)
    except (ValueError, OSError, KeyError, TypeError):  # (not synthetic scenes, or their scene_meta.json unreadable)
        return _object_mismatch(gt_path, scene_dir)
    layouts = [_LAYOUT_OF_PRESET.get(p, p) for p in (gt_spec.preset, run_spec.preset)]
    if layouts[0] == layouts[1]:
        return ""
    return f"its scene_meta.json: preset {gt_spec.preset!r}, the run's scene {scene_dir}: {run_spec.preset!r}"


def score_against_ground_truth(model: SceneModel, gt_path, substeps: int = 4, curves: Dict = None,
                               scene_dir=None) -> Dict[str, float]:
    """Trajectory end-point error and v/a/j errors against a synthetic scene's ``motion_gt.npz``.

    Tracks start at the GT query points at the GT query time and are integrated through the field
    to every GT time; the end-point error is the mean over all times and points of the distance to
    the true position; ``epe_zero_motion`` is what a field without motion scores, and ``epe_mean_<object>``
    splits the error by moving object when the GT names them. Velocity/acceleration/jerk errors compare
    the field at the TRUE positions with the true values (relative error = mean |pred - gt| / mean |gt|), and
    ``velocity_cosine`` / ``velocity_speed_ratio`` (also per object) split the velocity error into direction (mean
    cosine to the true velocity) and length (mean predicted over mean true speed); the errors of orders the training
    curriculum had not unlocked at the model's checkpoint (:func:`untrained_orders`) are None, not scored.
    The ground truth is checked (:func:`load_motion_gt`) before any integration. ``scene_dir``: the scene the model
    was trained on (default: the GT file's folder); a forward-facing one trains in a rescaled frame the GT is mapped to.
    ``curves``, when given a dict, receives the error over time: ``time [T]`` and, for ``all`` and each named
    object, ``epe_<name> [T]`` and ``zero_motion_<name> [T]`` (means over that object's points).
    """
    gt = load_motion_gt(gt_path)
    scene_dir = Path(scene_dir) if scene_dir is not None else Path(gt_path).parent
    if getattr(getattr(model, "space", None), "is_ndc", False) and not is_nsff_scene(scene_dir):
        raise MotionFileError(f"{gt_path}: the run is forward-facing (NDC), so its ground truth is mapped into the "
                              f"training frame with the scene's poses_bounds.npy, which {scene_dir} lacks; fix: keep "
                              f"motion_gt.npz in its scene folder, or the run's scene where its config says")
    other = _layout_mismatch(Path(gt_path), scene_dir)
    if other:
        raise MotionFileError(f"{gt_path} is the ground truth of another scene than the run's ({other}); fix: pass the "
                              f"motion_gt.npz of {scene_dir}, or leave --gt out")
    # world units of the GT per training-world unit
    unit = gt_to_training_world(gt, scene_dir)
    gt_times = gt["times"].astype(np.float64)
    traj = compute_trajectories(model, gt["query_points"], float(gt["query_time"]), gt_times, substeps=substeps)
    err = np.linalg.norm(traj["positions"] - gt["positions"], axis=-1) * unit  # [T, N], GT units
    dev = model.aabb.device
    P = torch.as_tensor(gt["positions"], dtype=torch.float32, device=dev)
    at_true = kinematics_along(model.kinematics_at, P, torch.as_tensor(gt_times, dtype=torch.float32, device=dev))
    # [T, N]: a field without motion keeps every track at its query point
    still = np.linalg.norm(gt["positions"] - gt["query_points"][None], axis=-1) * unit
    out = {"epe_mean": float(err.mean()), "epe_final": float(err[np.argmax(np.abs(gt_times - float(gt["query_time"])))].mean()),
           "epe_max": float(err.max()), "epe_zero_motion": float(still.mean()),
           "n_points": int(err.shape[1]), "n_times": int(err.shape[0])}
    groups = {"all": np.ones(err.shape[1], dtype=bool)}
    if "object_id" in gt and "object_names" in gt:  # per moving object: which one the error comes from
        for k, name in enumerate(gt["object_names"]):
            sel = gt["object_id"] == k
            if sel.any():
                groups[str(name)] = sel
                out[f"epe_mean_{name}"] = float(err[:, sel].mean())
                out[f"epe_zero_motion_{name}"] = float(still[:, sel].mean())
    if curves is not None:
        curves["time"] = gt_times
        for name, sel in groups.items():
            curves[f"epe_{name}"] = err[:, sel].mean(1)
            curves[f"zero_motion_{name}"] = still[:, sel].mean(1)
    # how the velocity errs: its direction (mean cosine to the truth) and its length (mean speed over mean true speed)
    v_pred, v_true = at_true["velocity"].cpu().numpy(), gt["velocity"]
    n_pred, n_true = np.linalg.norm(v_pred, axis=-1), np.linalg.norm(v_true, axis=-1)
    cos = (v_pred * v_true).sum(-1) / np.maximum(n_pred * n_true, 1e-12)
    for name, sel in groups.items():
        moving = (n_true > 1e-9) & sel[None, :]
        if moving.any():
            suffix = "" if name == "all" else f"_{name}"
            out[f"velocity_cosine{suffix}"] = float(cos[moving].mean())
            out[f"velocity_speed_ratio{suffix}"] = float(n_pred[moving].mean() / n_true[moving].mean())
    locked = untrained_orders(model.kinematic)
    for name in ORDER_NAMES:
        if name in locked:  # not trained at this checkpoint: no error to report (the field gives zeros)
            out[f"{name}_abs_err"] = out[f"{name}_rel_err"] = None
            continue
        pred = at_true[name].cpu().numpy()
        true = gt[name]
        num = np.linalg.norm(pred - true, axis=-1).mean() * unit
        den = np.linalg.norm(true, axis=-1).mean() * unit
        out[f"{name}_abs_err"] = float(num)
        out[f"{name}_rel_err"] = float(num / den) if den > 1e-9 else float("nan")
    return out


def gt_to_training_world(gt: Dict[str, np.ndarray], scene_dir: Path) -> float:
    """Map a forward-facing scene's GT (written in the generator's frame) into the frame the NSFF loader
    trains in (rescaled, recentred; see :func:`kinfield.data.nsff.world_transform`), in place.
    Returns the GT length unit per training-world unit (1 for world-space scenes)."""
    from ..data.nsff import world_transform

    if not is_nsff_scene(scene_dir):
        return 1.0
    scale, m = world_transform(scene_dir)
    rot = m[:3, :3] * scale
    for k in ("query_points", "positions"):
        gt[k] = (gt[k].astype(np.float64) @ rot.T + m[:3, 3]).astype(np.float32)
    for k in ("velocity", "acceleration", "jerk"):
        gt[k] = (gt[k].astype(np.float64) @ rot.T).astype(np.float32)
    return 1.0 / scale
