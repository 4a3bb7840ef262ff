"""Prior losses: median-normalised depth, projection, flow from expected points, masks, entropy."""
import dataclasses
from types import SimpleNamespace

import torch

from kinfield.geometry import pixel_rays
from kinfield.losses.priors import PriorConfig, PriorObjective, dynamic_entropy_loss, median_normalize, project
from kinfield.render.renderer import Samples
from kinfield.render.space import SceneSpace


def test_median_normalize_is_affine_invariant():
    x = torch.rand(100) * 3
    assert torch.allclose(median_normalize(2.5 * x + 7.0), median_normalize(x), atol=1e-5)
    assert abs(float(median_normalize(x).median())) < 1e-6


def _camera(x=0.0):
    c2w = torch.eye(4)
    c2w[0, 3] = x
    return c2w


def test_project_inverts_pixel_rays():
    intr = torch.tensor([40.0, 40.0, 16.0, 12.0])
    rows, cols = torch.tensor([0, 5, 23]), torch.tensor([0, 17, 31])
    o, d = pixel_rays(_camera(0.3), intr, rows, cols)
    uv = project(o + 2.7 * d, _camera(0.3).expand(3, 4, 4), intr.expand(3, 4))
    assert torch.allclose(uv, torch.stack([cols + 0.5, rows + 0.5], -1).float(), atol=1e-4)


def _objective(split_poses, intr, extras, kinematic=None):
    model = SimpleNamespace(space=SceneSpace(), kinematic=kinematic)
    split = SimpleNamespace(poses=split_poses, intrinsics=intr, num_frames=split_poses.shape[0], extras=extras)
    return PriorObjective(PriorConfig(), model, split, frame_dt=0.5)


def _ctx_one_surface(depth_along_ray, frame, rows, cols, poses, intr, target=None):
    """A render whose every ray is fully absorbed by one static sample at ``depth_along_ray``."""
    o, d = pixel_rays(poses[frame], intr[frame], rows, cols)
    n = o.shape[0]
    ids = torch.arange(n)
    t0 = torch.full((n,), depth_along_ray)
    pos = o + d * t0[:, None]
    one, zero = torch.ones(n), torch.zeros(n)
    s = Samples(ids, t0, t0 + 0.01, pos, torch.zeros(n), d, one, torch.zeros(n, 3), zero, torch.zeros(n, 3),
                one, zero, n)
    batch = {"origins": o, "dirs": d, "frame": frame, "rows": rows, "cols": cols}
    return {"batch": batch, "render": {"samples": s, "rgb": torch.zeros(n, 3, requires_grad=True),
                                       "depth": t0}, "target": target}


def test_flow_loss_is_zero_for_the_true_camera_flow():
    intr = torch.tensor([[40.0, 40.0, 16.0, 12.0]]).expand(3, 4)
    poses = torch.stack([_camera(0.0), _camera(0.2), _camera(0.4)])
    frame = torch.tensor([0, 1, 1, 2])
    rows, cols = torch.tensor([3, 7, 12, 20]), torch.tensor([4, 9, 30, 2])
    ctx = _ctx_one_surface(3.0, frame, rows, cols, poses, intr)
    obj = _objective(poses, intr, {})
    pts = obj.expected_points(ctx, 1.0, 4)
    # true flow: project the seen point into the neighbouring cameras
    true = {}
    for kind, sign in (("fwd", 1), ("bwd", -1)):
        other = (frame + sign).clamp(0, 2)
        true[kind] = project(pts, poses[other], intr[other]) - torch.stack([cols + 0.5, rows + 0.5], -1).float()
    ok = {"fwd": (frame < 2).float(), "bwd": (frame > 0).float()}
    ctx["batch"].update({"flow_fwd": true["fwd"], "flow_fwd_mask": ok["fwd"], "flow_bwd": true["bwd"],
                         "flow_bwd_mask": ok["bwd"]})
    assert float(obj.flow_loss(ctx).detach()) < 1e-4
    ctx["batch"]["flow_fwd"] = true["fwd"] + 1.0  # one pixel off in x and y everywhere valid
    assert abs(float(obj.flow_loss(ctx).detach()) - float(ok["fwd"].mean())) < 1e-3  # mean over rays and x, y
    # a camera moving +x makes static content flow towards -x
    assert float(true["fwd"][0, 0]) < 0
    # a ray without samples (it hits nothing) has no flow target: its flow does not count
    ctx["batch"]["flow_fwd"] = true["fwd"].clone()
    ctx["batch"]["flow_bwd"] = true["bwd"].clone()
    s = ctx["render"]["samples"]
    ctx["render"]["samples"] = dataclasses.replace(s, **{
        f.name: getattr(s, f.name)[:3] for f in dataclasses.fields(s) if f.name != "n_rays"})  # ray 3 loses its sample
    assert float(obj.flow_loss(ctx).detach()) < 1e-4


