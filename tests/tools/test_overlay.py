"""Track overlays: projection matches the ray generator, drawing lands where the point projects."""
import numpy as np
import torch

from kinfield.geometry import pixel_rays
from kinfield.render.overlay import draw_tracks, positions_at, project_points


def _camera():
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([0.2, -0.1, 4.0])
    return c2w, torch.tensor([30.0, 30.0, 16.0, 12.0])


def test_projection_inverts_pixel_rays():
    c2w, intr = _camera()
    rows, cols = torch.tensor([3, 10, 20]), torch.tensor([5, 16, 30])
    o, d = pixel_rays(c2w, intr, rows, cols)
    pts = (o + 2.5 * d).numpy()
    uv = project_points(pts, c2w.numpy(), intr.numpy())
    np.testing.assert_allclose(uv, np.stack([cols, rows], -1), atol=1e-4)
    behind = project_points(np.array([[0.0, 0.0, 10.0]]), c2w.numpy(), intr.numpy())
    assert np.isnan(behind).all()


def test_tracks_are_interpolated_and_drawn():
    c2w, intr = _camera()
    o, d = pixel_rays(c2w, intr, torch.tensor([12]), torch.tensor([16]))
    p = (o + 3.0 * d).numpy()[0]
    tracks = {"times": np.array([0.0, 1.0]), "positions": np.stack([p[None] - 0.1, p[None] + 0.1])}
    np.testing.assert_allclose(positions_at(tracks, 0.5)[0], p, atol=1e-9)
    frame = np.zeros((24, 32, 3), np.uint8)
    out = draw_tracks(frame, c2w, intr, tracks, 0.5)
    assert out[12, 16].any() and not out[0, 0].any() and not frame.any()


def test_vector_maps_code_direction_and_magnitude():
    from kinfield.render.video import colorize_vectors

    v = np.zeros((2, 2, 2))
    v[0, 0] = [1.0, 0.0]  # +x: red hue, full value
    v[0, 1] = [0.0, 0.0]  # still: black
    v[1, 0] = [-1.0, 0.0]  # -x: cyan-ish hue
    v[1, 1] = np.nan  # empty pixel: black
    img = colorize_vectors([v])[0]
    assert tuple(img[0, 0]) == (255, 0, 0)
    assert not img[0, 1].any() and not img[1, 1].any()
    assert img[1, 0, 0] == 0 and img[1, 0, 1] > 200 and img[1, 0, 2] > 200


def test_kinematic_outputs_render_for_a_model_with_a_kinematic_field():
    from kinfield.fields import FieldConfig, KinematicConfig, KinematicField
    from kinfield.nn import HashGridConfig
    from kinfield.render import OccupancyConfig, RenderConfig, SceneModel
    from kinfield.render.video import render_frames

    small = HashGridConfig(n_levels=2, log2_hashmap_size=10)
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    f = FieldConfig(grid=small, density_bias=3.0)
    model = SceneModel(aabb, f, f, RenderConfig(step_size=0.2, occupancy=OccupancyConfig(resolution=8)))
    model.kinematic = KinematicField(aabb, 0.1, KinematicConfig(grid=small))
    c2w, intr = _camera()
    frames = render_frames(model, c2w[None], torch.tensor([0.5]), torch.tensor([8.0, 8.0, 4.0, 3.0]), 6, 8,
                           torch.ones(3), outputs=("velocity", "jerk"), progress=False)
    assert frames["velocity"][0].shape == (6, 8, 3) and frames["velocity"][0].dtype == np.uint8
