"""NDC maps of forward-facing captures against closed-form properties."""
import torch

from kinfield.geometry import pixel_rays
from kinfield.geometry.ndc import ndc_jacobian, ndc_rays, ndc_to_world, world_to_ndc
from kinfield.render.space import SceneSpace

F, W, H = 50.0, 64.0, 48.0


def _points(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 2.0
    x[:, 2] = -1.0 - 9.0 * torch.rand(n, generator=g, dtype=torch.float64)  # in front of the camera, z < -near
    return x


def test_round_trip_and_near_plane():
    x = _points()
    assert torch.allclose(ndc_to_world(world_to_ndc(x, F, W, H), F, W, H), x, atol=1e-9)
    near = torch.tensor([[0.3, -0.2, -1.0]], dtype=torch.float64)
    assert abs(float(world_to_ndc(near, F, W, H)[0, 2]) + 1.0) < 1e-12  # near plane -> z_ndc = -1


def test_jacobian_matches_autograd():
    x = _points(5)
    jac = ndc_jacobian(x, F, W, H)
    for i in range(5):
        auto = torch.autograd.functional.jacobian(lambda p: world_to_ndc(p[None], F, W, H)[0], x[i])
        assert torch.allclose(jac[i], auto, atol=1e-10)


def test_ndc_rays_trace_the_world_ray():
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 3] = torch.tensor([0.1, -0.05, 0.2], dtype=torch.float64)
    intr = torch.tensor([F, F, W / 2, H / 2], dtype=torch.float64)
    rows, cols = torch.tensor([0, 10, 47]), torch.tensor([0, 30, 63])
    o, d = pixel_rays(c2w.float(), intr.float(), rows, cols)
    o, d = o.double(), d.double()
    o_ndc, d_ndc = ndc_rays(o, d, F, W, H)
    for s in (0.0, 0.3, 0.9):  # every point of the NDC segment is a point of the world ray
        p = ndc_to_world(o_ndc + s * d_ndc, F, W, H)
        off = p - o
        cross = torch.linalg.cross(off, d)
        assert float(cross.norm(dim=-1).max()) < 1e-6
        assert bool(((off * d).sum(-1) > 0).all())
    assert torch.allclose(o_ndc[:, 2], torch.full((3,), -1.0, dtype=torch.float64))


def test_space_identity_and_ndc_move():
    world = SceneSpace()
    x = torch.randn(10, 3)
    assert world.to_field(x) is x and not world.is_ndc
    assert torch.allclose(world.move(x, torch.ones(10, 3)), x + 1)
    space = SceneSpace((F, W, H, 1.0))
    xw = _points(10).float()
    d = torch.randn(10, 3) * 0.1
    moved = space.move(space.to_field(xw), d)
    assert torch.allclose(space.to_world(moved), xw + d, atol=1e-4)
    steps = space.world_step(xw, 0.01)
    assert steps.shape == (10,) and bool((steps > 0).all())
    # restored from a state dict without knowing the dataset
    other = SceneSpace()
    other.load_state_dict(space.state_dict())
    assert other.is_ndc and torch.equal(other.to_field(xw), space.to_field(xw))
    # and back to world space (a whole-model load replaces the buffer the same way)
    other.load_state_dict(SceneSpace().state_dict())
    assert not other.is_ndc and other.to_field(xw) is xw
