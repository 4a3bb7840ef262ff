"""Sampling, compositing and rendering."""
from .composite import accumulate, composite_blended
from .occupancy import OccupancyConfig, OccupancyGrid
from .renderer import RenderConfig, Samples, SceneModel, composite_outputs

__all__ = [
    "accumulate", "composite_blended", "composite_outputs", "OccupancyConfig", "OccupancyGrid", "RenderConfig",
    "Samples", "SceneModel",
]
