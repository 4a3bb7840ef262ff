"""kinfield's custom ops: public functions that dispatch to a CUDA kernel or their PyTorch twin.

Every op here has a same-name twin in :mod:`kinfield.ops._torch` (the specification) and an entry
in :mod:`kinfield.ops._registry`. Dispatch (``backend="auto"``): the kernel runs only when the
extension is loaded *and* every tensor argument is on CUDA; otherwise the twin runs. Forcing
``backend="cuda"`` without that raises a ``RuntimeError`` saying why. :func:`use_backend` changes what
``"auto"`` means inside a block (benchmarks compare the two paths on one GPU with it). ``import kinfield``
never loads or builds ``_C``.
"""
from __future__ import annotations

import contextlib

import torch

from . import _torch
from ._backend import cuda_available, load_extension
from ._torch import exclusive_segment_cumsum

__all__ = ["hash_grid_encode", "composite_blended", "exclusive_segment_cumsum", "cuda_available", "choose_backend",
           "use_backend"]

_AUTO = ["auto"]  # what backend="auto" resolves through (a one-element stack top)


@contextlib.contextmanager
def use_backend(backend: str):
    """Inside the block, ops called with ``backend="auto"`` use ``backend`` (``"auto"``, ``"torch"`` or ``"cuda"``).

    Example:
        >>> with use_backend("torch"):
        ...     choose_backend("composite_blended", (torch.zeros(1),))
        'torch'
    """
    if backend not in ("auto", "torch", "cuda"):
        raise ValueError(f"backend must be auto, torch or cuda, not {backend!r}")
    _AUTO.append(backend)
    try:
        yield
    finally:
        _AUTO.pop()


def choose_backend(op: str, tensors, backend: str = "auto") -> str:
    """``"torch"`` or ``"cuda"`` for ``op`` on these tensors (decided before touching ``_C``)."""
    if backend not in ("auto", "torch", "cuda"):
        raise ValueError(f"backend must be auto, torch or cuda, not {backend!r}")
    if backend == "auto":
        backend = _AUTO[-1]
    if backend == "torch":
        return "torch"
    on_cuda = all(t.is_cuda for t in tensors if isinstance(t, torch.Tensor))
    if backend == "auto":
        if not on_cuda:
            return "torch"
        from ._registry import REGISTRY

        return "cuda" if REGISTRY[op].cuda is not None and cuda_available() else "torch"
    # forced
    if not on_cuda:
        raise RuntimeError(f"{op}(backend='cuda') needs every tensor on a CUDA device; use backend='auto' on CPU")
    from ._registry import REGISTRY

    if REGISTRY[op].cuda is None:
        raise RuntimeError(f"{op}(backend='cuda'): no CUDA kernel exists for this op yet; use backend='auto'")
    if not cuda_available():
        raise RuntimeError(f"{op}(backend='cuda'): {load_extension()[1]}")
    return "cuda"


def hash_grid_encode(x, params, offsets, resolutions, scales, hashed, n_features, volume_limit=1 << 22, *,
                     backend: str = "auto"):
    """Multiresolution hash encoding (tcnn ``HashGrid`` semantics); see :func:`kinfield.ops._torch.hash_grid_encode`.

    Example:
        >>> from kinfield.nn.hashgrid import HashGridConfig, level_layout
        >>> s, r, o, h = level_layout(3, HashGridConfig(n_levels=2, log2_hashmap_size=8))
        >>> hash_grid_encode(torch.rand(5, 3), torch.zeros(int(o[-1]) * 2), o, r, s, h, 2).shape
        torch.Size([5, 4])
    """
    if choose_backend("hash_grid_encode", (x, params), backend) == "cuda":  # pragma: no cover - GPU only
        from ._registry import REGISTRY

        return REGISTRY["hash_grid_encode"].cuda(x, params, offsets, resolutions, scales, hashed, n_features, volume_limit)
    return _torch.hash_grid_encode(x, params, offsets, resolutions, scales, hashed, n_features, volume_limit)


def composite_blended(sigma_s, sigma_d, t_starts, t_ends, ray_ids, n_rays, *, backend: str = "auto"):
    """Static + dynamic compositing weights on packed samples; see :func:`kinfield.ops._torch.composite_blended`.

    Example:
        >>> w_s, w_d, T = composite_blended(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]),
        ...                                 torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]),
        ...                                 torch.tensor([0, 0]), 1)
        >>> [round(v, 4) for v in (w_s.tolist() + w_d.tolist())]
        [0.6321, 0.0, 0.0, 0.2325]
    """
    if choose_backend("composite_blended", (sigma_s, sigma_d, t_starts, t_ends, ray_ids), backend) == "cuda":  # pragma: no cover
        from ._registry import REGISTRY

        return REGISTRY["composite_blended"].cuda(sigma_s, sigma_d, t_starts, t_ends, ray_ids, n_rays)
    return _torch.composite_blended(sigma_s, sigma_d, t_starts, t_ends, ray_ids, n_rays)
