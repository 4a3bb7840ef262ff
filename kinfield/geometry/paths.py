"""Camera and time paths for videos (pure torch).

Every path returns ``(poses [F, 4, 4], times [F])``: OpenGL camera-to-world matrices (x right,
y up, the camera looks down -z) and normalised times in [0, 1]. Geometry is computed in float64
and returned as float32.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

__all__ = ["look_at", "orbit_path", "spiral_path", "fixed_view_path", "bullet_time_path", "path_defaults"]

Vec3 = Union[Sequence[float], torch.Tensor]
CameraPath = Tuple[torch.Tensor, torch.Tensor]  # (poses [F, 4, 4], times [F])
_F64 = torch.float64


def _vec(v: Vec3) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=_F64).reshape(-1)
    if t.numel() != 3:
        raise ValueError(f"expected a 3-vector, got shape {tuple(torch.as_tensor(v).shape)}")
    return t


def _normalize(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def _perpendicular(v: torch.Tensor) -> torch.Tensor:
    """A unit vector perpendicular to unit ``v [3]`` (the world axis least aligned with it, projected)."""
    axis = torch.zeros(3, dtype=_F64)
    axis[int(torch.argmin(v.abs()))] = 1.0
    return _normalize(axis - (axis @ v) * v)


def _sweep(n_frames: int) -> torch.Tensor:
    """Times ``[F]`` from 0 to 1 inclusive (``[0.]`` for a single frame)."""
    return torch.linspace(0.0, 1.0, n_frames) if n_frames > 1 else torch.zeros(n_frames)


def _check_n(n_frames: int) -> int:
    n = int(n_frames)
    if n < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    return n


def look_at(eye: Vec3, target: Vec3, up: Vec3 = (0.0, 0.0, 1.0), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """OpenGL camera-to-world ``[4, 4]`` (computed in float64, returned as ``dtype``) at ``eye`` whose -z
    axis points at ``target``.

    The camera y axis is ``up`` projected perpendicular to the viewing direction (no roll). When
    ``up`` is (anti)parallel to the viewing direction, another perpendicular up is chosen.
    """
    eye, target, up = _vec(eye), _vec(target), _normalize(_vec(up))
    z = eye - target
    if float(z.norm()) < 1e-12:
        raise ValueError("look_at: eye and target coincide")
    z = _normalize(z)
    x = torch.linalg.cross(up, z)
    if float(x.norm()) < 1e-6:
        x = torch.linalg.cross(_perpendicular(z), z)
    x = _normalize(x)
    y = torch.linalg.cross(z, x)
    m = torch.eye(4, dtype=_F64)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m.to(dtype)


def _times_arg(times, n: int) -> torch.Tensor:
    if times is None:
        return _sweep(n)
    t = torch.as_tensor(times, dtype=torch.float32).reshape(-1)
    if t.numel() == 1:
        return t.expand(n).clone()
    if t.numel() != n:
        raise ValueError(f"times has {t.numel()} entries, expected 1 or n_frames={n}")
    return t.clone()


def orbit_path(center: Vec3, radius: float, elevation_deg: float, n_frames: int, up: Vec3 = (0.0, 0.0, 1.0),
               times=None, start_azimuth_deg: float = 0.0) -> CameraPath:
    """A full circle around ``center`` at fixed ``radius`` and elevation, every camera looking at it.

    Elevation is measured from the plane through ``center`` perpendicular to ``up``. Azimuths are
    ``start + 360 k / F`` (the last frame does not repeat the first, so the video loops).

    Args:
        center: ``[3]``; radius: distance of every camera to ``center``; up: world up ``[3]``.
        times: None (sweep 0 -> 1), one value (frozen) or ``[F]``.

    Returns:
        ``(poses [F, 4, 4], times [F])``.
    """
    n = _check_n(n_frames)
    c, u = _vec(center), _normalize(_vec(up))
    e1 = _perpendicular(u)
    e2 = torch.linalg.cross(u, e1)
    el = math.radians(float(elevation_deg))
    az = math.radians(float(start_azimuth_deg)) + 2.0 * math.pi * torch.arange(n, dtype=_F64) / n
    horiz = torch.cos(az)[:, None] * e1 + torch.sin(az)[:, None] * e2  # [F, 3]
    eyes = c + float(radius) * (math.cos(el) * horiz + math.sin(el) * u)
    poses = torch.stack([look_at(e, c, u) for e in eyes])
    return poses, _times_arg(times, n)


def bullet_time_path(center: Vec3, radius: float, elevation_deg: float, n_frames: int, time: float,
                     up: Vec3 = (0.0, 0.0, 1.0)) -> CameraPath:
    """:func:`orbit_path` with time frozen at ``time``: ``(poses [F, 4, 4], times [F])``."""
    return orbit_path(center, radius, elevation_deg, n_frames, up=up, times=float(time))


def fixed_view_path(pose: torch.Tensor, n_frames: int) -> CameraPath:
    """One camera ``pose [4, 4]`` for every frame while time sweeps 0 -> 1."""
    n = _check_n(n_frames)
    pose = torch.as_tensor(pose, dtype=torch.float32)
    if pose.shape != (4, 4):
        raise ValueError(f"pose must be [4, 4], got {tuple(pose.shape)}")
    return pose[None].expand(n, 4, 4).clone(), _sweep(n)


def _axes_centre(origins: torch.Tensor, dirs: torch.Tensor) -> Optional[torch.Tensor]:
    """Least-squares point closest to the lines ``o_i + s d_i`` (``[N, 3]`` each), or None if ill-posed."""
    eye = torch.eye(3, dtype=_F64)
    proj = eye[None] - dirs[:, :, None] * dirs[:, None, :]  # [N, 3, 3]
    a = proj.sum(0)
    b = (proj @ origins[:, :, None]).sum(0)[:, 0]
    evals = torch.linalg.eigvalsh(a)
    if float(evals[0]) < 1e-4 * max(float(evals[-1]), 1e-12):  # parallel axes (e.g. one camera)
        return None
    p = torch.linalg.solve(a, b)
    if not bool(torch.isfinite(p).all()):
        return None
    if float(((p - origins) * dirs).sum(-1).median()) <= 0.0:  # behind most cameras
        return None
    return p


def path_defaults(poses: torch.Tensor) -> Dict[str, object]:
    """Sensible orbit parameters from reference (training) poses ``[N, 4, 4]``.

    Returns:
        dict with ``center [3]`` (float32; the point closest to all optical axes in the least-squares
        sense, or the origin when that is ill-posed or behind the cameras), ``radius`` (median camera
        distance to the centre), ``elevation_deg`` (median camera elevation about the centre w.r.t.
        ``up``) and ``up [3]`` (mean camera y axis, normalised; +z if it cancels out).
    """
    poses = torch.as_tensor(poses, dtype=_F64)
    if poses.dim() != 3 or poses.shape[1:] != (4, 4) or poses.shape[0] < 1:
        raise ValueError(f"poses must be [N, 4, 4] with N >= 1, got {tuple(poses.shape)}")
    origins = poses[:, :3, 3]
    dirs = _normalize(-poses[:, :3, 2])
    centre = _axes_centre(origins, dirs)
    if centre is None:
        centre = torch.zeros(3, dtype=_F64)
    up = poses[:, :3, 1].mean(0)
    up = _normalize(up) if float(up.norm()) > 1e-6 else torch.tensor([0.0, 0.0, 1.0], dtype=_F64)
    rel = origins - centre
    dist = rel.norm(dim=-1)
    radius = float(dist.median())
    if radius <= 1e-9:
        radius = 1.0
    sin_el = ((rel @ up) / dist.clamp_min(1e-12)).clamp(-1.0, 1.0)
    elevation = math.degrees(float(torch.asin(sin_el).median()))
    return {"center": centre.to(torch.float32), "radius": radius, "elevation_deg": elevation,
            "up": up.to(torch.float32)}


def _median_view(origins: torch.Tensor, target: torch.Tensor, defaults: Dict[str, object],
                 distance: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eye ``[3]``, unit forward ``[3]`` and unit up ``[3]`` of a view of ``target`` from ``distance`` at the
    median elevation of ``defaults`` (:func:`path_defaults`), at the azimuth of the mean camera offset (of the
    first camera ``origins[0]`` when the offsets cancel, as in a capture all round)."""
    up_w = defaults["up"].to(_F64)
    rel = origins - target
    horiz = rel.mean(0) - (rel.mean(0) @ up_w) * up_w
    if float(horiz.norm()) < 0.25 * float((rel - (rel @ up_w)[:, None] * up_w).norm(dim=-1).median()):
        horiz = rel[0] - (rel[0] @ up_w) * up_w
    h = _normalize(horiz) if float(horiz.norm()) > 1e-9 else _perpendicular(up_w)
    el = math.radians(float(defaults["elevation_deg"]))
    eye = target + distance * (math.cos(el) * h + math.sin(el) * up_w)
    fwd = _normalize(target - eye)
    up = up_w - (up_w @ fwd) * fwd
    up = _normalize(up) if float(up.norm()) > 1e-6 else _perpendicular(fwd)
    return eye, fwd, up