def test_depth_masked_and_entropy_terms():
    intr = torch.tensor([[40.0, 40.0, 16.0, 12.0]])
    poses = _camera()[None]
    n = 32
    frame, rows, cols = torch.zeros(n, dtype=torch.long), torch.arange(n) % 24, torch.arange(n)
    ctx = _ctx_one_surface(2.0, frame, rows, cols, poses, intr, target=torch.rand(n, 3))
    obj = _objective(poses, intr, {"disp": None, "motion_mask": None})
    ctx["render"]["depth"] = torch.linspace(1, 3, n)
    ctx["batch"]["disp"] = 1.0 / torch.linspace(1, 3, n)  # monotone, not affine: small, non-zero loss
    small = float(obj.depth_loss(ctx))
    ctx["batch"]["disp"] = -(0.5 * torch.linspace(1, 3, n) + 4.0)  # affine in -depth: exact
    assert float(obj.depth_loss(ctx)) < 1e-10 < small
    ctx["batch"]["motion_mask"] = (torch.arange(n) < 8).float()
    ctx["render"]["rgb_static"] = ctx["target"].clone()
    ctx["render"]["rgb_dynamic"] = ctx["target"] + 0.1
    assert float(obj.masked_loss(ctx, "static")) == 0.0
    assert abs(float(obj.masked_loss(ctx, "dynamic")) - 0.01) < 1e-6
    # entropy: zero for a clean static/dynamic split, largest for an ambiguous one
    s = ctx["render"]["samples"]
    assert float(dynamic_entropy_loss(s, 2.0)) < 1e-4
    s.sigma_d = s.sigma_s * 2.0 ** 0.5 / (1 - 2.0 ** -0.5) * 0 + s.sigma_s * 2.41421356  # share^2 = 1/2
    assert abs(float(dynamic_entropy_loss(s, 2.0)) - float(torch.log(torch.tensor(2.0)))) < 1e-3


def test_sparse_depth_loss_vanishes_at_the_true_depth():
    intr = torch.tensor([[40.0, 40.0, 16.0, 12.0]])
    poses = _camera(0.5)[None]
    n = 6
    frame, rows, cols = torch.zeros(n, dtype=torch.long), torch.arange(n), torch.arange(n) * 3
    ctx = _ctx_one_surface(2.0, frame, rows, cols, poses, intr)
    d = ctx["batch"]["dirs"]
    z_true = -(d[:, 2] * 2.0)  # camera looks down -z: depth along its axis
    obj = _objective(poses, intr, {"sparse_depth": None})
    ctx["render"]["depth"] = torch.full((n,), 2.0)
    ctx["batch"]["sparse_depth"] = torch.where(torch.arange(n) % 2 == 0, z_true, torch.zeros(n))
    ctx["batch"]["sparse_depth_weight"] = torch.ones(n)
    assert float(obj.sparse_depth_loss(ctx)) < 1e-6
    ctx["render"]["depth"] = torch.full((n,), 2.5)  # 25 % too far: |z_sfm / z - 1| = 0.2
    assert abs(float(obj.sparse_depth_loss(ctx)) - 0.2) < 1e-4


