"""Evaluation metrics: PSNR, SSIM (NeRF convention) and LPIPS (AlexNet v0.1, offline weights)."""
from .image import psnr, ssim
from .lpips import LPIPS, lpips_alex, lpips_available

__all__ = ["psnr", "ssim", "LPIPS", "lpips_alex", "lpips_available"]
