"""Tests of blended compositing (kinfield.ops composite_blended / exclusive_segment_cumsum,
kinfield.render.composite_outputs) against closed-form constant-density slabs and plain loops."""
from __future__ import annotations

import math

import pytest
import torch

from kinfield.ops import composite_blended, exclusive_segment_cumsum
from kinfield.ops._torch import ray_segments
from kinfield.render import accumulate, composite_outputs

F64 = dict(dtype=torch.float64)


def uniform_ray(n: int, t0: float, t1: float):
    """``n`` equal intervals covering [t0, t1) of one ray."""
    edges = torch.linspace(t0, t1, n + 1, **F64)
    return edges[:-1], edges[1:]


def test_static_slab_then_dynamic_slab_closed_form():
    """Static density a on [0, 1), dynamic density b on [1, 2): T(t) = exp(-a t) then exp(-a - b (t - 1))."""
    a, b, n = 1.3, 2.7, 8
    ts, te = uniform_ray(n, 0.0, 2.0)
    d = 2.0 / n
    first = ts < 1.0
    sigma_s = torch.where(first, torch.tensor(a, **F64), torch.tensor(0.0, **F64))
    sigma_d = torch.where(first, torch.tensor(0.0, **F64), torch.tensor(b, **F64))
    ray_ids = torch.zeros(n, dtype=torch.long)
    w_s, w_d, trans = composite_blended(sigma_s, sigma_d, ts, te, ray_ids, 1)
    t_expected = torch.where(first, torch.exp(-a * ts), torch.exp(-a - b * (ts - 1.0)))
    torch.testing.assert_close(trans, t_expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(w_s, torch.where(first, (1 - math.exp(-a * d)) * t_expected, 0.0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(w_d, torch.where(first, 0.0, (1 - math.exp(-b * d)) * t_expected), rtol=1e-12, atol=1e-14)
    # opacity after each sample: 1 - T at its end
    opacity_after = torch.cumsum(w_s + w_d, 0)
    t_end = torch.where(first, torch.exp(-a * te), torch.exp(-a - b * (te - 1.0)))
    torch.testing.assert_close(opacity_after, 1.0 - t_end, rtol=1e-12, atol=1e-14)
    # per-field totals: the static slab absorbs 1 - e^-a, the dynamic one the rest of 1 - e^-(a+b)
    assert float(w_s.sum()) == pytest.approx(1 - math.exp(-a), rel=1e-12)
    assert float(w_d.sum()) == pytest.approx(math.exp(-a) * (1 - math.exp(-b)), rel=1e-12)


def test_overlapping_fields_share_transmittance():
    """Both fields on [0, 1): transmittance from a + b, per-field weights (1 - e^{-sigma d}) T."""
    a, b, n = 0.8, 1.9, 5
    ts, te = uniform_ray(n, 0.5, 1.5)
    d = 1.0 / n
    sigma_s = torch.full((n,), a, **F64)
    sigma_d = torch.full((n,), b, **F64)
    w_s, w_d, trans = composite_blended(sigma_s, sigma_d, ts, te, torch.zeros(n, dtype=torch.long), 1)
    t_expected = torch.exp(-(a + b) * (ts - 0.5))
    torch.testing.assert_close(trans, t_expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(w_s, (1 - math.exp(-a * d)) * t_expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(w_d, (1 - math.exp(-b * d)) * t_expected, rtol=1e-12, atol=1e-14)
    assert trans[0].item() == 1.0


def _pack(rays):
    """rays: list of (sigma_s, sigma_d, t_starts, t_ends) per ray (possibly empty) -> packed tensors."""
    ids = torch.cat([torch.full((r[0].numel(),), i, dtype=torch.long) for i, r in enumerate(rays)])
    return [torch.cat([r[k] for r in rays]) for k in range(4)] + [ids]


def _random_ray(g, n):
    ts = torch.sort(torch.rand(n, generator=g, **F64) * 3.0).values
    te = ts + torch.rand(n, generator=g, **F64) * 0.2
    return torch.rand(n, generator=g, **F64) * 4, torch.rand(n, generator=g, **F64) * 4, ts, te


def test_packed_rays_restart_per_ray():
    g = torch.Generator().manual_seed(0)
    counts = [3, 0, 7, 1, 0, 12, 5, 0]  # empty rays in the middle and at the end
    rays = [_random_ray(g, n) for n in counts]
    s_s, s_d, ts, te, ids = _pack(rays)
    w_s, w_d, trans = composite_blended(s_s, s_d, ts, te, ids, len(counts))
    start = 0
    for n, ray in zip(counts, rays):
        ws1, wd1, tr1 = composite_blended(*ray, torch.zeros(n, dtype=torch.long), 1)
        sl = slice(start, start + n)
        torch.testing.assert_close(trans[sl], tr1, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(w_s[sl], ws1, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(w_d[sl], wd1, rtol=1e-12, atol=1e-14)
        if n:
            assert trans[start].item() == 1.0  # each ray starts unoccluded
        start += n
    # the single-ray results themselves, from a loop
    for ray in rays:
        sig_s, sig_d, t0, t1 = ray
        tr = 1.0
        ws1, wd1, _ = composite_blended(*ray, torch.zeros(t0.numel(), dtype=torch.long), 1)
        for k in range(t0.numel()):
            dk = float(t1[k] - t0[k])
            assert float(ws1[k]) == pytest.approx((1 - math.exp(-float(sig_s[k]) * dk)) * tr, rel=1e-10, abs=1e-15)
            assert float(wd1[k]) == pytest.approx((1 - math.exp(-float(sig_d[k]) * dk)) * tr, rel=1e-10, abs=1e-15)
            tr *= math.exp(-(float(sig_s[k]) + float(sig_d[k])) * dk)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exclusive_segment_cumsum_matches_loop(dtype):
    g = torch.Generator().manual_seed(1)
    counts = [0, 4, 1, 0, 9, 2000, 3, 0]
    ids = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(counts)])
    values = (torch.rand(ids.numel(), generator=g, **F64) * 0.1).to(dtype)
    out = exclusive_segment_cumsum(values, ids, len(counts))
    assert out.dtype == dtype and out.shape == values.shape
    expected, start = [], 0
    for n in counts:
        acc = 0.0
        for k in range(start, start + n):
            expected.append(acc)
            acc += float(values[k])
        start += n
    expected = torch.tensor(expected, **F64)
    # float32: accumulated in float64, so only the final rounding (the long ray sums to ~100)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.double(), expected, **tol)
    assert exclusive_segment_cumsum(values[:0], ids[:0], 3).numel() == 0


def test_ray_segments_are_each_rays_first_sample_and_count():
    counts = [0, 4, 1, 0, 9, 3, 0, 0]  # empty rays first, in the middle and last
    ids = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(counts)])
    begin, count = ray_segments(ids, len(counts))
    assert count.tolist() == counts and count.tolist() == torch.bincount(ids, minlength=len(counts)).tolist()
    assert begin.tolist() == [sum(counts[:i]) for i in range(len(counts))]
    begin, count = ray_segments(ids[:0], 3)
    assert begin.tolist() == [0, 0, 0] and count.tolist() == [0, 0, 0]


def test_composite_outputs_background_and_depth():
    # ray 0: two samples; ray 1: no samples (pure background); ray 2: one opaque-ish sample
    w_s = torch.tensor([0.2, 0.1, 0.0], **F64)
    w_d = torch.tensor([0.3, 0.1, 0.9], **F64)
    rgb_s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.5]], **F64)
    rgb_d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.2, 0.4, 0.6]], **F64)
    mid = torch.tensor([1.0, 2.0, 3.0], **F64)
    ids = torch.tensor([0, 0, 2])
    for bg in (torch.tensor([0.1, 0.2, 0.3], **F64), torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.0, 1.0], [0.0, 0.5, 1.0]], **F64)):
        out = composite_outputs(w_s, w_d, rgb_s, rgb_d, mid, ids, 3, bg)
        bgr = bg.expand(3, 3)
        torch.testing.assert_close(out["opacity"], torch.tensor([0.7, 0.0, 0.9], **F64))
        expected = torch.stack([
            0.2 * rgb_s[0] + 0.3 * rgb_d[0] + 0.1 * rgb_s[1] + 0.1 * rgb_d[1] + 0.3 * bgr[0],
            bgr[1],
            0.9 * rgb_d[2] + 0.1 * bgr[2],
        ])
        torch.testing.assert_close(out["rgb"], expected)
        torch.testing.assert_close(out["depth"], torch.tensor([(0.5 * 1 + 0.2 * 2) / 0.7, 0.0, 3.0], **F64))
    torch.testing.assert_close(accumulate(w_d, ids, 3), torch.tensor([0.4, 0.0, 0.9], **F64))


def test_composite_blended_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    counts = [3, 0, 4, 2]
    rays = [_random_ray(g, n) for n in counts]
    s_s, s_d, ts, te, ids = _pack(rays)
    inputs = tuple(v.clone().requires_grad_(True) for v in (s_s, s_d, ts, te))

    def f(a, b, c, d):
        return composite_blended(a, b, c, d, ids, len(counts))

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)
