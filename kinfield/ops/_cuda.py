"""Autograd wrappers around the CUDA kernels of ``kinfield._C`` (same signatures as the twins).

Loaded lazily: nothing here touches ``_C`` until an op is called on CUDA tensors with the extension
built. Verified against the twins only on a GPU (tests/ops, marked ``cuda``).
"""
from __future__ import annotations

import torch

from ._backend import load_extension


def _ext():
    ext, why = load_extension()
    if ext is None:
        raise RuntimeError(f"CUDA kernels unavailable: {why}")
    return ext


class _CompositeBlended(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sigma_s, sigma_d, t_starts, t_ends, ray_begin, ray_count):
        w_s, w_d, trans = _ext().composite_blended_fwd(sigma_s, sigma_d, t_starts, t_ends, ray_begin, ray_count)
        ctx.save_for_backward(sigma_s, sigma_d, t_starts, t_ends, ray_begin, ray_count, w_s, w_d, trans)
        return w_s, w_d, trans

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_ws, g_wd, g_trans):
        saved = ctx.saved_tensors
        grads = _ext().composite_blended_bwd(*saved, g_ws.contiguous(), g_wd.contiguous(), g_trans.contiguous())
        return grads[0], grads[1], grads[2], grads[3], None, None


def composite_blended(sigma_s, sigma_d, t_starts, t_ends, ray_ids, n_rays):
    """CUDA kernel of :func:`kinfield.ops._torch.composite_blended` (first-order only)."""
    counts = torch.bincount(ray_ids, minlength=n_rays)
    begin = torch.cumsum(counts, 0) - counts
    return _CompositeBlended.apply(sigma_s.contiguous(), sigma_d.contiguous(), t_starts.contiguous(),
                                   t_ends.contiguous(), begin.contiguous(), counts.contiguous())