def test_dynamic_sparsity_is_the_mean_dynamic_opacity_of_the_rays():
    from kinfield.losses.priors import dynamic_sparsity_loss
    from kinfield.render import composite_blended
    ids = torch.tensor([0, 0, 0, 2, 2])  # ray 1 has no samples
    t0 = torch.tensor([0.0, 0.1, 0.2, 0.0, 0.1])
    sigma_s = torch.tensor([0.0, 5.0, 0.0, 1.0, 0.0])
    sigma_d = torch.tensor([3.0, 0.0, 2.0, 0.0, 4.0], requires_grad=True)
    w_s, w_d, _ = composite_blended(sigma_s, sigma_d, t0, t0 + 0.1, ids, 3)
    n = ids.numel()
    s = Samples(ids, t0, t0 + 0.1, torch.zeros(n, 3), torch.zeros(n), torch.zeros(n, 3), sigma_s, torch.zeros(n, 3),
                sigma_d, torch.zeros(n, 3), w_s, w_d, 3)
    loss = dynamic_sparsity_loss(s)
    # ray 0: 1 - e^-0.3 in front, then 5*0.1 static, then the rest; ray 2: static first, then dynamic
    t = torch.exp(torch.tensor(-0.3))
    ray0 = (1 - t) + t * torch.exp(torch.tensor(-0.5)) * (1 - torch.exp(torch.tensor(-0.2)))
    ray2 = torch.exp(torch.tensor(-0.1)) * (1 - torch.exp(torch.tensor(-0.4)))
    torch.testing.assert_close(loss, (ray0 + ray2) / 3)
    loss.backward()
    assert (sigma_d.grad > 0).all()  # more dynamic density, more loss
    empty = Samples(*(x[:0] for x in (ids, t0, t0, s.positions, s.times, s.dirs, sigma_s, s.rgb_s, sigma_d, s.rgb_d,
                                       w_s, w_d)), 3)
    assert float(dynamic_sparsity_loss(empty).detach()) == 0.0


def test_flow_expected_point_averages_the_samples_in_ndc_then_maps_to_world():
    """METHOD 2.10: P = sum_k w_k x_k + (1 - sum_k w_k) x_last over a ray's NDC samples, then NDC -> world. On a
    half-transparent ray (weights 0.3 / 0.3 / 0.38 at NDC z 0, 0.5, 0.8; 2 % left at z 0.99) that point is about 3.8
    deep; averaging the world points instead gives about 13.6, the far remainder dragging it back."""
    size, focal = 256, 256.0
    space = SceneSpace((focal, size, size, 1.0))
    intr = torch.tensor([[focal, focal, size / 2, size / 2]])
    o, d = pixel_rays(torch.eye(4)[None], intr, torch.tensor([100]), torch.tensor([150]))
    on, dn = space.rays(o, d)
    mid = (torch.tensor([0.0, 0.5, 0.8, 0.99]) - on[0, 2]) / dn[0, 2]
    w_s = torch.tensor([0.3, 0.3, 0.38, 0.0])
    pos = on + dn * mid[:, None]
    zero = torch.zeros(4)
    samples = Samples(torch.zeros(4, dtype=torch.long), mid - 0.005, mid + 0.005, pos, zero, dn.expand(4, 3), w_s,
                      torch.zeros(4, 3), zero, torch.zeros(4, 3), w_s, zero, 1)
    pri = PriorObjective(PriorConfig(), SimpleNamespace(space=space, kinematic=None), SimpleNamespace(extras={}), 0.5)
    got = pri.expected_points({"render": {"samples": samples}, "batch": {"origins": o, "dirs": d}}, 1.0, 1)
    far = on + dn * (mid[-1] + 0.005)
    want = space.to_world((w_s[:, None] * pos).sum(0, keepdim=True) + 0.02 * far)
    torch.testing.assert_close(got, want)
    assert 3.5 < -float(got[0, 2]) < 4.1


