"""Camera geometry against closed forms: pinhole rays, ray/box slabs, NDC with near != 1, look-at
frames and the video paths. Every expectation is written out by hand (never computed with the
function under test)."""
import math

import pytest
import torch

from kinfield.geometry import pixel_rays
from kinfield.geometry.ndc import ndc_jacobian, ndc_rays, ndc_to_world, world_to_ndc
from kinfield.geometry.paths import look_at, orbit_path, path_defaults, spiral_path
from kinfield.geometry.rays import image_rays, ray_aabb

# deliberately anisotropic and off-centre so that swapped fx/fy, cx/cy or width/height show
FX, FY, CX, CY = 40.0, 20.0, 7.5, 3.5


def _expected_cam_dirs(rows, cols):
    d = torch.stack([(cols.double() + 0.5 - CX) / FX, -(rows.double() + 0.5 - CY) / FY,
                     -torch.ones(len(rows), dtype=torch.float64)], -1)
    return d / d.norm(dim=-1, keepdim=True)


def test_pixel_rays_identity_pose_closed_form():
    """Identity rotation: direction = normalise(((c + 0.5 - cx) / fx, -(r + 0.5 - cy) / fy, -1)) (pixel
    centres, y up, looking down -z); origin = the pose's translation."""
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([0.3, -1.0, 2.0])
    rows = torch.tensor([0, 0, 5, 2, 7])
    cols = torch.tensor([0, 13, 2, 7, 11])
    o, d = pixel_rays(c2w, torch.tensor([FX, FY, CX, CY]), rows, cols)
    assert torch.allclose(d.double(), _expected_cam_dirs(rows, cols), atol=1e-6)
    assert torch.allclose(o, c2w[:3, 3].expand(5, 3))
    # the pixel (cx - 0.5, cy - 0.5) has its centre on the optical axis
    _, d0 = pixel_rays(c2w, torch.tensor([FX, FY, CX, CY]), torch.tensor([3]), torch.tensor([7]))
    assert torch.allclose(d0, torch.tensor([[0.0, 0.0, -1.0]]), atol=1e-7)


