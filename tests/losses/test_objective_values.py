"""Values of the kinematic objective's glue (hop draws, ray masks, normalisations, units) on hand-built step
contexts: each term against its formula written out here, so that a dropped factor, mask or sign shows."""
import math
from types import SimpleNamespace

import pytest
import torch

from kinfield.fields import KinematicConfig, KinematicField
from kinfield.losses.kinematic import KinConfig, KinematicObjective
from kinfield.losses.photometric import charbonnier
from kinfield.nn import HashGridConfig
from kinfield.render.composite import dynamic_probability
from kinfield.render.renderer import Samples

AABB = torch.tensor([-1.0, -1, -1, 1, 1, 1])
SMALL = HashGridConfig(n_levels=2, log2_hashmap_size=10, base_resolution=4, per_level_scale=1.5)


def objective(dt=0.1, **cfg):
    return KinematicObjective(KinConfig(**cfg), SimpleNamespace(kinematic=SimpleNamespace(order=3)), dt)


def samples(ray_ids, sigma_s, sigma_d, w_d, n_rays, rgb_d=None, spacing=0.1):
    """Packed samples with the fields' values given (positions / directions / times unused here)."""
    m = ray_ids.shape[0]
    t0 = torch.arange(m, dtype=torch.float32) * spacing
    rgb_d = torch.rand(m, 3) if rgb_d is None else rgb_d
    return Samples(ray_ids, t0, t0 + spacing, torch.zeros(m, 3), torch.zeros(m), torch.zeros(m, 3), sigma_s,
                   torch.zeros(m, 3), sigma_d, rgb_d, torch.zeros(m), w_d, n_rays)


# ----------------------------------------------------------------------------------------------- hop draws
def test_a_hop_past_the_sequence_end_is_flipped_not_shortened():
    """dt = 0.05, every time 0.06 (1.2 frames after the start), hops of 1 or 2 frames: -2 would leave [0, 1] and is
    flipped to +2 (METHOD 2.4), never shortened to -1."""
    obj = objective(dt=0.05, hop_max_start=3.0, hop_max_end=3.0)
    torch.manual_seed(0)
    h = obj.draw_hops(torch.full((2000,), 0.06), 0)
    assert set(h.unique().tolist()) == {-1.0, 1.0, 2.0}
    assert int((h == 2).sum()) > 1.5 * int((h == 1).sum())  # +2: the +2 draws and the flipped -2 ones (half)


def test_the_hop_range_ramps_linearly():
    obj = objective(dt=0.05, hop_max_start=2.0, hop_max_end=3.0, hop_ramp_steps=100)
    assert [obj.hop_max(s) for s in (0, 50, 100, 400)] == [2.0, 2.5, 3.0, 3.0]
    torch.manual_seed(0)
    h = obj.draw_hops(torch.full((4000,), 0.5), 50)  # |h| = floor(1 + U * 1.5): 2 for U >= 2/3
    assert math.isclose(float((h.abs() == 2).float().mean()), 1 / 3, abs_tol=0.03)


@pytest.mark.parametrize("n_frames", [21, 31, 150])
def test_every_frame_reaches_both_ends_of_the_sequence_in_float32(n_frames):
    """Frame times k dt in float32 (1 - k dt) / dt rounds below the whole number of frames left for many k: the
    longest hop from frame k must still be n - 1 - k frames forward and k frames back."""
    dt = 1.0 / (n_frames - 1)
    obj = objective(dt=dt, hop_max_start=2.0 * n_frames, hop_max_end=2.0 * n_frames)
    k = torch.arange(n_frames)
    times = (k * dt).float().repeat(200)
    torch.manual_seed(0)
    h = obj.draw_hops(times, 0).view(200, n_frames)
    assert torch.equal(h.max(0).values[:-1], (n_frames - 1 - k[:-1]).float())  # (from the last frame: all back)
    assert torch.equal(h.min(0).values[1:], -k[1:].float())
    assert ((times + h.reshape(-1) * dt >= -1e-6) & (times + h.reshape(-1) * dt <= 1 + 1e-6)).all()


# ----------------------------------------------------------------------------------------------- per-ray terms
def _hand_context(obj, n_rays=3):
    torch.manual_seed(1)
    ray_ids = torch.tensor([0, 0, 1, 1, 1, 2])
    m = ray_ids.shape[0]
    s = samples(ray_ids, torch.rand(m) * 3, torch.rand(m) * 3, torch.rand(m), n_rays)
    idx = torch.tensor([0, 2, 3, 5])  # the dynamic samples the warps move
    q = torch.randn(idx.shape[0], 3, 3)
    mask = torch.tensor([1.0, 0.0, 0.5])
    ctx = {"render": {"samples": s}, "step": 10, "target": torch.rand(n_rays, 3),
           "kin_sel": {"idx": idx, "n_rays": n_rays, "n_samples": m, "ray_mask": mask}, "kin_q": q}
    return ctx, s, idx, q, mask