def test_flow_and_depth_decay_count_the_steps_after_static_pretraining():
    """METHOD 2.10: the reference pre-trains the static field on its own counter, so the flow (and depth) weight
    is at full strength for the first 200 steps of the dynamic phase, whatever the pre-training length."""
    split = SimpleNamespace(extras={"flow_fwd": 1, "flow_bwd": 1, "disp": 1, "motion_mask": 1})  # (pre-training needs masks)
    for pre in (0, 100, 5000):
        terms = {t.name: t for t in PriorObjective(PriorConfig(static_pretrain_steps=pre), None, split, 0.5).terms()}
        for name in ("flow_prior", "depth_prior"):
            full = terms[name].weight
            assert terms[name].weight_at(pre - 1) == 0.0
            assert terms[name].weight_at(pre) == full
            assert terms[name].weight_at(pre + 199) == full
            assert abs(terms[name].weight_at(pre + 200) - full * PriorConfig().decay_rate) < 1e-12


def _naive_distortion(w, s0, s1, ray_ids, n_rays):
    """METHOD 2.13 literally: per ray, sum over every pair of samples and the intervals' own term; mean over rays."""
    total = 0.0
    for r in range(n_rays):
        k = ray_ids == r
        wr, m, width = w[k], 0.5 * (s0[k] + s1[k]), s1[k] - s0[k]
        total += float((wr[:, None] * wr[None, :] * (m[:, None] - m[None, :]).abs()).sum() + (wr**2 * width).sum() / 3)
    return total / n_rays


def test_distortion_loss_is_the_pairwise_sum_per_ray():
    """The one-pass form equals the double sum over each ray's samples (NDC: s = (z + 1) / 2 along unit field
    directions; world: distance over the box side), with a ray without samples counted in the mean; its gradient
    pulls a ray's weight together (a spread ray costs more than the same weight in one interval)."""
    from kinfield.losses.priors import distortion_loss
    g = torch.Generator().manual_seed(0)
    counts = [5, 0, 1, 9]
    ray_ids = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    m = ray_ids.numel()
    t0 = torch.cat([torch.sort(torch.rand(c, generator=g) * 3)[0] for c in counts])
    t1 = t0 + 0.01 + 0.05 * torch.rand(m, generator=g)
    dirs = torch.nn.functional.normalize(torch.randn(4, 3, generator=g), dim=-1)[ray_ids]  # one per ray
    w_s, w_d = 0.1 * torch.rand(m, generator=g), 0.1 * torch.rand(m, generator=g)
    zero = torch.zeros(m)
    samples = Samples(ray_ids, t0, t1, torch.zeros(m, 3), zero, dirs, zero, torch.zeros(m, 3), zero,
                      torch.zeros(m, 3), w_s, w_d, 4)
    for ndc, scale in ((True, dirs[:, 2].abs() / 2), (False, torch.full((m,), 1 / 2.5))):
        want = _naive_distortion(w_s + w_d, t0 * scale, t1 * scale, ray_ids, 4)
        assert abs(float(distortion_loss(samples, ndc, 2.5)) - want) < 1e-6 * max(want, 1e-3)
    one = Samples(torch.zeros(2, dtype=torch.long), torch.tensor([0.0, 1.0]), torch.tensor([0.1, 1.1]),
                  torch.zeros(2, 3), torch.zeros(2), torch.tensor([[0.0, 0.0, 1.0]] * 2), torch.zeros(2),
                  torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 3), torch.tensor([0.4, 0.4]), torch.zeros(2), 1)
    together = dataclasses.replace(one, w_s=torch.tensor([0.8, 0.0]))
    assert float(distortion_loss(one, False, 1.0)) > float(distortion_loss(together, False, 1.0))
