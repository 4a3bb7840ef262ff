"""Photometric losses."""
from __future__ import annotations

import torch

#: the values of ``--train_loss`` (:func:`rgb_loss`)
PHOTOMETRIC_LOSSES = ("mse", "huber", "charbonnier")


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Per-element Charbonnier ``sqrt(e^2 + eps^2)`` (same shape as the inputs)."""
    return torch.sqrt((pred - target) ** 2 + eps * eps)


def rgb_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean photometric error of ``[R, 3]`` colours: ``mse``, ``huber`` (delta 0.1) or ``charbonnier``."""
    if kind == "mse":
        return torch.mean((pred - target) ** 2)
    if kind == "huber":
        return torch.nn.functional.huber_loss(pred, target, delta=0.1)
    if kind == "charbonnier":
        return charbonnier(pred, target).mean()
    raise ValueError(f"unknown photometric loss {kind!r} ({', '.join(PHOTOMETRIC_LOSSES)})")


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    return -10.0 * torch.log10(mse.clamp_min(1e-10))
