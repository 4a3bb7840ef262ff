"""Losses and regularisers as named, weighted, scheduled terms."""
from .base import Schedule, Term, read_scalars, total_loss
from .photometric import charbonnier, psnr_from_mse, rgb_loss

__all__ = ["Schedule", "Term", "read_scalars", "total_loss", "charbonnier", "psnr_from_mse", "rgb_loss"]
