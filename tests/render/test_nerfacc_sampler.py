"""Occupancy-grid marching: the backend option, the shared jitter, and nerfacc against the PyTorch path.

The GPU tests run nerfacc itself. On CPU, ``_reference_traverse`` (nerfacc 0.5.3's CUDA marching transcribed
to float32 Python) stands in for it, so the comparison rule the GPU tests use is exercised everywhere.
"""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kinfield import _external
from kinfield.config import build_parser
from kinfield.geometry import ray_aabb
from kinfield.render.occupancy import OccupancyConfig, OccupancyGrid, _unpack_traversal

RES = 32


def _grid(device="cpu", backend="auto", seed=0, res=RES, p_occupied=0.3):
    g = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]), OccupancyConfig(resolution=res, backend=backend))
    grid.binaries.copy_(torch.rand(res, res, res, generator=g) < p_occupied)
    return grid.to(device)


def _rays(n, device="cpu", seed=1):
    """Rays from around z=3 towards the box (some miss it), a few axis-aligned ones and a few starting inside."""
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 0.5 + torch.tensor([0.0, 0.0, 3.0])
    d = -o + torch.randn(n, 3, generator=g) * 0.6
    k = max(1, n // 16)
    d[:k, :2] = 0.0  # straight down -z (zero direction components)
    o[k : 2 * k] = torch.rand(k, 3, generator=g) * 1.6 - 0.8  # inside the box
    d = torch.nn.functional.normalize(d, dim=-1)
    return o.to(device), d.to(device)


# ----------------------------------------------------------------------------------------------------------
# nerfacc 0.5.3 marching, transcribed (cuda/csrc/grid.cu traverse_grids_kernel, include/utils_grid.cuh
# ray_aabb_intersect / setup_traversal / single_traversal) for one grid, step_size > 0, cone_angle 0, no
# traverse_steps_limit, in float32 (numpy scalars; the GPU may fuse multiply-adds, a rounding-level difference).


def _reference_traverse(o, d, binaries, aabb, near, far, step):
    f32 = np.float32
    o, d = np.asarray(o, f32), np.asarray(d, f32)
    lo, hi = np.asarray(aabb[:3], f32), np.asarray(aabb[3:], f32)
    res = np.asarray(binaries.shape, np.int64)
    near, far, dt = f32(near), f32(far), f32(step)
    half = dt * f32(0.5)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = f32(1.0) / d
        # ray_aabb_intersect, called by nerfacc.grid.traverse_grids with near/far = -inf/inf
        tmin = tmax = None
        for a in range(3):
            if inv[a] >= 0:
                t0, t1 = (lo[a] - o[a]) * inv[a], (hi[a] - o[a]) * inv[a]
            else:
                t0, t1 = (hi[a] - o[a]) * inv[a], (lo[a] - o[a]) * inv[a]
            if a == 0:
                tmin, tmax = t0, t1
                continue
            if tmin > t1 or t0 > tmax:
                return []
            tmin, tmax = (t0 if t0 > tmin else tmin), (t1 if t1 < tmax else tmax)
        if tmax <= 0:
            return []
        # grid.cu: this_tmin / this_tmax, then march t_last from the near plane until t_mid >= this_tmin
        this_tmin, this_tmax = max(tmin, near), min(tmax, far)
        if this_tmin >= this_tmax:
            return []
        t_last = near
        while not (t_last + half >= this_tmin):
            t_last = f32(t_last + dt)
        # setup_traversal
        eps = f32(1e-6)
        voxel = (hi - lo) / res.astype(f32)
        start = o + d * (this_tmin + eps)
        end = o + d * (this_tmax - eps)
        cur = np.clip(((start - lo) / (hi - lo) * res.astype(f32)).astype(np.int64), 0, res - 1)
        final = np.clip(((end - lo) / (hi - lo) * res.astype(f32)).astype(np.int64), 0, res - 1)
        start_index = cur + (d > 0).astype(np.int64)
        tdist = np.where(d == 0, this_tmax, ((lo + (start_index.astype(f32) * voxel - start)) * inv) + this_tmin)
        tdist = tdist.astype(f32)
        step_f = np.sign(d).astype(f32)
        step_i = step_f.astype(np.int64)
        delta = np.where(d == 0, this_tmax, voxel * inv * step_f).astype(f32)
        overflow = final + step_i
        out = []  # (t_last, t_next, continuous)
        continuous = False
        for _ in range(100_000):
            t_trav = min(tdist[0], min(tdist[1], tdist[2]))
            t_trav = min(t_trav, this_tmax)
            inside = bool(((cur >= 0) & (cur < res)).all())
            if not (inside and binaries[cur[0], cur[1], cur[2]]):
                while not (t_last + half >= t_trav):
                    t_last = f32(t_last + dt)
                continuous = False
            else:
                while not (t_last + half >= t_trav):
                    t_next = f32(t_last + dt)
                    out.append((float(t_last), float(t_next), continuous))
                    continuous = True
                    t_last = t_next
                    if t_next >= t_trav:
                        break
            # single_traversal
            if tdist[0] < tdist[1] and tdist[0] < tdist[2]:
                ax = 0
            elif tdist[1] < tdist[2]:
                ax = 1
            else:
                ax = 2
            cur[ax] += step_i[ax]
            tdist[ax] = f32(tdist[ax] + delta[ax])
            if cur[ax] == overflow[ax]:
                break
        return out


def _reference_pack(per_ray):
    """The kernel's write-out (grid.cu, "writeout the interval" / "writeout the sample") of per-ray samples
    ``[(t_last, t_next, continuous), ...]``: a new run writes a left and a right edge, a continued run writes
    one right edge and flags the previous edge as a left one too."""
    vals, is_left, is_right, edge_rays, sample_rays, mids = [], [], [], [], [], []
    for r, samples in enumerate(per_ray):
        for t_last, t_next, continuous in samples:
            if not continuous:
                vals += [t_last, t_next]
                is_left += [True, False]
                is_right += [False, True]
                edge_rays += [r, r]
            else:
                vals.append(t_next)
                is_left[-1] = True
                is_left.append(False)
                is_right.append(True)
                edge_rays.append(r)
            sample_rays.append(r)
            mids.append(0.5 * (t_last + t_next))
    intervals = SimpleNamespace(vals=torch.tensor(vals, dtype=torch.float32), is_left=torch.tensor(is_left, dtype=torch.bool),
                                is_right=torch.tensor(is_right, dtype=torch.bool), ray_indices=torch.tensor(edge_rays))
    samples = SimpleNamespace(vals=torch.tensor(mids, dtype=torch.float32), ray_indices=torch.tensor(sample_rays))
    return intervals, samples


def _reference_sample(grid, o, d, step, jitter):
    """``_sample_nerfacc``'s call (near = box entry + jitter x step, far = box exit) through the transcription,
    packed as the kernel packs and unpacked by ``_sample_nerfacc``'s own ``_unpack_traversal``."""
    t_near, t_far = ray_aabb(o, d, grid.aabb)
    near = t_near + jitter * step if jitter is not None else t_near
    b = grid.binaries.cpu().numpy()
    aabb = grid.aabb.cpu().numpy()
    per_ray = [_reference_traverse(o[r].tolist(), d[r].tolist(), b, aabb, float(near[r]), float(t_far[r]), step)
               for r in range(o.shape[0])]
    assert any(c for samples in per_ray for _, _, c in samples) and any(not c for samples in per_ray for _, _, c in samples)
    ids, starts, ends = _unpack_traversal(*_reference_pack(per_ray))
    flat = [x for samples in per_ray for x in samples]
    assert torch.equal(ids, torch.tensor([r for r, samples in enumerate(per_ray) for _ in samples], dtype=torch.long))
    assert torch.equal(starts, torch.tensor([x[0] for x in flat], dtype=torch.float32))
    assert torch.equal(ends, torch.tensor([x[1] for x in flat], dtype=torch.float32))
    return ids, starts, ends


# ----------------------------------------------------------------------------------------------------------
# The comparison rule, shared by the CPU (transcription) and GPU (nerfacc) tests.


def _ulp(t):
    return torch.ldexp(torch.ones_like(t), torch.frexp(t.abs().clamp_min(1e-30))[1] - 24)


def _assert_same_samples(grid, o, d, step, jitter, ref, got, accumulated):
    """``got`` (nerfacc or its transcription) against ``ref`` (the PyTorch sampler), sample by sample.

    Each sample is named by (ray, step index k from the near plane). Samples in both sets must agree to 1e-5,
    plus, when ``accumulated``, the float32 drift of nerfacc's ``t += step`` (at most half an ulp of t per step).
    A sample in one set only must have its midpoint that close (5e-5 + the drift) to a cell face or to the box
    exit, where rounding decides which side it falls on; such samples may sit anywhere along a ray, wherever it
    passes between an occupied and an empty cell, not only at its first or last sample.
    """
    o, d = o.cpu().double(), d.cpu().double()
    t_near, t_far = ray_aabb(o.float(), d.float(), grid.aabb.cpu())
    near = (t_near + jitter.cpu() * step if jitter is not None else t_near).double()
    t_far = t_far.double()
    (ids_r, s_r, e_r), (ids_g, s_g, e_g) = [[x.cpu() for x in s] for s in (ref, got)]
    assert ids_r.numel() > 2_000, "too few samples for a meaningful comparison"
    for ids, s, e in ((ids_r, s_r, e_r), (ids_g, s_g, e_g)):
        assert (ids[1:] >= ids[:-1]).all()
        torch.testing.assert_close(e - s, torch.full_like(s, step), rtol=0, atol=2e-6)

    big = 1 << 24

    def keys(ids, s):
        k = torch.round((s.double() - near[ids]) / step).long()
        assert (k >= 0).all()
        return ids * big + k, k

    key_r, k_r = keys(ids_r, s_r)
    key_g, k_g = keys(ids_g, s_g)
    assert (key_r[1:] > key_r[:-1]).all() and (key_g[1:] > key_g[:-1]).all()
    in_r, in_g = torch.isin(key_r, key_g), torch.isin(key_g, key_r)
    assert in_r.sum() == in_g.sum()

    def drift(k, t):
        return k.double() * 0.5 * _ulp(t.float()).double() if accumulated else torch.zeros_like(t.double())

    tol = 1e-5 + drift(k_g[in_g], s_g[in_g])
    err = (s_g[in_g].double() - s_r[in_r].double()).abs()
    assert (err <= tol).all(), f"matched starts differ by up to {float(err.max()):.3g} (allowed {float(tol.max()):.3g})"
    if not accumulated:
        assert float(err.max()) <= 1e-5

    cell = ((grid.aabb[3:] - grid.aabb[:3]) / grid.cfg.resolution).cpu().double()
    lo = grid.aabb[:3].cpu().double()
    n_odd = 0
    for ids, s, k, keep in ((ids_r, s_r, k_r, ~in_r), (ids_g, s_g, k_g, ~in_g)):
        if not keep.any():
            continue
        ids, s, k = ids[keep], s[keep].double(), k[keep]
        mid = s + 0.5 * step
        u = (o[ids] + d[ids] * mid[:, None] - lo) / cell
        to_face = ((u - torch.round(u)).abs() * cell / d[ids].abs().clamp_min(1e-12)).amin(-1)
        to_exit = (mid - t_far[ids]).abs()
        slack = 5e-5 + drift(k, s)
        odd = torch.minimum(to_face, to_exit) > slack
        assert not odd.any(), (f"{int(odd.sum())} samples of one path only are not at a cell face or the box exit: "
                               f"rays {ids[odd][:5].tolist()}, mid {mid[odd][:5].tolist()}")
        n_odd += int(keep.sum())
    # a few per mille: mostly the axis-aligned rays, whose unjittered midpoints can land exactly on cell faces
    assert n_odd <= 0.01 * ids_r.numel(), f"{n_odd} of {ids_r.numel()} samples in one path only"


# ----------------------------------------------------------------------------------------------------------
# CPU


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="occupancy backend"):
        _grid(backend="cuda")


