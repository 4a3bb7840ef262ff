"""Physics residuals of a kinematic field, with derivatives by central finite differences (METHOD 2.5-2.9, 3).

Everything here is differentiated once, in world space, in float32: probes are placed at world
offsets ``+-eps_x`` along each axis and ``+-eps_t`` in time around detached points, the field
values at the probes keep their gradients, and the denominators are the actual probe distances
(time probes are clamped to [0, 1]). Probes leaving the scene box are reported as invalid so the
caller can mask those points (the reference overwrote that mask, METHOD 3 anomaly 3).

Shapes: ``N`` points; ``C`` channels of the differentiated field; gradients ``[N, C, 3]`` with
``grad[n, c, j] = d f_c / d x_j``.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from .._constants import constant
from ..nn.grad import scale_grad


# unit offsets of the 9 probes of central_differences in space ([9, 3], in units of eps_x) and of the two time probes
_PROBE_STEPS = ((0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1), (0, 0, 0), (0, 0, 0))
_TIME_STEPS = (1, -1)


def central_differences(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    eps_x,
    eps_t,
    aabb: torch.Tensor = None,
    inside: Callable[[torch.Tensor], torch.Tensor] = None,
) -> Dict[str, torch.Tensor]:
    """Value, spatial gradient and time derivative of ``fn`` at ``(x, t)`` from 9 evaluations.

    Args:
        fn: ``(x [M, 3], t [M]) -> [M, C]``, evaluated once on all 9N probes.
        x: ``[N, 3]`` world points (detached here); t: ``[N]`` times in [0, 1].
        eps_x, eps_t: scalar or ``[N]`` spatial (world) and temporal steps.
        aabb: ``[6]`` box; probes outside it make the point invalid.
        inside: instead of ``aabb``, ``x [M, 3] -> [M]`` truthy where a probe is valid.

    Returns:
        dict with ``value [N, C]``, ``grad [N, C, 3]`` (a strided view: slice or split its dimensions, or copy it
        before flattening them), ``dt [N, C]``, ``valid [N]`` bool.
    """
    x = x.detach()
    t = t.detach().reshape(-1)
    n = x.shape[0]
    ex = torch.as_tensor(eps_x, dtype=x.dtype, device=x.device).expand(n)
    et = torch.as_tensor(eps_t, dtype=x.dtype, device=x.device)
    # probes [9, N]: the point, +-x, +-y, +-z, then the point at t + eps_t and t - eps_t (clamped to [0, 1])
    xs = torch.addcmul(x, constant(_PROBE_STEPS, x.device, x.dtype)[:, None, :], ex[None, :, None])  # [9, N, 3]
    t_pm = torch.addcmul(t, constant(_TIME_STEPS, x.device, x.dtype)[:, None], et).clamp(0.0, 1.0)  # [2, N]
    ts = torch.cat([t.expand(7, n), t_pm])  # [9, N]
    vals = fn(xs.view(9 * n, 3), ts.view(9 * n))
    # (split / unbind: one node each in the backward pass, where indexing made one full-size gradient per index)
    v0, v_x, v_t = vals.view(9, n, -1).split([1, 6, 2])
    plus, minus = v_x.view(3, 2, n, -1).unbind(1)  # [3, N, C] each
    grad = ((plus - minus) / (2.0 * ex[None, :, None])).permute(1, 2, 0)  # [N, C, 3]
    t_plus, t_minus = v_t.unbind(0)
    dt = (t_plus - t_minus) / (t_pm[0] - t_pm[1]).clamp_min(1e-12)[:, None]
    if aabb is not None:
        lo, hi = aabb[:3], aabb[3:]
        probes = xs[:7]  # [7, N, 3]
        valid = ((probes >= lo) & (probes <= hi)).all(-1).all(0)
    elif inside is not None:
        valid = inside(xs[:7].view(7 * n, 3)).view(7, n).bool().all(0)
    else:
        valid = torch.ones(n, dtype=torch.bool, device=x.device)
    return {"value": v0.squeeze(0), "grad": grad, "dt": dt, "valid": valid}


def material_derivative(dq_dt: torch.Tensor, grad_q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``dq/dt + (v . grad) q`` for vector quantities: ``dq_dt [N, ..., 3]``, ``grad_q [N, ..., 3, 3]``, ``v [N, 3]``
    -> ``[N, ..., 3]`` (several quantities per point advected by the same ``v`` in one product)."""
    return dq_dt + torch.einsum("n...cj,nj->n...c", grad_q, v)


