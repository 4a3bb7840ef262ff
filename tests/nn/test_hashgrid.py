"""Tests of the hash-grid encoding (kinfield.nn.hashgrid, kinfield.ops._torch).

Every expected value here is computed independently of the library, from tiny-cuda-nn's rules:

* level scale ``base * b^l - 1`` in float32, resolution ``ceil(scale) + 1``;
* table size ``min(next_multiple_of_8(res^D), 2^log2_hashmap_size)``; a level is hashed iff
  ``res^D`` exceeds its table;
* ``pos = scale * x + 0.5``; the ``2^D`` vertices ``floor(pos) + {0, 1}`` per axis (the upper one may
  equal ``res``: tcnn does not clamp, the index simply wraps), dense row-major index (x fastest) or
  XOR of ``vertex[d] * prime[d]`` in uint32, both modulo the table size; multilinear weights;
* flat parameters level-major, then table entry, then feature.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kinfield.nn.hashgrid import HashGrid, HashGridConfig, level_layout
from kinfield.ops import _torch as ops

PRIMES = (1, 2654435761, 805459861, 3674653429)
U32 = 0xFFFFFFFF

# base 3, b = 1.5: non-integer scales (2, 3.5, 5.75, 9.125), tables rounded up to multiples of 8.
CFG_B = HashGridConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=10, base_resolution=3, per_level_scale=1.5)
# base 4, b = 2: integer scales (3, 7, 15); level 1 fills its table exactly (8^3 = 512 = 2^9).
CFG_A = HashGridConfig(n_levels=3, n_features_per_level=2, log2_hashmap_size=9, base_resolution=4, per_level_scale=2.0)


# ----------------------------------------------------------------------------- independent reference
def ref_layout(dim: int, cfg: HashGridConfig):
    """Layout by tcnn's rules, written as plain Python over numpy float32 scalars.

    tcnn holds ``per_level_scale`` as a float and computes ``exp2f(level * std::log2(per_level_scale))
    * base_resolution - 1.0f``, all in float32 (taking log2 in double gives other bits, e.g. 9.8000002
    instead of 9.8000011 for base 8, b = 1.35, level 1).
    """
    log2_b = np.log2(np.float32(cfg.per_level_scale))
    assert log2_b.dtype == np.float32
    scales, res, sizes, hashed = [], [], [], []
    for lvl in range(cfg.n_levels):
        s = np.exp2(np.float32(lvl) * log2_b) * np.float32(cfg.base_resolution) - np.float32(1)
        assert s.dtype == np.float32
        r = math.ceil(float(s)) + 1
        size = min(-(-(r**dim) // 8) * 8, 2**cfg.log2_hashmap_size)
        scales.append(float(s))
        res.append(r)
        sizes.append(size)
        hashed.append(r**dim > size)
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    return scales, res, offsets, hashed


def ref_encode(x: np.ndarray, params: np.ndarray, dim: int, cfg: HashGridConfig):
    """Per point, per level, per corner: the literal tcnn lookup. Returns (features [N, L*F] float64,
    number of corner reads that hit vertex ``res`` with a non-zero weight)."""
    scales, res, offsets, hashed = ref_layout(dim, cfg)
    nf = cfg.n_features_per_level
    table = params.reshape(-1, nf).astype(np.float64)
    out = np.zeros((x.shape[0], cfg.n_levels * nf))
    n_wrap = 0
    for i in range(x.shape[0]):
        for lvl in range(cfg.n_levels):
            size = offsets[lvl + 1] - offsets[lvl]
            pos = [np.float32(np.float32(scales[lvl]) * np.float32(x[i, d])) + np.float32(0.5) for d in range(dim)]
            grid = [int(math.floor(p)) for p in pos]
            frac = [float(p) - g for p, g in zip(pos, grid)]
            acc = np.zeros(nf)
            for corner in range(2**dim):
                vert, w = [], 1.0
                for d in range(dim):
                    bit = (corner >> d) & 1
                    vert.append(grid[d] + bit)
                    w *= frac[d] if bit else 1.0 - frac[d]
                if hashed[lvl]:
                    h = 0
                    for d in range(dim):
                        h ^= (vert[d] * PRIMES[d]) & U32
                else:
                    h = sum(vert[d] * res[lvl] ** d for d in range(dim)) & U32
                idx = offsets[lvl] + h % size
                acc += w * table[idx]
                if w > 0 and max(vert) == res[lvl]:
                    n_wrap += 1
            out[i, lvl * nf:(lvl + 1) * nf] = acc
    return out, n_wrap


def layout_tensors(dim, cfg):
    return level_layout(dim, cfg)  # (scales, resolutions, offsets, hashed)


def special_points(dim: int) -> torch.Tensor:
    """Exact 0 / 1 coordinates, points just below 1 (upper vertex == res at several levels), random."""
    rows = [
        [0.0] * dim,
        [1.0] * dim,
        [0.0, 1.0] * (dim // 2) + [0.5] * (dim % 2),
        [1.0, 0.0] * (dim // 2) + [0.25] * (dim % 2),
        [1.0 - 1e-3] * dim,
        [1.0 - 1e-6] * dim,
        [0.999, 0.3, 1.0, 0.0][:dim],
        [0.5] * dim,
        [0.2, 0.999, 0.7, 0.96][:dim],
    ]
    g = torch.Generator().manual_seed(1)
    rnd = torch.rand(8, dim, generator=g, dtype=torch.float64)
    return torch.cat([torch.tensor(rows, dtype=torch.float64), rnd]).float()


def padded_points(dim: int, cfg: HashGridConfig, seed: int = 0) -> torch.Tensor:
    """Special points first, then random filler so that N * 2^D >= (res+1)^D at every level: only
    then may hash_grid_encode use its volume path (it never builds a volume dearer than gathering)."""
    _, res, _, _ = ref_layout(dim, cfg)
    need = max(-(-((r + 1) ** dim) // 2**dim) for r in res)
    sp = special_points(dim)
    g = torch.Generator().manual_seed(seed)
    filler = torch.rand(max(0, need - sp.shape[0]), dim, generator=g)
    return torch.cat([sp, filler])


def random_params(dim, cfg, seed=0, dtype=torch.float32):
    _, _, offsets, _ = ref_layout(dim, cfg)
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(offsets[-1] * cfg.n_features_per_level, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


class Spy:
    """Counts calls of a module-level function of kinfield.ops._torch."""

    def __init__(self, monkeypatch, name):
        self.calls = 0
        inner = getattr(ops, name)

        def wrapper(*a, **k):
            self.calls += 1
            return inner(*a, **k)

        monkeypatch.setattr(ops, name, wrapper)


def encode(x, params, dim, cfg, volume_limit):
    scales, res, offsets, hashed = layout_tensors(dim, cfg)
    return ops.hash_grid_encode(x, params, offsets, res, scales, hashed, cfg.n_features_per_level, volume_limit=volume_limit)


# ---------------------------------------------------------------------------------------- (a) layout
def _check_layout(dim, cfg, scales, res, sizes, hashed):
    s, r, o, h = level_layout(dim, cfg)
    assert s.dtype == torch.float32 and r.dtype == torch.int64 and o.dtype == torch.int64 and h.dtype == torch.bool
    np.testing.assert_allclose(s.numpy(), scales, rtol=1e-6)
    assert r.tolist() == res
    assert o.tolist() == [0] + list(np.cumsum(sizes))
    assert h.tolist() == hashed
    assert HashGrid(dim, cfg, backend="torch").params.numel() == sum(sizes) * cfg.n_features_per_level


def test_level_layout_3d_by_hand():
    # scales 2, 3.5, 5.75, 9.125 -> res 3, 5, 7, 11; 27->32, 125->128, 343->344 dense; 1331 > 1024 hashed
    _check_layout(3, CFG_B, [2.0, 3.5, 5.75, 9.125], [3, 5, 7, 11], [32, 128, 344, 1024], [False, False, False, True])
    # scales 3, 7, 15 -> res 4, 8, 16; 64 dense; 512 == 2^9 fits exactly (dense); 4096 > 512 hashed
    _check_layout(3, CFG_A, [3.0, 7.0, 15.0], [4, 8, 16], [64, 512, 512], [False, False, True])


def test_level_layout_4d_by_hand():
    # res 3, 5, 7, 11: 81->88, 625->632 dense; 2401 and 14641 > 1024 hashed
    _check_layout(4, CFG_B, [2.0, 3.5, 5.75, 9.125], [3, 5, 7, 11], [88, 632, 1024, 1024], [False, False, True, True])
    assert HashGrid(4, CFG_B, backend="torch").params.numel() == 2768 * 2


@pytest.mark.parametrize("dim", [3, 4])
@pytest.mark.parametrize("cfg", [
    HashGridConfig(),  # the defaults
    HashGridConfig(n_levels=16, base_resolution=16, per_level_scale=1.3819128800392151, log2_hashmap_size=19),
    HashGridConfig(n_levels=8, base_resolution=8, per_level_scale=1.35, log2_hashmap_size=15),
])
def test_level_layout_matches_reference_rules(dim, cfg):
    scales, res, offsets, hashed = ref_layout(dim, cfg)
    s, r, o, h = level_layout(dim, cfg)
    assert s.tolist() == scales  # bit-exact float32
    assert r.tolist() == res and o.tolist() == offsets and h.tolist() == hashed


# ---------------------------------------------------------------------------------------- (b) lookup
# Tolerances, relative to the largest feature magnitude (params are U(-1, 1) here):
#   gather path: float32 weights; measured <= 1.4e-7, asserted 1e-6;
#   volume path: 2-D grid_sample on the volume's slices laid out as tiles rebuilds the pixel coordinate from
#   [-1, 1] in float32 (error ~ image side * eps: ~(res+1)^1.5 in 3D, ~(res+1)^2 in 4D); measured max 7.5e-6
#   (3D) and 1.2e-5 (4D), asserted at 3e-5 and 5e-5.
TOL = {("gather", 3): 1e-6, ("gather", 4): 1e-6, ("volume", 3): 3e-5, ("volume", 4): 5e-5}


@pytest.mark.parametrize("dim,cfg", [(3, CFG_B), (3, CFG_A), (4, CFG_B)])
@pytest.mark.parametrize("path", ["gather", "volume"])
def test_lookup_matches_naive_reference(dim, cfg, path, monkeypatch):
    x = padded_points(dim, cfg)
    params = random_params(dim, cfg)
    gather_spy, volume_spy = Spy(monkeypatch, "_corner_entries"), Spy(monkeypatch, "_level_by_volume")
    out = encode(x, params, dim, cfg, volume_limit=0 if path == "gather" else 1 << 30)
    # the strategy asked for is the one that ran, for every level
    if path == "gather":
        assert gather_spy.calls == 1 and volume_spy.calls == 0
    else:
        assert gather_spy.calls == 0 and volume_spy.calls == cfg.n_levels
    assert out.shape == (x.shape[0], cfg.n_levels * cfg.n_features_per_level) and out.dtype == torch.float32
    n_check = special_points(dim).shape[0]
    ref, n_wrap = ref_encode(x[:n_check].numpy(), params.numpy(), dim, cfg)
    assert n_wrap > 0, "the points must reach the wrap-around vertex res"
    err = np.abs(out[:n_check].double().numpy() - ref).max() / np.abs(ref).max()
    assert err < TOL[(path, dim)], f"{path} {dim}D: relative error {err:.2e}"


@pytest.mark.parametrize("dim,cfg", [(3, CFG_A), (4, CFG_B)])
def test_strategies_agree_on_many_points(dim, cfg):
    x = padded_points(dim, cfg, seed=3)
    params = random_params(dim, cfg, seed=3)
    a = encode(x, params, dim, cfg, volume_limit=0)
    b = encode(x, params, dim, cfg, volume_limit=1 << 30)
    assert (a - b).abs().max() / a.abs().max() < TOL[("volume", dim)]


def test_wraparound_vertex_is_not_clamped():
    """At x = (1, 0, 0) with integer scale 3 (res 4), pos = (3.5, 0.5, 0.5): corners x in {3, 4},
    y, z in {0, 1}, each weight 1/8. Corner (4, 0, 0) has dense index 4, the entry of vertex (0, 1, 0),
    which no other corner reads: only an unclamped lookup sees a change of entry 4."""
    cfg = HashGridConfig(n_levels=1, n_features_per_level=1, log2_hashmap_size=9, base_resolution=4, per_level_scale=2.0)
    params = torch.zeros(64)
    params[4] = 1.0
    x = torch.tensor([[1.0, 0.0, 0.0]]).repeat(16, 1)  # 16 * 8 >= 5^3: the volume path may run
    for limit in (0, 1 << 30):
        assert encode(x, params, 3, cfg, limit)[0].item() == pytest.approx(0.125, abs=1e-6)
    params[4], params[3] = 0.0, 1.0  # vertex (3, 0, 0): the clamped reading of the upper corner
    for limit in (0, 1 << 30):
        assert encode(x, params, 3, cfg, limit)[0].item() == pytest.approx(0.125, abs=1e-6)


# ------------------------------------------------------------------------------------- (c) gradients
@pytest.mark.parametrize("dim,cfg", [(3, CFG_A), (4, CFG_B)])
def test_gradients_of_both_strategies_agree(dim, cfg):
    n = padded_points(dim, cfg).shape[0]
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(n, dim, generator=g) * 0.98 + 0.01
    params0 = random_params(dim, cfg, seed=5)
    up = torch.randn(n, cfg.n_levels * cfg.n_features_per_level, generator=g)
    grads = []
    for limit in (0, 1 << 30):
        x, p = x0.clone().requires_grad_(True), params0.clone().requires_grad_(True)
        (encode(x, p, dim, cfg, limit) * up).sum().backward()
        grads.append((p.grad, x.grad))
    (gp0, gx0), (gp1, gx1) = grads
    # measured: params 2.1e-6, x 1.3e-5 (4D; 3D about 10x less)
    assert (gp0 - gp1).abs().max() / gp0.abs().max() < 1e-5
    assert (gx0 - gx1).abs().max() / gx0.abs().max() < 5e-5


@pytest.mark.parametrize("dim,cfg", [(3, CFG_A), (4, CFG_B)])
def test_a_call_mixing_both_strategies_equals_the_gather_path(dim, cfg, monkeypatch):
    """At a point count where the coarse levels take the volume path and the fine ones gather, one call reads
    both from the table (one table gradient): values and gradients as the gather path's."""
    _, res, _, _ = ref_layout(dim, cfg)
    n = -(-((res[0] + 1) ** dim) // 2**dim)  # the coarsest level's volume costs no more than gathering
    assert (res[-1] + 1) ** dim > n * 2**dim  # the finest level's does
    g = torch.Generator().manual_seed(9)
    x0 = torch.rand(n, dim, generator=g)
    params0 = random_params(dim, cfg, seed=9)
    up = torch.randn(n, cfg.n_levels * cfg.n_features_per_level, generator=g)
    gather_spy, volume_spy = Spy(monkeypatch, "_corner_entries"), Spy(monkeypatch, "_level_by_volume")
    results = []
    for limit in (1 << 30, 0):
        x, p = x0.clone().requires_grad_(True), params0.clone().requires_grad_(True)
        out = encode(x, p, dim, cfg, limit)
        (out * up).sum().backward()
        results.append((out.detach(), p.grad, x.grad))
        if limit:
            assert gather_spy.calls == 1 and 0 < volume_spy.calls < cfg.n_levels
    (o0, gp0, gx0), (o1, gp1, gx1) = results
    assert (o0 - o1).abs().max() / o1.abs().max() < TOL[("volume", dim)]
    assert (gp0 - gp1).abs().max() / gp1.abs().max() < 1e-5
    assert (gx0 - gx1).abs().max() / gx1.abs().max() < 5e-5


def step_counter():
    """``bench/step_ops.py``'s op and host-sync counter (the definition of a sync that the benchmark reports)."""
    path = Path(__file__).resolve().parents[2] / "bench" / "step_ops.py"
    spec = importlib.util.spec_from_file_location("step_ops", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.StepCounter()


@pytest.mark.parametrize("dim,cfg", [(3, CFG_A), (4, CFG_B)])
@pytest.mark.parametrize("limit", [1 << 30, 0, None])
def test_the_encoding_reads_the_host_once_per_call(dim, cfg, limit, monkeypatch):
    """The level layout (resolutions, offsets, hashed) and the slab each volume level reads come back in one
    copy per call, whichever strategies the levels take (all volumes, all gathered, both), and the backward pass
    reads nothing: on a GPU every such read stalls the launch queue (it was five per volume level). Its small
    constant index tensors are made once, not copied from the host at every call."""
    _, res, _, _ = ref_layout(dim, cfg)
    # the point count at which the finest (None: the coarsest) level's volume costs no more than gathering
    n = -(-((res[0 if limit is None else -1] + 1) ** dim) // 2**dim)
    x = torch.rand(n, dim, generator=torch.Generator().manual_seed(3))
    x[:, -1] = 0.25 + 0.5 * x[:, -1]  # the volume levels read a slab
    x.requires_grad_(True)
    p = random_params(dim, cfg, seed=3).requires_grad_(True)
    mixed = limit is None
    layout = layout_tensors(dim, cfg)  # (scales, resolutions, offsets, hashed), as a HashGrid's buffers

    def call():
        scales, resolutions, offsets, hashed = layout
        return ops.hash_grid_encode(x, p, offsets, resolutions, scales, hashed, cfg.n_features_per_level,
                                    volume_limit=1 << 30 if mixed else limit)

    call()  # makes the constants
    counter = step_counter()
    tolist = torch.Tensor.tolist

    def counted_tolist(t):
        counter.count("Tensor.tolist", sync=True)
        return tolist(t)

    monkeypatch.setattr(torch.Tensor, "tolist", counted_tolist)
    gather_spy, volume_spy = Spy(monkeypatch, "_corner_entries"), Spy(monkeypatch, "_level_by_volume")
    with counter:
        out = call()
        forward_reads = sum(counter.syncs.values())
        out.square().sum().backward()
    # one host read in all; no tensor made from host values (on a GPU a copy that waits for the queue too)
    assert forward_reads == 1 and sum(counter.syncs.values()) == 1 and counter.ops["aten.lift_fresh"] == 0
    assert x.grad is not None and p.grad.abs().sum() > 0
    if mixed:  # the call did mix the strategies
        assert gather_spy.calls == 1 and 0 < volume_spy.calls < cfg.n_levels
    else:
        assert (gather_spy.calls, volume_spy.calls) == ((0, cfg.n_levels) if limit else (1, 0))


def test_read_table_fills_one_gradient_for_both_reads_and_none_through_a_frozen_table():
    g = torch.Generator().manual_seed(2)
    table0 = torch.randn(40, 2, generator=g, dtype=torch.float64)
    rows_idx = torch.tensor([3, 7, 7, 39])
    idx, w = torch.randint(0, 40, (5, 4), generator=g), torch.rand(5, 4, generator=g, dtype=torch.float64)
    up_rows, up_feats = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    table = table0.clone().requires_grad_(True)
    rows, feats = ops.read_table(table, rows_idx, idx, w)
    ((rows * up_rows).sum() + (feats * up_feats).sum()).backward()
    want = torch.zeros_like(table0).index_add_(0, rows_idx, up_rows).index_add_(
        0, idx.reshape(-1), (w[..., None] * up_feats[:, None, :]).reshape(-1, 2))
    torch.testing.assert_close(table.grad, want)
    torch.testing.assert_close(rows, table0[rows_idx])
    torch.testing.assert_close(feats, (table0[idx] * w[..., None]).sum(1))
    wg = w.clone().requires_grad_(True)  # a frozen table: gradients reach the weights only
    rows, feats = ops.read_table(table0, rows_idx, idx, wg)
    assert not rows.requires_grad and feats.requires_grad
    torch.autograd.gradcheck(lambda w_: ops.read_table(table0, rows_idx, idx, w_)[1], (wg,))


def _off_border_points(dim, cfg, n, seed):
    """Points whose position is at least 0.05 cell from every cell border at every level."""
    scales, _, _, _ = ref_layout(dim, cfg)
    g = torch.Generator().manual_seed(seed)
    pts = []
    while len(pts) < n:
        p = torch.rand(dim, generator=g, dtype=torch.float64)
        fr = [(float(s) * p + 0.5) % 1.0 for s in scales]
        if all(((f > 0.05) & (f < 0.95)).all() for f in fr):
            pts.append(p)
    return torch.stack(pts)


@pytest.mark.parametrize("dim", [3, 4])
def test_gather_path_gradcheck_float64(dim):
    # 2 dense levels + 1 hashed level, small enough for finite differences over every parameter
    cfg = HashGridConfig(n_levels=3, n_features_per_level=2, log2_hashmap_size=6, base_resolution=2, per_level_scale=2.0)
    scales, res, offsets, hashed = level_layout(dim, cfg)
    assert hashed.tolist() == [False, dim == 4, True]
    x = _off_border_points(dim, cfg, 3, seed=dim).requires_grad_(True)
    params = random_params(dim, cfg, seed=7, dtype=torch.float64).requires_grad_(True)

    def f(x, params):
        return ops.hash_grid_encode_gather(x, params, offsets, res, scales, hashed, cfg.n_features_per_level)

    assert f(x, params).dtype == torch.float64
    assert torch.autograd.gradcheck(f, (x, params), eps=1e-6, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------ (d) weighted_gather
def test_weighted_gather_backward_equals_embedding_bag():
    g = torch.Generator().manual_seed(11)
    table0 = torch.randn(20, 3, generator=g, dtype=torch.float64)
    idx = torch.randint(0, 20, (30, 8), generator=g)
    idx[0] = 5  # repeated indices inside one bag and across bags
    idx[1, :4] = 5
    w0 = torch.rand(30, 8, generator=g, dtype=torch.float64)
    up = torch.randn(30, 3, generator=g, dtype=torch.float64)
    results = []
    for fn in (ops.weighted_gather,
               lambda t, i, w: torch.nn.functional.embedding_bag(i, t, per_sample_weights=w, mode="sum")):
        table, w = table0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
        out = fn(table, idx, w)
        (out * up).sum().backward()
        results.append((out.detach(), table.grad, w.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # grad of the table only (the weights constant), as in HashGrid with detached inputs
    table = table0.clone().requires_grad_(True)
    (ops.weighted_gather(table, idx, w0) * up).sum().backward()
    torch.testing.assert_close(table.grad, results[1][1], rtol=1e-12, atol=1e-12)


def test_weighted_gather_table_gradient_with_even_and_odd_feature_counts():
    """The table gradient scatters feature pairs as complex numbers on CPU (even F); odd F keeps index_add_:
    both equal a per-entry sum written out by hand."""
    g = torch.Generator().manual_seed(12)
    for nf in (1, 2, 3, 4):
        for dtype in (torch.float32, torch.float64):
            table = torch.randn(7, nf, generator=g, dtype=dtype).requires_grad_(True)
            idx = torch.randint(0, 7, (40, 4), generator=g)
            w = torch.rand(40, 4, generator=g, dtype=dtype)
            up = torch.randn(40, nf, generator=g, dtype=dtype)
            (ops.weighted_gather(table, idx, w) * up).sum().backward()
            expect = torch.zeros(7, nf, dtype=torch.float64)
            for b in range(40):
                for c in range(4):
                    expect[idx[b, c]] += w[b, c].double() * up[b].double()
            tol = 1e-5 if dtype == torch.float32 else 1e-12
            torch.testing.assert_close(table.grad.double(), expect, rtol=tol, atol=tol)


# ------------------------------------------------------------------------ (d2) volume slabs and chunks
@pytest.mark.parametrize("dim", [3, 4])
def test_volume_path_on_a_thin_slab_of_the_slowest_axis(dim, monkeypatch):
    """Points within a thin band of z (3-D) or time (4-D): the volume path gathers only the slab of
    vertices the band reaches, and still equals the literal gather path, values and gradients."""
    cfg = HashGridConfig(n_levels=3, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4, per_level_scale=2.0)
    g = torch.Generator().manual_seed(21)
    n = 6000  # n 2^D >= 17^D: every level may take the volume path
    x0 = torch.rand(n, dim, generator=g)
    x0[:, -1] = 0.40 + 0.05 * x0[:, -1]
    params0 = random_params(dim, cfg, seed=21)
    gathered = []
    inner = ops._level_by_volume
    monkeypatch.setattr(ops, "_level_by_volume", lambda x, vol, res, *a: gathered.append((vol.shape[0], res))
                        or inner(x, vol, res, *a))
    up = torch.randn(n, cfg.n_levels * 2, generator=g)
    results = []
    for limit in (0, 1 << 30):
        x, p = x0.clone().requires_grad_(True), params0.clone().requires_grad_(True)
        out = encode(x, p, dim, cfg, limit)
        (out * up).sum().backward()
        results.append((out.detach(), p.grad, x.grad))
    assert len(gathered) == cfg.n_levels
    assert all(rows < (res + 1) ** dim for rows, res in gathered), gathered  # slabs, not whole volumes
    (o0, gp0, gx0), (o1, gp1, gx1) = results
    assert (o0 - o1).abs().max() / o0.abs().max() < TOL[("volume", dim)]
    assert (gp0 - gp1).abs().max() / gp0.abs().max() < 1e-5
    assert (gx0 - gx1).abs().max() / gx0.abs().max() < 5e-5


@pytest.mark.parametrize("threads", [1, 3])
def test_volume_lookup_split_into_one_batch_per_thread(threads):
    """The CPU volume lookup runs one bilinear grid_sample batch per thread (points padded to a multiple): same
    values and gradients as one batch, at pixel coordinates (align_corners: column 0 and W - 1 are the edges)."""
    g = torch.Generator().manual_seed(4)
    img0 = torch.randn(2, 6, 7, generator=g)
    n = 3 * 4096 + 5
    cols, rows = torch.rand(n, generator=g) * 6, torch.rand(n, generator=g) * 5
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        img = img0.clone().requires_grad_(True)
        got = ops._bilinear_points(img, cols, rows)
        got.square().sum().backward()
    finally:
        torch.set_num_threads(old)
    ref_img = img0.clone().requires_grad_(True)
    grid = torch.stack([cols / 3 - 1, rows / 2.5 - 1], -1).view(1, 1, n, 2)
    ref = torch.nn.functional.grid_sample(ref_img[None], grid, align_corners=True).view(2, n).t()
    ref.square().sum().backward()
    torch.testing.assert_close(got, ref)
    # (12k points summed into 84 pixels in another order)
    torch.testing.assert_close(img.grad, ref_img.grad, rtol=1e-4, atol=1e-4)
    # and the value at one pixel coordinate by hand: bilinear between the four neighbours
    c, r = torch.tensor([2.25]), torch.tensor([3.5])
    want = (0.75 * 0.5 * img0[:, 3, 2] + 0.25 * 0.5 * img0[:, 3, 3] + 0.75 * 0.5 * img0[:, 4, 2]
            + 0.25 * 0.5 * img0[:, 4, 3])
    torch.testing.assert_close(ops._bilinear_points(img0, c, r)[0], want)


# ------------------------------------------------------------------------------------- (e) init, size
@pytest.mark.parametrize("dim", [3, 4])
def test_init_range_and_parameter_count(dim):
    torch.manual_seed(0)
    enc = HashGrid(dim, CFG_B, backend="torch")
    _, _, offsets, _ = ref_layout(dim, CFG_B)
    p = enc.params.detach()
    assert p.shape == (offsets[-1] * CFG_B.n_features_per_level,)
    assert p.abs().max() <= 1e-4
    assert p.abs().max() > 0.9e-4 and abs(float(p.mean())) < 1e-5  # spread over the range, centred
    assert len(p.unique()) > 0.99 * p.numel()
    assert enc.n_output_dims == CFG_B.n_levels * CFG_B.n_features_per_level
    # one flat tensor in the state dict (tcnn layout); the layout buffers are not persisted
    assert list(enc.state_dict()) == ["params"]
    assert [n for n, _ in enc.named_parameters()] == ["params"]


# --------------------------------------------------------------------------------------- (f) backend
def test_tcnn_backend_on_cpu_raises_clearly():
    enc = HashGrid(3, CFG_B, backend="tcnn")
    with pytest.raises(RuntimeError, match="tcnn.*CUDA|CUDA.*tcnn"):
        enc(torch.rand(4, 3))


class _ClaimsCuda(torch.Tensor):
    """A CPU tensor that says it is on CUDA, so the tinycudann branch of HashGrid.forward runs here."""

    @property
    def is_cuda(self):
        return True


def test_tcnn_path_computes_with_the_parameters_in_use_also_under_functional_call(monkeypatch):
    """tinycudann computes with its module's own ``params``: HashGrid must hand it the tensor it holds at each call.
    The warps freeze the dynamic field with torch.func.functional_call (detached parameters); the table must then
    get no gradient on the tcnn path either (as on the torch path), and the output must be the frozen values'."""
    import types

    from kinfield import _external

    class FakeEncoding(torch.nn.Module):  # a stand-in for tcnn.Encoding computing with the twin from ITS params
        def __init__(self, n_dims, config, dtype=None):
            super().__init__()
            self.params = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return ops.hash_grid_encode(x.as_subclass(torch.Tensor), self.params, grid.offsets, grid.resolutions,
                                        grid.scales, grid.hashed, CFG_B.n_features_per_level)

    monkeypatch.setattr(_external, "get", lambda name, purpose: types.SimpleNamespace(Encoding=FakeEncoding))
    grid = HashGrid(3, CFG_B, backend="tcnn")
    x = torch.rand(16, 3).as_subclass(_ClaimsCuda)
    want = ops.hash_grid_encode(x.as_subclass(torch.Tensor), grid.params, grid.offsets, grid.resolutions, grid.scales,
                                grid.hashed, CFG_B.n_features_per_level)
    out = grid(x).as_subclass(torch.Tensor)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    out.sum().backward()
    assert grid.params.grad is not None and grid.params.grad.abs().sum() > 0  # training: the table learns
    grid.params.grad = None
    shifted = {"params": grid.params.detach() + 1e-3}  # frozen (detached) and different values
    frozen = torch.func.functional_call(grid, shifted, (x,)).as_subclass(torch.Tensor)
    want = ops.hash_grid_encode(x.as_subclass(torch.Tensor), shifted["params"], grid.offsets, grid.resolutions,
                                grid.scales, grid.hashed, CFG_B.n_features_per_level)
    torch.testing.assert_close(frozen, want, rtol=0, atol=0)
    assert not frozen.requires_grad and grid.params.grad is None


def test_unknown_backend_rejected():
    with pytest.raises(ValueError, match="backend"):
        HashGrid(3, CFG_B, backend="cuda")


def test_auto_backend_on_cpu_is_the_torch_encoding():
    torch.manual_seed(0)
    enc = HashGrid(4, CFG_B, backend="auto")
    x = special_points(4)
    out = enc(x)
    assert out.shape == (x.shape[0], enc.n_output_dims) and out.dtype == torch.float32
    scales, res, offsets, hashed = level_layout(4, CFG_B)
    torch.testing.assert_close(out, ops.hash_grid_encode(x, enc.params, offsets, res, scales, hashed, 2))
    # inputs are clamped to [0, 1]
    torch.testing.assert_close(enc(torch.tensor([[1.5, -0.5, 2.0, 1.0]])), enc(torch.tensor([[1.0, 0.0, 1.0, 1.0]])))
    out.sum().backward()
    assert enc.params.grad is not None and torch.isfinite(enc.params.grad).all()


def test_empty_input_gives_empty_features_with_gradient_path():
    from kinfield.nn.hashgrid import HashGrid, HashGridConfig

    g = HashGrid(4, HashGridConfig(n_levels=3, log2_hashmap_size=10))
    out = g(torch.zeros(0, 4))
    assert out.shape == (0, 6)
    out.sum().backward()  # no crash, zero gradient
    assert float(g.params.grad.abs().sum()) == 0.0
