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
