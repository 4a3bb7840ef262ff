"""PSNR / SSIM: closed forms, a naive reference SSIM, masks, and agreement with scikit-image."""
import math

import numpy as np
import pytest
import torch

from kinfield.metrics import psnr, ssim
from kinfield.metrics.image import ssim_map

# ours vs skimage's structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
# channel_axis=-1, data_range=1): identical up to float64 round-off (skimage crops the reflect-padded border
# before averaging, so both average exactly the same 'valid' windows).
SKIMAGE_TOL = 1e-6


def _img(h, w, seed=0, c=3):
    """Smooth-ish random image [h, w, c] in [0, 1] (random field + gentle blur via cumulative sums)."""
    rng = np.random.default_rng(seed)
    x = rng.random((h, w, c))
    x = 0.5 * x + 0.5 * np.cumsum(np.cumsum(x - 0.5, axis=0), axis=1) / np.sqrt(h * w)
    return np.clip(x - x.min() + 0.05, 0.0, 1.0)


def _naive_ssim(a, b):
    """Direct per-window SSIM (Gaussian 11x11, sigma 1.5, 'valid'), per channel then averaged."""
    n, sigma = 11, 1.5
    g = np.exp(-0.5 * ((np.arange(n) - 5) / sigma) ** 2)
    win = np.outer(g, g)
    win /= win.sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    H, W, C = a.shape
    vals = []
    for ch in range(C):
        for i in range(H - n + 1):
            for j in range(W - n + 1):
                pa = a[i:i + n, j:j + n, ch]
                pb = b[i:i + n, j:j + n, ch]
                ma, mb = (win * pa).sum(), (win * pb).sum()
                va = (win * (pa - ma) ** 2).sum()
                vb = (win * (pb - mb) ** 2).sum()
                cov = (win * (pa - ma) * (pb - mb)).sum()
                vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_psnr_constant_error_closed_form():
    gt = torch.as_tensor(0.2 + 0.6 * _img(16, 20, 1), dtype=torch.float32)
    for e in (0.01, 0.05, 0.1):
        assert psnr(gt + e, gt) == pytest.approx(-10 * math.log10(e * e), abs=1e-4)
    assert psnr(gt, gt) == math.inf


def test_psnr_masked_and_numpy():
    gt = 0.2 + 0.6 * _img(16, 20, 2)
    mask = np.zeros((16, 20), bool)
    mask[3:9, 4:15] = True
    pred = gt + np.where(mask[..., None], 0.05, 0.2)
    assert psnr(pred, gt, mask=mask) == pytest.approx(-10 * math.log10(0.05 ** 2), abs=1e-9)
    assert psnr(pred, gt, mask=~mask) == pytest.approx(-10 * math.log10(0.2 ** 2), abs=1e-9)
    # float weights: weighted MSE
    wts = np.where(mask, 3.0, 1.0)
    n_in, n_out = mask.sum(), (~mask).sum()
    mse = (3 * n_in * 0.05 ** 2 + n_out * 0.2 ** 2) / (3 * n_in + n_out)
    assert psnr(torch.as_tensor(pred), torch.as_tensor(gt), mask=torch.as_tensor(wts)) == pytest.approx(
        -10 * math.log10(mse), abs=1e-9
    )
    assert math.isnan(psnr(pred, gt, mask=np.zeros((16, 20), bool)))


def test_ssim_identity_and_monotone():
    x = torch.as_tensor(_img(40, 48, 3), dtype=torch.float32)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    g = torch.Generator().manual_seed(0)
    vals = [ssim((x + s * torch.randn(x.shape, generator=g)).clamp(0, 1), x) for s in (0.01, 0.05, 0.2)]
    assert 1.0 > vals[0] > vals[1] > vals[2] > 0.0


def test_ssim_matches_naive_loop():
    a = _img(19, 17, 4)
    b = np.clip(a + 0.08 * np.random.default_rng(5).standard_normal(a.shape), 0, 1)
    assert ssim(b, a) == pytest.approx(_naive_ssim(b, a), abs=1e-10)
    assert ssim_map(b, a).shape == (9, 7, 3)


def test_ssim_matches_skimage():
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image not installed")
    rng = np.random.default_rng(6)
    for shape in [(48, 64, 3), (31, 45, 3)]:
        a = _img(*shape[:2], seed=shape[0])
        b = np.clip(a + 0.1 * rng.standard_normal(shape), 0, 1)
        ref = skm.structural_similarity(
            b, a, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=1
        )
        assert abs(ssim(b, a) - ref) < SKIMAGE_TOL


def test_ssim_masked():
    a = _img(40, 40, 7)
    b = a.copy()
    b[:, 20:] = np.clip(b[:, 20:] + 0.15 * np.random.default_rng(8).standard_normal(b[:, 20:].shape), 0, 1)
    assert ssim(b, a, mask=np.ones((40, 40))) == pytest.approx(ssim(b, a), abs=1e-12)
    left = np.zeros((40, 40), bool)
    left[:, :10] = True  # window centres in columns 5..9 -> windows cover columns 0..14 only: untouched
    assert ssim(b, a, mask=left) == pytest.approx(1.0, abs=1e-12)
    right = ~left
    m = ssim_map(b, a).numpy()
    cropped = right[5:-5, 5:-5]
    assert ssim(b, a, mask=right) == pytest.approx(float(m[cropped].mean()), abs=1e-12)
    assert ssim(b, a, mask=right) < ssim(b, a) < 1.0


def test_integer_images_are_refused_rather_than_scored_as_if_255_were_1():
    img = np.zeros((16, 16, 3), np.uint8)
    for fn in (psnr, ssim):
        with pytest.raises(ValueError, match="expected float images in \\[0, 1\\], got uint8"):
            fn(img, img.astype(np.float32))
        with pytest.raises(ValueError, match="got torch.uint8"):
            fn(torch.zeros(16, 16, 3), torch.from_numpy(img))