def test_static_motion_is_the_static_share_times_the_per_frame_displacement():
    obj = objective(dt=0.1)
    ctx, s, idx, q, _ = _hand_context(obj)
    share = s.sigma_s[idx] / (s.sigma_s[idx] + s.sigma_d[idx])
    want = (share * (q[:, 0] * 0.1).abs().sum(-1)).mean()
    torch.testing.assert_close(obj.static_motion_loss(ctx), want)


def test_the_warped_photometric_loss_is_weighted_by_each_rays_dynamic_probability():
    obj = objective()
    ctx, _, _, _, mask = _hand_context(obj)
    rgb = torch.rand(3, 3)
    ctx["kin_warp_hop"] = {"rgb": rgb}
    want = (mask * charbonnier(rgb, ctx["target"]).mean(-1)).mean()
    torch.testing.assert_close(obj.photo_loss(ctx, "hop"), want)
    ctx["kin_sel"]["ray_mask"] = torch.zeros(3)  # no ray sees dynamic content: nothing to warp
    assert float(obj.photo_loss(ctx, "hop")) == 0.0


def test_consistency_is_the_weighted_error_summed_along_rays_and_averaged_over_rays():
    obj = objective(consistency_density_weight=0.5)
    ctx, s, idx, _, _ = _hand_context(obj)
    sigma_w, rgb_w = torch.rand(4) * 3, torch.rand(4, 3)
    ctx["kin_warp_hop"] = {"sigma": sigma_w, "rgb_samples": rgb_w}
    delta = 0.1
    alpha_ref, alpha_w = 1 - torch.exp(-s.sigma_d[idx] * delta), 1 - torch.exp(-sigma_w * delta)
    err = charbonnier(rgb_w, s.rgb_d[idx]).mean(-1) + 0.5 * charbonnier(alpha_w[:, None], alpha_ref[:, None])[:, 0]
    want = (s.w_d[idx] * err).sum() / 3  # 3 rays, 4 samples
    torch.testing.assert_close(obj.consistency_loss(ctx), want)


def test_ray_motion_is_the_dynamic_weighted_per_frame_displacement_along_each_ray():
    obj = objective(dt=0.1)
    ctx, s, idx, q, _ = _hand_context(obj)
    moved = obj.ray_motion(ctx)
    per_sample = s.w_d[idx] * q[:, 0].norm(dim=-1) * 0.1
    want = torch.zeros(3).index_add_(0, s.ray_ids[idx], per_sample)
    torch.testing.assert_close(moved, want)


def test_dynamic_probability_is_the_dynamic_share_of_each_rays_weights():
    ray_ids = torch.tensor([0, 0, 1, 2, 2])
    sigma_s, sigma_d = torch.tensor([1.0, 0.0, 3.0, 2.0, 0.0]), torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0])
    w_d = torch.tensor([0.2, 0.5, 0.4, 0.3, 0.1])
    p = dynamic_probability(samples(ray_ids, sigma_s, sigma_d, w_d, 4))
    # ray 0: 0.2 * 3/4 + 0.5 * 1; ray 1: 0.4 * 1/4; ray 2: no dynamic density; ray 3: no samples
    torch.testing.assert_close(p, torch.tensor([0.65, 0.1, 0.0, 0.0]))


# ----------------------------------------------------------------------------------------------- the field's units
def test_each_order_is_scaled_to_move_a_point_by_the_motion_scale_in_one_frame():
    """Order k's raw O(1) output times ``order_scales[k]`` times dt^k is ``motion_scale * extent`` for every k."""
    dt = 0.05
    kin = KinematicField(AABB, dt, KinematicConfig(grid=SMALL, motion_scale=0.02))
    per_frame = kin.order_scales.double() * dt ** torch.arange(1, 4, dtype=torch.float64)
    torch.testing.assert_close(per_frame, torch.full((3,), 0.02 * 2.0, dtype=torch.float64), rtol=1e-6, atol=0)


def test_the_time_scale_stretches_the_fields_time_axis():
    """``time_scale`` multiplies time before the grid: 0 makes the field constant in time, 0.5 reads time t where a
    field of scale 1 (same weights) reads t / 2."""
    def field(time_scale):
        torch.manual_seed(0)
        kin = KinematicField(AABB, 0.1, KinematicConfig(grid=SMALL, time_scale=time_scale))
        torch.nn.init.normal_(kin.mlp.net[-1].weight)
        torch.nn.init.uniform_(kin.encoding.params, -1, 1)
        return kin

    x = torch.rand(6, 3) * 2 - 1
    t0, t1 = torch.full((6,), 0.2), torch.full((6,), 0.9)
    still = field(0.0)
    torch.testing.assert_close(still(x, t0), still(x, t1))
    half, full = field(0.5), field(1.0)
    assert not torch.allclose(full(x, t0), full(x, t1))
    torch.testing.assert_close(half(x, t1), full(x, t1 * 0.5))