def advected_derivatives(q: torch.Tensor, dq_dt: torch.Tensor, grad_q: torch.Tensor) -> torch.Tensor:
    """The higher orders as the lower ones' material derivatives, ``H~_i = dL_i/dt + (v . grad) L_i`` (METHOD 2.5).

    Args:
        q: ``[N, K, 3]`` kinematics (v, a, j); dq_dt: ``[N, K, 3]``; grad_q: ``[N, K, 3, 3]``.

    Returns:
        ``[N, K-1, 3]``: acceleration from v and jerk from a, both advected by v.
    """
    k = q.shape[1]
    if k < 2:
        return q[:, :0]
    return material_derivative(dq_dt[:, : k - 1], grad_q[:, : k - 1], q[:, 0])  # every lower order at once


def integrity_residuals(q: torch.Tensor, dq_dt: torch.Tensor, grad_q: torch.Tensor, grad_scale: float = 1.0,
                        bound: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Kinematic integrity residuals ``H_i - H~_i`` (:func:`advected_derivatives`; same first arguments): ``[N, K-1, 3]``.

    ``H~`` (the derivative side, v in its advection included) passes through ``grad_scale`` in the backward pass,
    then is clamped to ``[-bound[i], bound[i]]`` for order ``i`` (``bound``: K-1 floats; METHOD 2.5, 2.16)."""
    h_tilde = scale_grad(advected_derivatives(q, dq_dt, grad_q), grad_scale)
    if bound is not None:
        b = constant(tuple(bound), q.device, q.dtype)[None, :, None]
        h_tilde = h_tilde.clamp(-b, b)
    return q[:, 1:] - h_tilde


def transport_residual(dsigma_dt: torch.Tensor, grad_sigma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Density transport ``dsigma/dt + v . grad sigma`` (METHOD 2.6): ``[N]`` from ``[N]``, ``[N, 3]``, ``[N, 3]``."""
    return dsigma_dt + (v * grad_sigma).sum(-1)


def density_flow_residual(sigma: torch.Tensor, dsigma_dt: torch.Tensor, grad_sigma: torch.Tensor,
                          disp: torch.Tensor, dt: float, valid: torch.Tensor) -> torch.Tensor:
    """Normal-flow error of a displacement per frame against a density's own motion (the 3-D optical-flow
    constraint): with ``phi = log(1 + sigma)``, ``sum (dphi/dt dt + disp . grad phi)^2 / sum |grad phi|^2``
    over the ``valid`` points, a mean squared displacement error along ``grad phi`` (world units squared).

    Args:
        sigma, dsigma_dt: ``[N]`` density (>= 0) and its time derivative; grad_sigma: ``[N, 3]``
            (with ``sigma = 0`` the derivatives are used as given, e.g. those of a colour channel).
        disp: ``[N, 3]`` predicted displacement per frame (``v dt``); dt: frame spacing; valid: ``[N]`` bool.

    Returns:
        a scalar; 0 (with a gradient path) when no valid point has a density gradient.
    """
    inv = 1.0 / (1.0 + sigma.clamp_min(0.0))
    g = grad_sigma * inv[:, None]
    r = dsigma_dt * inv * dt + (disp * g).sum(-1)
    m = valid.to(r.dtype)
    return (m * r * r).sum() / ((m[:, None] * g * g).sum() + 1e-12)


def _strain_rate(grad_v: torch.Tensor) -> torch.Tensor:
    """``E = (G + G^T) / 2 [N, 3, 3]``, the symmetric part of the velocity gradient ``G = grad_v [N, 3, 3]``."""
    return 0.5 * (grad_v + grad_v.transpose(-1, -2))


def rigidity_terms(grad_v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Divergence and second invariant of the strain rate of ``grad_v [N, 3, 3]`` (METHOD 2.7).

    Returns:
        ``(div [N], i2 [N])`` with ``div = tr G`` and ``i2 = ((tr E)^2 - tr(E^2)) / 2``, ``E = (G + G^T) / 2``.
        Both vanish for a rigid (Killing) motion; ``|E|_F^2 = div^2 - 2 i2``.
    """
    e = _strain_rate(grad_v)
    tr = e.diagonal(dim1=-2, dim2=-1).sum(-1)
    tr_e2 = (e * e.transpose(-1, -2)).sum((-1, -2))
    return tr, 0.5 * (tr * tr - tr_e2)


def strain_rate_sq(grad_v: torch.Tensor) -> torch.Tensor:
    """``|E|_F^2 [N]``, ``E = (G + G^T) / 2`` of ``grad_v [N, 3, 3]``: zero exactly for a rigid motion,
    quadratic in the strain rate (``rigidity_terms``' ``i2`` is quadratic, so its square is quartic)."""
    e = _strain_rate(grad_v)
    return (e * e).sum((-1, -2))
