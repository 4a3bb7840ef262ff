"""The spherical-harmonics basis of view directions (kinfield.nn.encodings) against its defining properties."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kinfield.nn import sh_encode


def _sphere_quadrature(n_theta: int = 64, n_phi: int = 128):
    """Gauss-Legendre in cos(theta) times the trapezoid rule in phi: exact for polynomials of degree < 2 n_theta
    on the unit sphere. Returns unit directions ``[M, 3]`` and weights ``[M]`` summing to 4 pi."""
    z, wz = np.polynomial.legendre.leggauss(n_theta)
    phi = np.arange(n_phi) * (2 * math.pi / n_phi)
    z, phi = np.meshgrid(z, phi, indexing="ij")
    r = np.sqrt(1 - z**2)
    nodes = torch.tensor(np.stack([r * np.cos(phi), r * np.sin(phi), z], -1).reshape(-1, 3))
    weights = torch.tensor((wz[:, None] * np.full(n_phi, 2 * math.pi / n_phi)[None]).reshape(-1))
    return nodes, weights


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_the_basis_is_orthonormal_on_the_sphere(degree):
    d, w = _sphere_quadrature()
    y = sh_encode(d, degree)  # float64 in, float64 out
    assert y.shape == (d.shape[0], degree**2) and y.dtype == torch.float64
    gram = (y * w[:, None]).t() @ y
    torch.testing.assert_close(gram, torch.eye(degree**2, dtype=torch.float64), atol=1e-12, rtol=0)


def test_each_band_is_a_harmonic_of_its_degree_and_follows_tcnn_signs():
    # band l spans the harmonic polynomials of degree l: invariant in total under rotations (the band's squared
    # norm is (2l + 1) / (4 pi) at every direction, the addition theorem) ...
    d = torch.nn.functional.normalize(torch.randn(500, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
                                      dim=-1)
    y = sh_encode(d, 4)
    for band in range(4):
        part = y[:, band**2:(band + 1) ** 2]
        torch.testing.assert_close((part**2).sum(-1), torch.full((500,), (2 * band + 1) / (4 * math.pi),
                                                                 dtype=torch.float64))
    # ... and tcnn's ordering and signs at the axes: Y_1 = -c y, Y_2 = c z, Y_3 = -c x with c = sqrt(3 / (4 pi))
    c = math.sqrt(3 / (4 * math.pi))
    axes = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(sh_encode(axes, 2)[:, 1:], torch.tensor([[0, 0, -c], [-c, 0, 0], [0, c, 0]],
                                                                      dtype=torch.float64))


def test_bad_degree_is_refused():
    with pytest.raises(ValueError, match="degree"):
        sh_encode(torch.zeros(2, 3), 5)


def test_every_coefficient_at_one_direction_against_the_closed_forms():
    """The 16 real harmonics (tcnn's order and signs) at a direction with no zero coordinate, each written from its
    normalisation constant sqrt((2l + 1) / (4 pi) ...), so that any sign, factor or order slip shows."""
    x, y, z = (v / math.sqrt(14.0) for v in (1.0, 2.0, -3.0))
    pi = math.pi
    want = [
        math.sqrt(1 / (4 * pi)),
        -math.sqrt(3 / (4 * pi)) * y, math.sqrt(3 / (4 * pi)) * z, -math.sqrt(3 / (4 * pi)) * x,
        math.sqrt(15 / (4 * pi)) * x * y, -math.sqrt(15 / (4 * pi)) * y * z, math.sqrt(5 / (16 * pi)) * (3 * z * z - 1),
        -math.sqrt(15 / (4 * pi)) * x * z, math.sqrt(15 / (16 * pi)) * (x * x - y * y),
        -math.sqrt(35 / (32 * pi)) * y * (3 * x * x - y * y), math.sqrt(105 / (4 * pi)) * x * y * z,
        -math.sqrt(21 / (32 * pi)) * y * (5 * z * z - 1), math.sqrt(7 / (16 * pi)) * z * (5 * z * z - 3),
        -math.sqrt(21 / (32 * pi)) * x * (5 * z * z - 1), math.sqrt(105 / (16 * pi)) * z * (x * x - y * y),
        -math.sqrt(35 / (32 * pi)) * x * (x * x - 3 * y * y),
    ]
    got = sh_encode(torch.tensor([[x, y, z]], dtype=torch.float64), 4)[0]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-12, rtol=0)


def test_the_softplus_activation_is_sharpened_to_beta_10():
    """MLP 1 -> 1 -> 1, weights 1, biases 0: the output at 0 is softplus_10(0) = ln 2 / 10."""
    from kinfield.nn import MLP

    mlp = MLP(1, 1, 1, 1, activation="softplus")
    linear = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer in linear:
            layer.weight.fill_(1.0)
            layer.bias.zero_()
    assert len(linear) == 2
    with torch.no_grad():
        assert float(mlp(torch.zeros(1, 1))) == pytest.approx(math.log(2) / 10, abs=1e-7)
        assert float(mlp(torch.ones(1, 1))) == pytest.approx(math.log1p(math.exp(10)) / 10, abs=1e-6)