@pytest.mark.parametrize("backend", ["auto", "torch", "nerfacc"])
def test_backend_option_on_the_command_line(backend):
    args = build_parser().parse_args(["--render_occupancy_backend", backend])
    assert args.render_occupancy_backend == backend
    assert build_parser().parse_args([]).render_occupancy_backend == "auto"  # existing configs stay valid


def test_forcing_nerfacc_on_cpu_rays_raises_a_clear_error():
    grid = _grid(backend="nerfacc")
    o, d = _rays(8)
    with pytest.raises(RuntimeError, match="needs CUDA rays"):
        grid.sample(o, d, 0.05)
    with pytest.raises(RuntimeError, match="nerfacc"):
        grid._sample_nerfacc(o, d, 0.05)


def test_torch_backend_never_asks_for_nerfacc(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("nerfacc looked up")

    monkeypatch.setattr(_external, "get", boom)
    grid = _grid(backend="torch")
    o, d = _rays(8)
    assert grid.marching_backend(o) == "torch"
    grid.sample(o, d, 0.05)


@pytest.mark.parametrize("built", [False, True])
def test_nerfacc_counts_as_usable_only_once_its_cuda_code_loads(monkeypatch, built):
    # ``import nerfacc`` compiles nothing; nerfacc.cuda._backend JIT-builds on first use and keeps _C = None
    # when there is no nvcc: _external must load it up front so that "auto" falls back instead of crashing.
    import sys
    import types

    fake = types.ModuleType("nerfacc")
    fake.__version__ = "0.5.3"
    fake.cuda = types.ModuleType("nerfacc.cuda")
    fake.cuda._backend = types.ModuleType("nerfacc.cuda._backend")
    fake.cuda._backend._C = object() if built else None
    for name, mod in (("nerfacc", fake), ("nerfacc.cuda", fake.cuda), ("nerfacc.cuda._backend", fake.cuda._backend)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(_external, "_CACHE", {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    module = _external.get("nerfacc", "occupancy-grid marching (test)")
    if built:
        assert module is fake
    else:
        assert module is None and "nvcc" in _external.reason("nerfacc")


def test_jitter_must_have_one_value_per_ray():
    grid = _grid()
    o, d = _rays(8)
    with pytest.raises(ValueError, match="jitter"):
        grid.sample(o, d, 0.05, stratified=True, jitter=torch.rand(7))


def test_auto_on_cpu_marches_in_torch_and_the_jitter_can_be_shared():
    grid = _grid()
    grid.binaries.fill_(True)  # every cell occupied: each ray's first sample starts at entry + jitter * step
    o, d = _rays(64)
    assert grid.marching_backend(o) == "torch"
    jitter = torch.rand(64)
    torch.manual_seed(0)
    a = grid.sample(o, d, 0.05, stratified=True, jitter=jitter)
    torch.manual_seed(1)
    b = grid.sample(o, d, 0.05, stratified=True, jitter=jitter)
    c = grid._sample_torch(o, d, 0.05, jitter)
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y) and torch.equal(x, z)
    ids, starts, _ = a
    assert ids.numel() > 100
    first = torch.ones_like(ids, dtype=torch.bool)
    first[1:] = ids[1:] != ids[:-1]
    t_near, _ = ray_aabb(o, d, grid.aabb)
    torch.testing.assert_close(starts[first], t_near[ids[first]] + jitter[ids[first]] * 0.05)
    # without the stratified flag the jitter is ignored
    plain = grid.sample(o, d, 0.05, stratified=False, jitter=jitter)
    for x, y in zip(plain, grid._sample_torch(o, d, 0.05)):
        assert torch.equal(x, y)


@pytest.mark.parametrize("step, accumulated", [(0.01, True), (0.005, True), (2.0**-7, False)])
@pytest.mark.parametrize("stratified", [False, True])
def test_torch_sampler_matches_the_transcribed_nerfacc_kernel(stratified, step, accumulated):
    # accumulated: 0.01 and 0.005 are not binary fractions, so nerfacc's ``t += step`` rounds at every step
    # (the starts drift apart by up to ~5e-5 over a few hundred steps); 2^-7 adds exactly: within 1e-5 outright.
    grid = _grid(res=16, seed=2)
    o, d = _rays(96, seed=3)
    jitter = torch.rand(96, generator=torch.Generator().manual_seed(4)) if stratified else None
    ref = grid._sample_torch(o, d, step, jitter)
    got = _reference_sample(grid, o, d, step, jitter)
    _assert_same_samples(grid, o, d, step, jitter, ref, got, accumulated)


def test_comparison_rule_catches_a_shifted_start():
    grid = _grid()
    o, d = _rays(256)
    ref = grid._sample_torch(o, d, 0.01)
    ids, s, e = ref
    with pytest.raises(AssertionError):
        _assert_same_samples(grid, o, d, 0.01, None, ref, (ids, s + 3e-4, e + 3e-4), True)
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[ids.numel() // 2] = False  # a sample dropped away from any face
    with pytest.raises(AssertionError):
        _assert_same_samples(grid, o, d, 0.01, None, ref, (ids[keep], s[keep], e[keep]), True)


# ----------------------------------------------------------------------------------------------------------
# GPU


def _nerfacc_or_skip():
    if _external.get("nerfacc", "occupancy-grid marching") is None:
        pytest.skip(f"nerfacc unusable: {_external.reason('nerfacc')}")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("step, accumulated", [(0.01, True), (0.005, True), (2.0**-7, False)])
@pytest.mark.parametrize("stratified", [False, True])
def test_nerfacc_marching_matches_torch(stratified, step, accumulated):  # pragma: no cover - GPU only
    _nerfacc_or_skip()
    n = 4096
    grid = _grid("cuda")
    o, d = _rays(n, "cuda")
    jitter = torch.rand(n, device="cuda") if stratified else None
    ref = grid._sample_torch(o, d, step, jitter)
    got = grid._sample_nerfacc(o, d, step, jitter)
    assert got[0].dtype == torch.long and got[1].dtype == torch.float32 and got[0].is_cuda
    assert ref[0].numel() > 50_000
    _assert_same_samples(grid, o, d, step, jitter, ref, got, accumulated)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nerfacc_dispatch_chunking_and_empty_batches():  # pragma: no cover - GPU only
    _nerfacc_or_skip()
    grid = _grid("cuda", backend="nerfacc")
    o, d = _rays(1000, "cuda")
    jitter = torch.rand(1000, device="cuda")
    whole = grid.sample(o, d, 0.01, stratified=True, jitter=jitter)
    direct = grid._sample_nerfacc(o, d, 0.01, jitter)
    chunked = grid._sample_nerfacc(o, d, 0.01, jitter, max_samples=5_000)  # ~15 rays a chunk
    assert whole[0].numel() > 10_000
    for x, y, z in zip(whole, direct, chunked):
        assert torch.equal(x, y) and torch.equal(x, z)
    assert grid.marching_backend(o) == "nerfacc"
    assert _grid("cuda", backend="auto").marching_backend(o) == "nerfacc"
    ids, s, e = grid.sample(o[:0], d[:0], 0.01, stratified=True)
    assert ids.numel() == s.numel() == e.numel() == 0 and ids.dtype == torch.long
    grid.binaries.fill_(False)
    ids, s, e = grid.sample(o, d, 0.01)
    assert ids.numel() == 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nerfacc_all_occupied_grid_marches_the_whole_box():  # pragma: no cover - GPU only
    _nerfacc_or_skip()
    grid = _grid("cuda")
    grid.binaries.fill_(True)
    o, d = _rays(2048, "cuda")
    ids, s, e = grid._sample_nerfacc(o, d, 2.0**-7)
    t_near, t_far = ray_aabb(o, d, grid.aabb)
    span = (t_far - t_near).clamp_min(0)
    # midpoints t_near + (k + 1/2) step < t_far: ceil(span / step - 1/2) samples, up to rounding at the exit
    expect = torch.ceil(span / 2.0**-7 - 0.5).clamp_min(0).long()
    counts = torch.bincount(ids, minlength=2048)
    assert counts.sum() > 100_000
    assert (counts - expect).abs().max() <= 1
    assert ((counts - expect) != 0).float().mean() < 0.01
    assert math.isclose(float((e - s).mean()), 2.0**-7, rel_tol=1e-5)
