"""Autograd wrappers around the CUDA kernels of ``kinfield._C`` (same signatures as the twins).

Loaded lazily: nothing here touches ``_C`` until an op is called on CUDA tensors with the extension
built. Verified against the twins only on a GPU (tests/ops, marked ``cuda``).
"""
from __future__ import annotations

import torch

from ._backend import load_extension
from ._torch import ray_segments


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
    begin, counts = ray_segments(ray_ids, n_rays)
    return _CompositeBlended.apply(sigma_s.contiguous(), sigma_d.contiguous(), t_starts.contiguous(),
                                   t_ends.contiguous(), begin.contiguous(), counts.contiguous())


class _HashGridEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, params, offsets, resolutions, scales, hashed, n_features):
        out = _ext().hash_grid_fwd(x, params, offsets, resolutions, scales, hashed, n_features)
        ctx.save_for_backward(x, params, offsets, resolutions, scales, hashed)
        ctx.n_features = n_features
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, params, offsets, resolutions, scales, hashed = ctx.saved_tensors
        need_x, need_params = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g_params, g_x = _ext().hash_grid_bwd(x, params, offsets, resolutions, scales, hashed, ctx.n_features,
                                             grad_out.contiguous(), need_params, need_x)
        return (g_x if need_x else None), (g_params if need_params else None), None, None, None, None, None


def hash_grid_encode(x, params, offsets, resolutions, scales, hashed, n_features, volume_limit=1 << 22):
    """CUDA kernel of :func:`kinfield.ops._torch.hash_grid_encode` (first-order only; ``volume_limit`` is a
    CPU strategy knob of the twin and has no effect here)."""
    dev = x.device
    return _HashGridEncode.apply(
        x.to(params.dtype).contiguous(), params.contiguous(), offsets.to(dev, torch.int64).contiguous(),
        resolutions.to(dev, torch.int64).contiguous(), scales.to(dev, torch.float32).contiguous(),
        hashed.to(dev, torch.bool).contiguous(), int(n_features))