def spiral_path(ref_poses: torch.Tensor, n_frames: int, n_rotations: float = 2, radius_scale: float = 0.5,
                z_rate: float = 0.5) -> CameraPath:
    """LLFF-style spiral around the mean reference camera, looking at a focus point ahead of it.

    The mean camera sits at the mean of the reference centres, looks along the mean viewing axis,
    with the mean up vector (orthogonalised). The focus point lies on that axis at the depth of the
    :func:`path_defaults` centre. Frame ``k`` sits at ``mean_pose @ (r_x cos a, -r_y sin a,
    -r_z sin(z_rate a))`` with ``a = 2 pi n_rotations k / F`` and ``r`` the 90th percentile of the
    reference offsets in the mean camera frame times ``radius_scale``.

    For inward-facing 360-degree captures (viewing axes that fan out: the mean of the unit axes shorter than
    0.9) the mean viewing axis points down (the horizontal parts cancel), so the spiral is built about a
    *median training view* instead: the :func:`path_defaults` centre seen from its median camera
    distance and elevation, at the azimuth of the mean camera offset (of the first camera when the
    capture goes all round), with radii ``radius_scale * (0.5, 0.3, 0.2)`` times that distance (the
    reference offsets there span the whole capture). Use :func:`orbit_path` for a full 360 tour.
    Otherwise, when the focus lies behind or close to the mean centre (parallel axes, where no centre is
    found and the origin stands in), the mean camera is moved back along its axis to the median camera
    distance.

    Returns:
        ``(poses [F, 4, 4], times [F])`` with times sweeping 0 -> 1.
    """
    n = _check_n(n_frames)
    ref = torch.as_tensor(ref_poses, dtype=_F64)
    if ref.dim() != 3 or ref.shape[1:] != (4, 4) or ref.shape[0] < 1:
        raise ValueError(f"ref_poses must be [N, 4, 4] with N >= 1, got {tuple(ref.shape)}")
    d = path_defaults(ref)
    target = d["center"].to(_F64)
    origins = ref[:, :3, 3]
    mean_c = origins.mean(0)
    fwd = -ref[:, :3, 2].mean(0)
    spread = float(fwd.norm()) < 0.9  # the viewing axes fan out (mean cosine to their mean below 0.9, ~25 deg)
    fwd = _normalize(fwd) if float(fwd.norm()) > 1e-6 else _normalize(target - mean_c)
    if float(fwd.norm()) < 0.5:  # mean centre on the target and axes cancel: look down -up
        fwd = -d["up"].to(_F64)
    up = ref[:, :3, 1].mean(0)
    up = up - (up @ fwd) * fwd
    up = _normalize(up) if float(up.norm()) > 1e-6 else _perpendicular(fwd)
    focal = float((target - mean_c) @ fwd)
    typical = float((origins - target).norm(dim=-1).median())
    if spread:  # a 360-degree capture: about a median training view
        mean_c, fwd, up = _median_view(origins, target, d, typical)
        focal = typical
    elif focal < 0.5 * typical:  # the focus behind or at the mean camera (e.g. parallel axes: no centre found)
        mean_c = target - typical * fwd
        focal = typical
    right = torch.linalg.cross(fwd, up)  # x = y cross z with z = -fwd
    frame = torch.stack([right, up, -fwd], dim=1)  # [3, 3] columns x, y, z
    if spread:
        rads = torch.tensor([0.5, 0.3, 0.2], dtype=_F64) * focal * float(radius_scale)
    else:
        offsets = (origins - mean_c) @ frame  # [N, 3] in the mean camera frame
        rads = torch.quantile(offsets.abs(), 0.9, dim=0) * float(radius_scale)
    if float(rads.max()) < 1e-9:  # a single reference camera: a small default spiral
        rads = torch.full((3,), 0.1 * focal * float(radius_scale), dtype=_F64)
    focus = mean_c + focal * fwd
    a = 2.0 * math.pi * float(n_rotations) * torch.arange(n, dtype=_F64) / n
    local = torch.stack([torch.cos(a), -torch.sin(a), -torch.sin(float(z_rate) * a)], dim=-1) * rads
    eyes = mean_c + local @ frame.T
    poses = torch.stack([look_at(e, focus, up) for e in eyes])
    return poses, _sweep(n)
