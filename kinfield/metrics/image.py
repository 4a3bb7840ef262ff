"""Full-reference image metrics: PSNR and SSIM (NeRF-paper conventions).

Images are ``[H, W, C]`` (usually ``C == 3``) or ``[H, W]`` float arrays in ``[0, 1]``; torch tensors
and numpy arrays are both accepted. Everything is computed in float64 on CPU (or the input's device),
and a Python ``float`` is returned.

SSIM
----
``ssim`` is the SSIM used by the NeRF / mip-NeRF evaluation code (``compute_ssim`` in mip-NeRF's JAX
``math.py``): an 11x11 Gaussian window (sigma 1.5, separable, normalised), ``K1 = 0.01``,
``K2 = 0.03``, data range 1, *valid* filtering (no padding: the SSIM map is ``[H-10, W-10]``),
variances clipped at 0 and the covariance clipped to ``|cov| <= sqrt(var_x var_y)``, computed per
channel and averaged over pixels and channels.

Relation to scikit-image: ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=1)`` filters with
``scipy.ndimage.gaussian_filter`` (reflect padding, truncate 3.5 -> the same 11-tap window) but then
averages the map only after cropping a 5-pixel border, i.e. exactly over the window positions that
need no padding. The two means therefore agree up to floating point (and the variance clipping, which
only acts on round-off-level negative variances); ``tests/metrics/test_image_metrics.py`` checks
``|ours - skimage| < 1e-6``. Skimage's ``full=True`` *map* does contain reflect-padded borders, so a
masked mean of that map differs from ``ssim(..., mask=...)`` near the image border.

Masks (NSFF "dynamic region" protocol)
--------------------------------------
``mask`` is ``[H, W]`` bool or float weights. ``psnr`` uses the (weighted) MSE over masked pixels and
all channels; ``ssim`` takes the weighted mean of the SSIM map, where each map entry is weighted by the
mask value at its window centre (the mask is cropped by 5 pixels on each side to align it with the
valid map). An empty mask gives ``nan``.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]

__all__ = ["psnr", "ssim", "ssim_map", "mse"]

SSIM_WINDOW = 11  # the Gaussian window's side (pixels)
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _as_f64(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    return x.detach().to(torch.float64)


def _prep(pred: ArrayLike, gt: ArrayLike):
    """Return ``pred, gt`` as float64 ``[H, W, C]`` tensors on the same device."""
    for x in (pred, gt):  # an 8-bit image would be scored as if 255 were 1
        if not (x.is_floating_point() if isinstance(x, torch.Tensor) else np.asarray(x).dtype.kind == "f"):
            raise ValueError(f"expected float images in [0, 1], got {getattr(x, 'dtype', type(x))} (divide 8-bit "
                             "images by 255)")
    p, g = _as_f64(pred), _as_f64(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {tuple(p.shape)} vs {tuple(g.shape)}")
    if p.ndim == 2:
        p, g = p[..., None], g[..., None]
    if p.ndim != 3:
        raise ValueError(f"expected [H, W, C] or [H, W] images, got shape {tuple(p.shape)}")
    return p, g.to(p.device)


def _prep_mask(mask: Optional[ArrayLike], hw, device) -> Optional[torch.Tensor]:
    if mask is None:
        return None
    m = _as_f64(mask).to(device)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if tuple(m.shape) != tuple(hw):
        raise ValueError(f"mask must be [H, W] = {tuple(hw)}, got {tuple(m.shape)}")
    return m


def mse(pred: ArrayLike, gt: ArrayLike, mask: Optional[ArrayLike] = None) -> float:
    """Mean squared error over all pixels and channels (or the mask-weighted mean over pixels)."""
    p, g = _prep(pred, gt)
    se = (p - g) ** 2  # [H, W, C]
    m = _prep_mask(mask, p.shape[:2], p.device)
    if m is None:
        return float(se.mean())
    denom = m.sum() * se.shape[-1]
    if float(denom) <= 0:
        return float("nan")
    return float((se * m[..., None]).sum() / denom)


def psnr(pred: ArrayLike, gt: ArrayLike, mask: Optional[ArrayLike] = None) -> float:
    """PSNR in dB for data range 1: ``-10 log10(MSE)``.

    pred, gt: ``[H, W, 3]`` (or ``[H, W, C]`` / ``[H, W]``) in [0, 1]; mask: optional ``[H, W]``
    bool/float weights (MSE over masked pixels). Returns ``inf`` for identical images.
    """
    e = mse(pred, gt, mask)
    if math.isnan(e):
        return float("nan")
    if e <= 0.0:
        return float("inf")
    return -10.0 * math.log10(e)


def _gaussian_1d(size: int = SSIM_WINDOW, sigma: float = _SSIM_SIGMA, dtype=torch.float64, device=None):
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim_map(pred: ArrayLike, gt: ArrayLike) -> torch.Tensor:
    """Per-pixel, per-channel SSIM map with valid filtering.

    pred, gt: ``[H, W, C]`` (or ``[H, W]``) in [0, 1], ``H, W >= 11``. Returns float64
    ``[H - 10, W - 10, C]``; entry ``(i, j)`` belongs to the window centred at pixel ``(i + 5, j + 5)``.
    """
    p, g = _prep(pred, gt)
    H, W, C = p.shape
    if H < SSIM_WINDOW or W < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {H}x{W}")
    w = _gaussian_1d(device=p.device)
    x, y = p.permute(2, 0, 1), g.permute(2, 0, 1)  # [C, H, W]
    # separable 'valid' Gaussian filtering of the 5 moments as 11 shifted-slice accumulations per axis
    # (in place: much faster than a float64 grouped conv2d on CPU)
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=0)  # [5C, H, W]
    n = SSIM_WINDOW
    Ho, Wo = H - n + 1, W - n + 1
    wl = [float(v) for v in w]
    tmp = stack[:, 0:Ho, :] * wl[0]
    for k in range(1, n):
        tmp.add_(stack[:, k:k + Ho, :], alpha=wl[k])
    f = tmp[:, :, 0:Wo] * wl[0]
    for k in range(1, n):
        f.add_(tmp[:, :, k:k + Wo], alpha=wl[k])
    del stack, tmp
    mu_x, mu_y, e_xx, e_yy, e_xy = f.split(C, dim=0)
    s_xx = torch.clamp(e_xx - mu_x * mu_x, min=0.0)
    s_yy = torch.clamp(e_yy - mu_y * mu_y, min=0.0)
    s_xy = e_xy - mu_x * mu_y
    s_xy = torch.sign(s_xy) * torch.minimum(torch.sqrt(s_xx * s_yy), s_xy.abs())
    c1 = (_SSIM_K1 * 1.0) ** 2
    c2 = (_SSIM_K2 * 1.0) ** 2
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * s_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (s_xx + s_yy + c2)
    return (num / den).permute(1, 2, 0)  # [H-10, W-10, C]


def ssim(pred: ArrayLike, gt: ArrayLike, mask: Optional[ArrayLike] = None) -> float:
    """Mean SSIM (NeRF / mip-NeRF convention, see module docstring).

    pred, gt: ``[H, W, 3]`` (or ``[H, W, C]`` / ``[H, W]``) in [0, 1]; mask: optional ``[H, W]``
    bool/float weights; the valid SSIM map is averaged with the mask value at each window centre.
    """
    smap = ssim_map(pred, gt)  # [H-10, W-10, C]
    if mask is None:
        return float(smap.mean())
    hw = (smap.shape[0] + SSIM_WINDOW - 1, smap.shape[1] + SSIM_WINDOW - 1)
    m = _prep_mask(mask, hw, smap.device)
    r = SSIM_WINDOW // 2
    m = m[r:-r, r:-r]
    denom = m.sum() * smap.shape[-1]
    if float(denom) <= 0:
        return float("nan")
    return float((smap * m[..., None]).sum() / denom)
