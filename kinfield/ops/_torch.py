"""PyTorch twins of kinfield's custom ops: the specification every CUDA kernel is tested against.

Each function here has exactly the signature of the public op in :mod:`kinfield.ops`; it is written
for clarity, runs on any device, is differentiable by autograd, and never calls native code.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch

from .._constants import constant, made_once

# Primes of tiny-cuda-nn's "coherent prime" spatial hash (first one is 1 for memory coherence).
HASH_PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
_UINT32 = 0xFFFFFFFF


def hash_grid_encode(
    x: torch.Tensor,
    params: torch.Tensor,
    offsets: torch.Tensor,
    resolutions: torch.Tensor,
    scales: torch.Tensor,
    hashed: torch.Tensor,
    n_features: int,
    volume_limit: int = 1 << 22,
) -> torch.Tensor:
    """Multiresolution hash encoding, bit-compatible with tiny-cuda-nn's ``HashGrid``.

    Level ``l`` has a grid of ``resolutions[l]`` vertices per axis at scale ``scales[l]``; a point
    ``x`` in [0, 1]^D falls at ``pos = scales[l] * x + 0.5``; the ``2^D`` surrounding vertices are
    looked up (dense row-major index while the level fits, tcnn's XOR prime hash otherwise, both
    modulo the level's table size) and blended with multilinear weights.

    Two evaluation strategies compute the same function: levels with at most ``volume_limit``
    vertices are materialised as a dense volume (one gather of every vertex's table entry) and
    interpolated with ``grid_sample`` (fast on CPU, cost independent of N); other levels gather
    the ``2^D`` corners of every point (:func:`hash_grid_encode_gather`, the literal definition).

    Args:
        x: ``[N, D]`` float positions in [0, 1] (D = 3 or 4).
        params: ``[P * n_features]`` flat parameters in tcnn's layout (level-major, then table
            entry, then feature).
        offsets: ``[L + 1]`` int64 first table entry of each level.
        resolutions: ``[L]`` int64 vertices per axis at each level.
        scales: ``[L]`` float32 per-level scale (``base * b^l - 1``).
        hashed: ``[L]`` bool, True where the level is hashed instead of dense.
        n_features: features per level ``F``.
        volume_limit: largest ``(res + 1)^D`` evaluated through a materialised volume (also never
            more than ``N * 2^D``, where gathering is cheaper); 0 forces the gather path everywhere.

    Returns:
        ``[N, L * n_features]`` features, level-major (as tcnn).
    """
    n, dim = x.shape
    n_levels = int(resolutions.shape[0])
    if n == 0:  # e.g. a chunk of rays that all miss the occupied cells
        return params.new_zeros(0, n_levels * n_features) + 0.0 * params.sum()
    table = params.view(-1, n_features)
    # Each level's volume is the slab of its slowest axis (z in 3-D, time in 4-D) that the points reach (the
    # dynamic and kinematic fields compress time into part of their grid): its vertices, as the level's pos
    # (in [0.5, res - 0.5] for x in [0, 1]), for every level at once, read back with the level layout in one
    # host copy (on a GPU each read of a device scalar waits for the queue; one per call, not five per level).
    last = x[:, -1].detach().to(table.dtype)
    ends = torch.stack(torch.aminmax(last))  # NaN / inf inputs (a bug upstream) take whole volumes
    slab = torch.floor(ends[None, :] * scales.to(ends)[:, None] + 0.5)  # [L, 2] first / last vertex
    res_list, off_list, hashed_list, slab_list = _host_lists(resolutions, offsets, hashed, slab)
    finite = all(math.isfinite(v) for pair in slab_list for v in pair)
    use_volume = [_use_volume(r, dim, n, volume_limit) for r in res_list]
    out = [None] * n_levels
    gather_levels = [lvl for lvl in range(n_levels) if not use_volume[lvl]]
    volume_levels = [lvl for lvl in range(n_levels) if use_volume[lvl]]
    idx = torch.zeros(0, 2**dim, dtype=torch.int64, device=x.device)
    w = table.new_zeros(0, 2**dim)
    if gather_levels:
        sel = constant(tuple(gather_levels), resolutions.device)
        sizes = [off_list[lvl + 1] - off_list[lvl] for lvl in gather_levels]
        layout = (sum(hashed_list[lvl] for lvl in gather_levels), all(s & (s - 1) == 0 for s in sizes))
        idx, w = _corner_entries(x, offsets, resolutions[sel], scales[sel], hashed[sel], sel, layout)
        w = w.to(table.dtype)
    slabs, index = [], []
    for lvl in volume_levels:
        res = res_list[lvl]
        lo, hi = 0, res
        if finite:
            lo = max(0, min(int(slab_list[lvl][0]), res - 1))
            hi = max(lo + 1, min(int(slab_list[lvl][1]) + 1, res))  # vertices lo..hi
        per_slice = (res + 1) ** (dim - 1)
        slabs.append((lo, hi))
        index.append(_volume_index(res, dim, off_list[lvl + 1] - off_list[lvl], off_list[lvl], hashed_list[lvl],
                                   x.device)[lo * per_slice:(hi + 1) * per_slice])
    # every volume entry and every gathered corner in one read, so that the backward pass fills one table
    # gradient (with both strategies in one call, two full-size gradients and their sum cost more than the
    # reads themselves below ~10^4 points)
    rows, feats = read_table(table, torch.cat(index) if index else idx.new_zeros(0), idx, w)
    if gather_levels:
        feats = feats.view(len(gather_levels), n, n_features)
        for j, lvl in enumerate(gather_levels):
            out[lvl] = feats[j]
    for lvl, vol, (lo, hi) in zip(volume_levels, rows.split([len(i) for i in index]), slabs):
        out[lvl] = _level_by_volume(x, vol, res_list[lvl], scales[lvl], lo, hi)
    return torch.cat(out, dim=1) if n_levels > 1 else out[0]


def _host_lists(resolutions, offsets, hashed, slab):
    """``(resolutions [L] ints, offsets [L+1] ints, hashed [L] bools, slab [L] pairs of floats)`` from one device read
    (float64 holds every table offset exactly)."""
    n_levels = int(resolutions.shape[0])
    dev = slab.device
    flat = torch.cat([resolutions.to(dev, torch.float64), offsets.to(dev, torch.float64),
                      hashed.to(dev, torch.float64), slab.to(torch.float64).flatten()]).tolist()
    res = [int(v) for v in flat[:n_levels]]
    off = [int(v) for v in flat[n_levels:2 * n_levels + 1]]
    hashed_list = [bool(v) for v in flat[2 * n_levels + 1:3 * n_levels + 1]]
    rest = flat[3 * n_levels + 1:]
    return res, off, hashed_list, [rest[2 * i:2 * i + 2] for i in range(n_levels)]


def _use_volume(res: int, dim: int, n: int, volume_limit: int) -> bool:
    """Whether a level of ``res`` vertices per axis is evaluated at ``n`` points through its volume."""
    # A volume costs ~(res+1)^D table reads, the gather path ~N 2^D (measured break-even on CPU).
    return dim in (3, 4) and (res + 1) ** dim <= min(volume_limit, n * 2**dim)


def _vertex_index(vert: torch.Tensor, res: int, size: int, offset: int, is_hashed: bool) -> torch.Tensor:
    """tcnn's table entry of integer vertices ``vert [..., D]`` of one level (``[...]`` int64)."""
    dim = vert.shape[-1]
    if is_hashed:
        primes = torch.tensor(HASH_PRIMES[:dim], dtype=torch.int64, device=vert.device)
        prod = (vert * primes) & _UINT32
        idx = prod[..., 0]
        for d in range(1, dim):
            idx = idx ^ prod[..., d]
    else:
        strides = res ** torch.arange(dim, device=vert.device)
        idx = (vert * strides).sum(-1)
    return torch.remainder(idx, size) + offset


def _volume_index(res: int, dim: int, size: int, offset: int, is_hashed: bool, device) -> torch.Tensor:
    """``[(res+1)^D]`` table entries of every vertex ``0..res`` per axis, C order (last axis = x)."""
    def make():
        axes = [torch.arange(res + 1, device=device)] * dim
        grids = torch.meshgrid(*axes, indexing="ij")  # grids[0] is the slowest axis
        vert = torch.stack(grids[::-1], dim=-1).reshape(-1, dim)  # column d = axis d (x first)
        return _vertex_index(vert, res, size, offset, is_hashed)

    return made_once(("volume index", res, dim, size, offset, is_hashed, str(device)), make)


def _level_by_volume(x, vol, res, scale, lo, hi) -> torch.Tensor:
    """One level at ``x [N, D]`` from its materialised volume: ``[N, F]``.

    ``vol [(hi - lo + 1) * (res + 1)^(D-1), F]`` holds the table entries of the vertices ``0..res`` per
    axis, C order (x fastest), slowest axis (z in 3-D, time in 4-D) restricted to vertices ``lo..hi``,
    which bracket every point. Vertex ``res`` (one past the grid, reached near x = 1) is included so
    that tcnn's wrap-around of its index is reproduced exactly.

    The volume is laid out as one 2-D image of ``m x m`` tiles (``m = res + 1``) and read with bilinear
    ``grid_sample`` at the 2 (3-D) or 4 (4-D) bracketing z / time vertices, blended linearly: on CPU the 2-D
    kernel is vectorised and the 3-D one is not (forward + backward 1.7-2x faster). A point's lookups never
    leave their tile (0.5 <= pos <= res - 0.5 inside [0, 1]). The tiles are arranged so that neither image
    side is much longer than ``m^1.5`` (3-D) or ``m^2`` (4-D): ``grid_sample`` rebuilds pixel coordinates from
    [-1, 1] in float32, so its error grows with the side (about side * eps).
    """
    n, dim = x.shape
    nf = vol.shape[1]
    m, n_slab = res + 1, hi - lo + 1
    pos = x.to(vol.dtype) * scale.to(vol.dtype) + 0.5  # [N, D] in vertex units, within [0, res]
    slow = pos[:, -1] - lo  # the slab axis, within [0, n_slab - 1]
    s0 = torch.floor(slow).clamp(max=n_slab - 2).detach()
    fs = (slow - s0)[:, None]
    if dim == 3:  # z-slices as tiles, ``across`` per tile row: image [F, rows * m (y), across * m (x)]
        across = max(1, int(math.ceil(math.sqrt(n_slab))))
        n_rows = -(-n_slab // across)
        vol = vol.view(n_slab, m, m, nf)
        if n_rows * across > n_slab:
            vol = torch.cat([vol, vol.new_zeros(n_rows * across - n_slab, m, m, nf)])
        img = vol.view(n_rows, across, m, m, nf).permute(4, 0, 2, 1, 3).reshape(nf, n_rows * m, across * m)
        z = torch.cat([s0, s0 + 1.0])
        tile_row = torch.floor(z / across)
        rows = tile_row * m + pos[:, 1].repeat(2)
        cols = (z - tile_row * across) * m + pos[:, 0].repeat(2)
        f = _bilinear_points(img, cols, rows)  # [2N, F]
        return f[:n] * (1.0 - fs) + f[n:] * fs
    # 4-D: image [F, z * m + y, t * m + x] (time and x share the columns, so neither side exceeds m^2)
    img = vol.view(n_slab, m, m, m, nf).permute(4, 1, 2, 0, 3).reshape(nf, m * m, n_slab * m)
    z0 = torch.floor(pos[:, 2]).clamp(max=res - 1).detach()
    fz = (pos[:, 2] - z0)[:, None]
    rows = torch.cat([(z0 + dz) * m + pos[:, 1] for _ in (0, 1) for dz in (0.0, 1.0)])
    cols = torch.cat([(s0 + ds) * m + pos[:, 0] for ds in (0.0, 1.0) for _ in (0, 1)])
    f = _bilinear_points(img, cols, rows).view(4, n, nf)  # (t0, z0), (t0, z1), (t1, z0), (t1, z1)
    return (f[0] * (1.0 - fz) + f[1] * fz) * (1.0 - fs) + (f[2] * (1.0 - fz) + f[3] * fz) * fs


def _bilinear_points(img: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Bilinear ``grid_sample`` of ``img [F, H, W]`` at pixel coordinates ``cols, rows [N]`` (align_corners): ``[N, F]``.

    On CPU the points go in one batch per thread (the image expanded, not copied)."""
    nf, h, w = img.shape
    g = torch.stack([cols * (2.0 / (w - 1)) - 1.0, rows * (2.0 / (h - 1)) - 1.0], dim=-1)
    n = g.shape[0]
    chunks = 1 if g.is_cuda else max(1, min(torch.get_num_threads(), n // 4096))
    per = -(-n // chunks)
    if chunks * per != n:
        g = torch.cat([g, g.new_zeros(chunks * per - n, 2)])
    out = torch.nn.functional.grid_sample(
        img[None].expand(chunks, -1, -1, -1), g.view(chunks, 1, per, 2), mode="bilinear", align_corners=True)
    return out.view(chunks, nf, per).transpose(1, 2).reshape(chunks * per, nf)[:n]


def hash_grid_encode_gather(
    x: torch.Tensor,
    params: torch.Tensor,
    offsets: torch.Tensor,
    resolutions: torch.Tensor,
    scales: torch.Tensor,
    hashed: torch.Tensor,
    n_features: int,
    levels: torch.Tensor = None,
) -> torch.Tensor:
    """Hash encoding by gathering the ``2^D`` corners of every point: the literal definition.

    Same arguments as :func:`hash_grid_encode` except that ``resolutions``, ``scales`` and
    ``hashed`` may describe a subset ``levels`` (``[L']`` int64) of the levels in ``offsets``.

    Returns:
        ``[N, L' * n_features]``.
    """
    n = x.shape[0]
    if levels is None:
        levels = torch.arange(int(resolutions.shape[0]), device=x.device)
    idx, w = _corner_entries(x, offsets, resolutions, scales, hashed, levels)
    table = params.view(-1, n_features)
    feats = weighted_gather(table, idx, w.to(table.dtype))
    return feats.view(-1, n, n_features).transpose(0, 1).reshape(n, -1)


def _corner_entries(x, offsets, resolutions, scales, hashed, levels, layout=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Table entries and multilinear weights of the ``2^D`` corners of every point at each of ``levels``:
    ``(idx [L' * N, 2^D] int64, w [L' * N, 2^D])``, level-major rows (arguments as :func:`hash_grid_encode_gather`;
    ``layout``: ``(number of hashed levels, every table size a power of two)`` of ``levels`` when the caller
    has them on the host, else they are read from the tensors)."""
    n, dim = x.shape
    dev = x.device
    n_levels = int(levels.shape[0])
    # Level-major, points last ([L, D, 2, N] per axis, [L, C, N] per corner): each level's corners are looked up
    # (and their gradients scattered) together, within that level's part of the table (~2x faster on CPU than
    # interleaving the levels point by point), and every elementwise step runs over N contiguous points (with
    # the 2 or 2^d corners innermost its loops were 2-16 long: 1.5x slower). float32 as tcnn (float64 inputs
    # stay float64, for gradcheck).
    pos = x.to(torch.promote_types(x.dtype, torch.float32)).t()[None] * scales.to(dev)[:, None, None] + 0.5  # [L, D, N]
    grid_f = torch.floor(pos)
    frac = pos - grid_f  # [L, D, N]
    lower = grid_f.to(torch.int64)
    vert = torch.stack([lower, lower + 1], dim=2)  # [L, D, 2, N]: the two vertices per axis (lower, upper)
    w_axis = torch.stack([1.0 - frac, frac], dim=2)  # [L, D, 2, N]
    res = resolutions.to(dev)
    is_hashed = hashed.to(dev)
    lv = levels.to(dev)
    sizes = (offsets[1:] - offsets[:-1]).to(dev)[lv][:, None, None]
    first = offsets[:-1].to(dev)[lv][:, None, None]
    if layout is None:
        layout = (int(is_hashed.sum()), bool(((sizes & (sizes - 1)) == 0).all()))
    n_hashed, pow2 = layout  # compute only the index kinds some level uses
    if n_hashed < n_levels:
        strides = res[:, None] ** torch.arange(dim, device=dev)[None, :]  # [L, D]
        idx = _combine_axes(vert * strides[:, :, None, None], torch.add)  # [L, C, N] dense
    if n_hashed > 0:
        primes = constant(HASH_PRIMES[:dim], dev)
        hash_idx = _combine_axes((vert * primes[None, :, None, None]) & _UINT32, torch.bitwise_xor)
        idx = hash_idx if n_hashed == n_levels else torch.where(is_hashed[:, None, None], hash_idx, idx)
    if pow2:  # every table a power of two (the hashed levels'): a mask
        idx = (idx & (sizes - 1)) + first  # [L, C, N]
    else:
        idx = torch.remainder(idx, sizes) + first
    w = _combine_axes(w_axis, torch.mul)  # [L, C, N] multilinear weights
    n_corners = idx.shape[1]
    return idx.transpose(1, 2).reshape(n_levels * n, n_corners), w.transpose(1, 2).reshape(n_levels * n, n_corners)


def _combine_axes(per_axis: torch.Tensor, op) -> torch.Tensor:
    """Outer-combine per-axis pairs ``[L, D, 2, N]`` into corners ``[L, 2^D, N]`` with ``op``.

    Corner ``c`` takes entry ``(c >> d) & 1`` of axis ``d``.
    """
    dim = per_axis.shape[1]
    out = per_axis[:, 0]  # [L, 2, N]
    for d in range(1, dim):
        out = op(per_axis[:, d, :, None, :], out[:, None, :, :]).flatten(1, 2)  # [L, 2^(d+1), N]
    return out


def weighted_gather(table: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``out[b] = sum_c w[b, c] * table[idx[b, c]]``, differentiable in ``table`` and ``w``.

    Same result as ``embedding_bag(mode="sum")``; its backward scatters (:func:`_scatter_rows`) instead
    of embedding_bag's sort-based backward (3-5x faster on CPU).

    Args:
        table: ``[P, F]``; idx: ``[B, C]`` int64; w: ``[B, C]``.

    Returns:
        ``[B, F]``.
    """
    return read_table(table, idx.new_zeros(0), idx, w)[1]


def read_table(table: torch.Tensor, rows_idx: torch.Tensor, idx: torch.Tensor, w: torch.Tensor):
    """Two reads of one table with a single table gradient: ``(table[rows_idx] [K, F], weighted_gather(table, idx, w)
    [B, F])`` for ``rows_idx [K]``, ``idx [B, C]`` int64 and ``w [B, C]`` (either read may be empty)."""
    return _TableReads.apply(table, rows_idx, idx, w)


class _TableReads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table, rows_idx, idx, w):
        ctx.save_for_backward(table, rows_idx, idx, w)
        feats = torch.nn.functional.embedding_bag(idx, table, per_sample_weights=w, mode="sum") if idx.numel() \
            else table.new_zeros(idx.shape[0], table.shape[1])
        rows = table.index_select(0, rows_idx)
        if not ctx.needs_input_grad[0]:  # a frozen table: no gradient flows back through the plain rows
            ctx.mark_non_differentiable(rows)
        return rows, feats

    @staticmethod
    def backward(ctx, grad_rows, grad_feats):
        table, rows_idx, idx, w = ctx.saved_tensors
        grad_table = grad_w = None
        if ctx.needs_input_grad[0]:
            contrib = (w[..., None] * grad_feats[:, None, :]).reshape(-1, table.shape[1])  # [B * C, F]
            grad_table = _scatter_rows(table, (rows_idx, grad_rows), (idx.reshape(-1), contrib))
        if ctx.needs_input_grad[3]:
            # one small matrix product per row: [C, F] corner features @ [F] cotangent (a broadcast product
            # summed over the F features, a short inner axis, took 2x as long on CPU)
            corners = table.index_select(0, idx.reshape(-1)).view(*idx.shape, -1)  # [B, C, F]
            grad_w = torch.bmm(corners, grad_feats[:, :, None])[..., 0]
        return grad_table, None, None, grad_w


def _scatter_rows(table: torch.Tensor, *parts: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``zeros_like(table)`` with ``index_add_(0, idx, rows)`` of every ``(idx [K], rows [K, F])`` in ``parts``
    (``table [P, F]``).

    On CPU with an even F the feature pairs are added as complex numbers (bit-identical sums) by ``scatter_add_``
    on a 1-D view: 2-4x faster than ``index_add_`` of F-wide rows.
    """
    nf = table.shape[1]
    out = torch.zeros_like(table)
    complex_pairs = not (table.is_cuda or nf % 2 or not table.is_contiguous())
    half = nf // 2
    for idx, rows in parts:
        if idx.numel() == 0:
            continue
        if not complex_pairs:
            out.index_add_(0, idx, rows)
            continue
        flat = idx if half == 1 else (idx[:, None] * half + torch.arange(half, device=idx.device)).reshape(-1)
        torch.view_as_complex(out.view(-1, 2)).scatter_add_(0, flat, torch.view_as_complex(rows.reshape(-1, 2).contiguous()))
    return out


def composite_blended(
    sigma_s: torch.Tensor,
    sigma_d: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_ids: torch.Tensor,
    n_rays: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Static + dynamic volume-rendering weights on packed samples (METHOD 1.4).

    Transmittance comes from the summed density, ``T_k = exp(-sum_{l<k} (sigma_s + sigma_d)_l delta_l)``,
    and each field gets its own weight ``w^f_k = (1 - exp(-sigma^f_k delta_k)) T_k``.

    Args:
        sigma_s, sigma_d: ``[M]`` non-negative densities of the static / dynamic field.
        t_starts, t_ends: ``[M]`` sample interval bounds along the ray (world distance).
        ray_ids: ``[M]`` int64 ray of each sample; samples of one ray are contiguous and sorted by t.
        n_rays: number of rays ``R``.

    Returns:
        ``(w_s [M], w_d [M], trans [M])``: per-field weights and the transmittance before each sample.
    """
    delta = t_ends - t_starts
    tau_s = sigma_s * delta
    tau_d = sigma_d * delta
    tau = tau_s + tau_d
    trans = torch.exp(-exclusive_segment_cumsum(tau, ray_ids, n_rays))
    w_s = (1.0 - torch.exp(-tau_s)) * trans
    w_d = (1.0 - torch.exp(-tau_d)) * trans
    return w_s, w_d, trans


def exclusive_segment_cumsum(values: torch.Tensor, ray_ids: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Exclusive cumulative sum restarting at every ray (samples of a ray contiguous).

    Computed in float64 so long packed buffers keep fp32-level accuracy per ray.

    Args:
        values: ``[M]``; ray_ids: ``[M]`` int64 sorted; n_rays: ``R``.

    Returns:
        ``[M]`` same dtype as ``values``.
    """
    if values.numel() == 0:
        return values
    v64 = values.to(torch.float64)
    inclusive = torch.cumsum(v64, 0)
    exclusive = inclusive - v64
    first, _ = ray_segments(ray_ids, n_rays)
    base = exclusive[first.clamp(max=values.numel() - 1)]  # [R]
    return (exclusive - base[ray_ids]).clamp_min(0).to(values.dtype)


def ray_segments(ray_ids: torch.Tensor, n_rays: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each ray's first sample and sample count in a packed buffer: ``(begin [R], count [R])`` int64.

    ``ray_ids [M]`` must be sorted (samples of a ray contiguous, rays in order). A binary search of the ray
    boundaries rather than ``bincount``, whose output size is read back to the host (a sync on a GPU).
    """
    edges = torch.searchsorted(ray_ids, torch.arange(n_rays + 1, device=ray_ids.device, dtype=ray_ids.dtype))
    return edges[:-1], edges[1:] - edges[:-1]