def test_pixel_rays_rotated_pose_shared_and_per_ray():
    """c2w with columns (e_y, e_z, e_x): camera (u, -v, -1) -> world (-1, u, -v), for a shared [4, 4] pose
    and for per-ray [R, 4, 4] poses alike."""
    c2w = torch.zeros(4, 4)
    c2w[:3, 0] = torch.tensor([0.0, 1.0, 0.0])
    c2w[:3, 1] = torch.tensor([0.0, 0.0, 1.0])
    c2w[:3, 2] = torch.tensor([1.0, 0.0, 0.0])
    c2w[3, 3] = 1.0
    c2w[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    rows, cols = torch.tensor([0, 4, 6]), torch.tensor([1, 12, 3])
    cam = _expected_cam_dirs(rows, cols)  # (u, -v, -1) normalised
    want = torch.stack([cam[:, 2], cam[:, 0], cam[:, 1]], -1)
    intr = torch.tensor([FX, FY, CX, CY])
    _, d_shared = pixel_rays(c2w, intr, rows, cols)
    o, d_each = pixel_rays(c2w.expand(3, 4, 4), intr.expand(3, 4), rows, cols)
    assert torch.allclose(d_shared.double(), want, atol=1e-6)
    assert torch.allclose(d_each.double(), want, atol=1e-6)
    assert torch.allclose(o, torch.tensor([[1.0, 2.0, 3.0]]).expand(3, 3))
    assert torch.allclose(d_each.norm(dim=-1), torch.ones(3), atol=1e-6)


def test_image_rays_row_major_on_a_non_square_image():
    """image_rays of an H=3, W=5 image: ray k is pixel (row k // W, col k % W), H*W rays in all."""
    h, w = 3, 5
    _, d = image_rays(torch.eye(4), torch.tensor([FX, FY, CX, CY]), h, w)
    k = torch.arange(h * w)
    assert d.shape == (h * w, 3)
    assert torch.allclose(d.double(), _expected_cam_dirs(k // w, k % w), atol=1e-6)


def test_ray_aabb_slab_distances():
    """Box [-1, 1]^3. From (-3, 0, 0) along +x: enter at 2, leave at 4. From (0.5, 0, 0) (inside) along
    +x: t_near clamps to 0, t_far = 0.5. From (-3, 0, 0) along the diagonal (1, 1, 0)/sqrt2: enters
    when x = -1 (t = 2 sqrt2) and leaves when y = 1 (t = sqrt2)... i.e. it misses (t_far <= t_near)."""
    aabb = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    o = torch.tensor([[-3.0, 0.0, 0.0], [0.5, 0.0, 0.0], [-3.0, 0.0, 0.0]])
    s = 1.0 / math.sqrt(2.0)
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [s, s, 0.0]])
    tn, tf = ray_aabb(o, d, aabb)
    assert torch.allclose(tn[:2], torch.tensor([2.0, 0.0]), atol=1e-6)
    assert torch.allclose(tf[:2], torch.tensor([4.0, 0.5]), atol=1e-6)
    assert float(tf[2]) <= float(tn[2])


F, W, H, NEAR = 50.0, 64.0, 48.0, 2.0  # W != H and near != 1


def _ndc_closed_form(x):
    ax, ay = -2.0 * F / W, -2.0 * F / H
    z = x[:, 2]
    return torch.stack([ax * x[:, 0] / z, ay * x[:, 1] / z, 1.0 + 2.0 * NEAR / z], -1)


def test_world_to_ndc_and_back_with_near_two():
    """METHOD 1.5: (a_x x/z, a_y y/z, 1 + 2 near / z) with a_x = -2f/W, a_y = -2f/H; z = -near -> -1."""
    x = torch.tensor([[0.3, -0.2, -2.0], [1.0, 0.5, -4.0], [-0.7, 0.9, -10.0]], dtype=torch.float64)
    p = world_to_ndc(x, F, W, H, near=NEAR)
    assert torch.allclose(p, _ndc_closed_form(x), atol=1e-12)
    assert abs(float(p[0, 2]) + 1.0) < 1e-12
    # inverse on hand-picked NDC points: z = 2 near / (z_ndc - 1), x = z x_ndc / a_x
    q = torch.tensor([[0.1, -0.3, 0.0], [-0.5, 0.25, 0.5]], dtype=torch.float64)
    z = 2.0 * NEAR / (q[:, 2] - 1.0)  # -4, -8
    want = torch.stack([z * q[:, 0] / (-2.0 * F / W), z * q[:, 1] / (-2.0 * F / H), z], -1)
    assert torch.allclose(ndc_to_world(q, F, W, H, near=NEAR), want, atol=1e-12)


def test_ndc_jacobian_near_two_matches_central_differences():
    """d ndc / d world of the hand-written map, by central differences (h = 1e-6), near = 2."""
    x = torch.tensor([[0.3, -0.2, -2.5], [1.0, 0.5, -4.0]], dtype=torch.float64)
    jac = ndc_jacobian(x, F, W, H, near=NEAR)
    eps = 1e-6
    for j in range(3):
        dx = torch.zeros_like(x)
        dx[:, j] = eps
        col = (_ndc_closed_form(x + dx) - _ndc_closed_form(x - dx)) / (2 * eps)
        assert torch.allclose(jac[:, :, j], col, atol=1e-6)


def test_ndc_rays_near_two_trace_the_world_ray():
    """o_ndc lies on z_ndc = -1 and o_ndc + s d_ndc (s in [0, 1)) equals the hand-written NDC map of
    world points of the same ray: with s = 1 - near / z_world ... checked on the world points at
    z = -3 and z = -7 (s = 1 + 2 near / z reaches z_ndc there) and at infinity (s -> 1)."""
    o = torch.tensor([[0.2, -0.1, 0.5], [-0.3, 0.4, 0.0]], dtype=torch.float64)
    d = torch.tensor([[0.1, 0.2, -1.0], [-0.3, -0.1, -1.0]], dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    o_ndc, d_ndc = ndc_rays(o, d, F, W, H, near=NEAR)
    assert torch.allclose(o_ndc[:, 2], torch.full((2,), -1.0, dtype=torch.float64), atol=1e-12)
    for z in (-3.0, -7.0):
        t = (z - o[:, 2]) / d[:, 2]
        p = _ndc_closed_form(o + t[:, None] * d)
        s = (p[:, 2] - o_ndc[:, 2]) / d_ndc[:, 2]
        assert torch.allclose(o_ndc + s[:, None] * d_ndc, p, atol=1e-9)
    # the point at infinity: x_ndc -> a_x d_x / d_z, z_ndc -> 1
    inf = torch.stack([-2 * F / W * d[:, 0] / d[:, 2], -2 * F / H * d[:, 1] / d[:, 2],
                       torch.ones(2, dtype=torch.float64)], -1)
    assert torch.allclose(o_ndc + d_ndc, inf, atol=1e-9)


def test_look_at_axes_closed_form():
    """eye (3, 0, 0) -> origin with the default up +z: z = (1, 0, 0), x = up x z = (0, 1, 0),
    y = z x x = (0, 0, 1). Also eye (0, -2, 0), up +z: x = (1, 0, 0), y = (0, 0, 1), z = (0, -1, 0)."""
    m = look_at((3.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    want = torch.tensor([[0.0, 0.0, 1.0, 3.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert torch.allclose(m, want, atol=1e-6)
    m2 = look_at((0.0, -2.0, 0.0), (0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0))
    want2 = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, -2.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert torch.allclose(m2, want2, atol=1e-6)


def test_orbit_path_radius_elevation_azimuth_and_times():
    """4 frames, centre c, radius 2, elevation 30 deg about +z: |eye - c| = 2, height = 2 sin 30 = 1,
    horizontal radius 2 cos 30 = sqrt3, consecutive azimuths 90 deg apart (frame 3 is not frame 0), each
    camera's -z axis points at c, times = (0, 1/3, 2/3, 1)."""
    c = torch.tensor([0.5, -0.25, 0.1])
    poses, times = orbit_path(c.tolist(), 2.0, 30.0, 4)
    rel = poses[:, :3, 3] - c
    assert torch.allclose(rel.norm(dim=-1), torch.full((4,), 2.0), atol=1e-5)
    assert torch.allclose(rel[:, 2], torch.ones(4), atol=1e-5)
    assert torch.allclose(rel[:, :2].norm(dim=-1), torch.full((4,), math.sqrt(3.0)), atol=1e-5)
    horiz = rel[:, :2] / rel[:, :2].norm(dim=-1, keepdim=True)
    cos_next = (horiz * horiz.roll(-1, 0)).sum(-1)  # includes frame 3 -> frame 0
    assert torch.allclose(cos_next, torch.zeros(4), atol=1e-5)
    assert torch.allclose(-poses[:, :3, 2], -rel / 2.0, atol=1e-5)
    assert torch.allclose(times, torch.tensor([0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]))
    # counter-clockwise about +z from +x (azimuth 0), and from +y with a start azimuth of 90 degrees
    flat, _ = orbit_path((0.0, 0.0, 0.0), 2.0, 0.0, 4)
    torch.testing.assert_close(flat[:, :3, 3], torch.tensor([[2.0, 0, 0], [0, 2, 0], [-2, 0, 0], [0, -2, 0]]),
                               atol=1e-5, rtol=0)
    turned, _ = orbit_path((0.0, 0.0, 0.0), 2.0, 0.0, 4, start_azimuth_deg=90.0)
    torch.testing.assert_close(turned[0, :3, 3], torch.tensor([0.0, 2.0, 0.0]), atol=1e-5, rtol=0)


def _hand_pose(eye, x, y, z):
    m = torch.eye(4, dtype=torch.float64)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = (torch.tensor(v, dtype=torch.float64) for v in (x, y, z, eye))
    return m


def test_path_defaults_on_hand_built_cameras():
    """World up is +y here (not the +z fallback). Cameras at centre c = (1, 2, -1) + r_i (cos a, 0, sin a)
    at elevation 0, radii (1, 2, 2, 2, 10) (median 2, mean 3.4), each looking at c with y = +y:
    centre c, radius 2, elevation 0, up (0, 1, 0)."""
    c = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    poses = []
    for k, r in enumerate((1.0, 2.0, 2.0, 2.0, 10.0)):
        a = 2 * math.pi * k / 5
        back = torch.tensor([math.cos(a), 0.0, math.sin(a)], dtype=torch.float64)  # z axis: away from c
        y = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
        x = torch.linalg.cross(y, back)
        poses.append(_hand_pose((c + r * back).tolist(), x.tolist(), y.tolist(), back.tolist()))
    d = path_defaults(torch.stack(poses))
    assert torch.allclose(d["center"].double(), c, atol=1e-5)
    assert abs(d["radius"] - 2.0) < 1e-6
    assert abs(d["elevation_deg"]) < 1e-4
    assert torch.allclose(d["up"], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_spiral_path_phase_and_sense():
    """Reference cameras at (+-1, +-0.5, 5) looking down -z with y up (mean camera: x right, y up at
    (0, 0, 5)). Frame k sits at mean @ (r_x cos a, -r_y sin a, -r_z sin(a/2)), a = 2 pi k / F: with
    F = 4, frame 0 is to the right (+x, y = 0) and frame 1 below (y < 0, x = 0); times 0..1."""
    ref = torch.stack([_hand_pose((sx, sy, 5.0), (1, 0, 0), (0, 1, 0), (0, 0, 1))
                       for sx in (-1.0, 1.0) for sy in (-0.5, 0.5)])
    poses, times = spiral_path(ref, 4, n_rotations=1, radius_scale=1.0)
    e = poses[:, :3, 3].double()
    assert float(e[0, 0]) > 0.9 and abs(float(e[0, 1])) < 1e-5
    assert float(e[1, 1]) < -0.4 and abs(float(e[1, 0])) < 1e-5
    assert torch.allclose(times, torch.tensor([0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]))


def test_spiral_path_moves_towards_the_scene_on_its_depth_axis():
    """Reference cameras at (+-1, +-0.5, 5 +- 0.5) looking down -z (mean camera at (0, 0, 5), depth offsets 0.5, so
    r_z = 0.5 at radius_scale 1): frame k's local z is -r_z sin(a / 2), a = 2 pi k / 4, i.e. the camera moves
    forward, down -z, to z = 5 - 0.5 sin(pi / 4), 5 - 0.5, 5 - 0.5 sin(3 pi / 4) after z = 5."""
    ref = torch.stack([_hand_pose((sx, sy, 5.0 + sz), (1, 0, 0), (0, 1, 0), (0, 0, 1))
                       for sx in (-1.0, 1.0) for sy in (-0.5, 0.5) for sz in (-0.5, 0.5)])
    poses, _ = spiral_path(ref, 4, n_rotations=1, radius_scale=1.0)
    z = poses[:, 2, 3].double()
    s = math.sin(math.pi / 4)
    assert torch.allclose(z, torch.tensor([5.0, 5.0 - 0.5 * s, 4.5, 5.0 - 0.5 * s], dtype=torch.float64), atol=1e-5)


def test_spiral_of_a_parallel_forward_rig_looks_along_its_axis():
    """Six cameras on a plane through the origin, all looking down -z (parallel axes: no centre, the origin stands
    in, at the mean camera): the spiral looks along the rig's axis from behind it, not across the rig (a 360-degree
    capture's median view, taken when the focus is at the mean camera, turned it sideways)."""
    ref = torch.stack([_hand_pose((sx, sy, 0.0), (1, 0, 0), (0, 1, 0), (0, 0, 1))
                       for sx in (-1.0, 0.0, 1.0) for sy in (-0.5, 0.5)])
    poses, _ = spiral_path(ref, 8)
    view = -poses[:, :3, 2].double()
    assert float(view[:, 2].max()) < -0.7, view  # every frame looks down -z, as the rig does
    assert float(poses[:, 2, 3].min()) > 0.0  # from behind the rig's plane


def _ring(azimuths_deg, elevation_deg=30.0, distance=4.0, centre=(0.5, -0.2, 0.3)):
    """Cameras on a ring about ``centre`` (world up +z), each looking at it."""
    c = torch.tensor(centre, dtype=torch.float64)
    el = math.radians(elevation_deg)
    eyes = [c + distance * torch.tensor([math.cos(el) * math.cos(math.radians(a)),
                                         math.cos(el) * math.sin(math.radians(a)), math.sin(el)], dtype=torch.float64)
            for a in azimuths_deg]
    return torch.stack([look_at(e, c, (0, 0, 1), dtype=torch.float64) for e in eyes]), c


@pytest.mark.parametrize("azimuths, mid", [(range(0, 360, 30), 0.0), (range(60, 121, 10), 90.0)])
def test_spiral_of_a_360_capture_circles_a_median_view(azimuths, mid):
    """Cameras all round (or on a 60-degree arc) at elevation 30, distance 4: the spiral stays at about that
    distance and elevation (not above the scene, where the fanned-out viewing axes average to), looks at the
    centre, and sits at the mean azimuth (the first camera's, 0, when the ring is whole)."""
    ref, c = _ring(list(azimuths))
    poses, _ = spiral_path(ref, 24)
    rel = poses[:, :3, 3].double() - c
    dist = rel.norm(dim=-1)
    assert float(dist.min()) > 0.85 * 4.0 and float(dist.max()) < 1.15 * 4.0
    elev = torch.rad2deg(torch.asin(rel[:, 2] / dist))
    assert float((elev - 30.0).abs().max()) < 12.0
    aim = -rel / dist[:, None]
    assert float(((-poses[:, :3, 2].double()) * aim).sum(-1).min()) > 1.0 - 1e-6
    azimuth = torch.rad2deg(torch.atan2(rel[:, 1], rel[:, 0])).mean()
    assert abs(float(azimuth) - mid) < 10.0
