"""Camera conventions, rays, and camera/time paths for videos."""
from .rays import image_rays, pixel_rays, ray_aabb

__all__ = ["image_rays", "pixel_rays", "ray_aabb"]
