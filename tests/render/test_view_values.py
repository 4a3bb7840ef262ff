"""Values of what the viewer sees, each against a hand-computed answer: depth and vector colour maps, the
visibility threshold, track interpolation, the occupancy grid's axes, NDC ray directions, deterministic image
renders and transmittance pruning."""
import math

import numpy as np
import torch

from kinfield.render import OccupancyConfig, OccupancyGrid
from kinfield.render.overlay import positions_at
from kinfield.render.space import SceneSpace
from kinfield.render.video import colorize_depth, colorize_vectors, turbo

from test_render_values import Slab, small_model


def test_depth_colours_run_from_turbo_red_near_to_turbo_dark_far():
    d = np.array([[2.0, 6.0, 4.0]], np.float32)
    img = colorize_depth(d, None, near=2.0, far=6.0)
    def u8(x):
        return tuple(int(c) for c in np.round(turbo(np.array([x]))[0] * 255))

    assert tuple(img[0, 0]) == u8(1.0) == (144, 13, 0)  # near: the warm end of Turbo
    assert tuple(img[0, 1]) == u8(0.0) == (35, 23, 27)  # far: the dark end
    assert tuple(img[0, 2]) == u8(0.5)


def test_pixels_without_a_surface_are_drawn_black():
    """A pixel's depth is drawn only where the render is at least half opaque."""
    d = np.array([[2.0, 6.0, 4.0]], np.float32)
    img = colorize_depth(d, np.array([[1.0, 0.3, 0.5]], np.float32), 2.0, 6.0)
    assert (img[0, 1] == 0).all() and img[0, 0].any() and img[0, 2].any()


def test_vector_brightness_is_the_magnitude_over_the_99th_percentile():
    v = np.zeros((1, 2, 2))
    v[0, 0], v[0, 1] = [1.0, 0.0], [0.5, 0.0]  # both along +x: the same hue (red)
    img = colorize_vectors([v])[0]
    scale = np.percentile([1.0, 0.5], 99)
    assert int(img[0, 1, 0]) == int(0.5 / scale * 255 + 0.5) == 128


def test_track_positions_between_two_times_are_interpolated_linearly():
    tracks = {"times": np.array([0.0, 1.0]), "positions": np.array([[[0.0, 0, 0]], [[1.0, 0, 0]]])}
    np.testing.assert_allclose(positions_at(tracks, 0.25)[0], [0.25, 0.0, 0.0])
    np.testing.assert_allclose(positions_at(tracks, 1.0)[0], [1.0, 0.0, 0.0])


def test_the_occupancy_grid_marks_the_cells_on_the_side_the_density_is():
    grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), OccupancyConfig(resolution=8, warmup_steps=10))
    grid.update(0, lambda x: (x[:, 0] > 0.5).float())  # density only where x > 0.5
    pts = torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.0, 0.9], [0.0, 0.9, 0.0], [-0.9, 0.0, 0.0]])
    assert grid.occupied(pts).tolist() == [True, False, False, False]


def test_ndc_ray_directions_are_unit_vectors():
    """Step sizes and the distortion loss assume unit field directions."""
    space = SceneSpace((50.0, 64.0, 48.0, 1.0))
    d = torch.nn.functional.normalize(torch.tensor([[0.1, 0.2, -1.0], [0.0, 0.0, -1.0], [-0.3, 0.1, -1.0]]), dim=-1)
    _, dn = space.rays(torch.zeros(3, 3), d)
    torch.testing.assert_close(dn.norm(dim=-1), torch.ones(3))


def _slab_model():
    model = small_model([-1.0, -1, -1, 1, 1, 1], 0.05)
    model.static = Slab(3.0, (0.5, 0.2, 0.7), -0.6, 0.0)
    model.dynamic = Slab(0.0, (0, 0, 0), 5, 6)
    return model


def test_image_renders_are_deterministic():
    """Evaluation and videos march at fixed sample positions (no stratified jitter): two renders under different
    seeds are identical."""
    model = _slab_model()
    c2w = torch.eye(4)
    c2w[2, 3] = 3.0
    renders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        with torch.no_grad():
            renders.append(model.render_image(c2w, torch.tensor([8.0, 8.0, 4.0, 4.0]), 8, 8, 0.5, torch.ones(3)))
    assert renders[0]["opacity"].max() > 0.3  # the slab is in view
    assert torch.equal(renders[0]["rgb"], renders[1]["rgb"]) and torch.equal(renders[0]["depth"], renders[1]["depth"])


def test_samples_behind_an_opaque_surface_are_pruned_in_training():
    """An opaque slab (sigma 1000 over 0.6, step 0.05) in front of nothing: with gradients on, every sample past the
    first (transmittance e^-50) is pruned; without pruning (no_grad renders) the ray keeps its 12 slab samples."""
    model = _slab_model()
    model.static = Slab(1000.0, (0.5, 0.5, 0.5), -0.6, 0.0)
    o, d = torch.tensor([[0.1, 0.2, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    out = model.render_rays(o, d, torch.zeros(1), torch.zeros(3))
    with torch.no_grad():
        full = model.render_rays(o, d, torch.zeros(1), torch.zeros(3))
    assert int(out["n_samples"]) == 1 and int(full["n_samples"]) > 10
    assert math.isclose(float(out["opacity"]), 1.0, abs_tol=1e-6)
