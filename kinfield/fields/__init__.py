"""Learned fields: static/dynamic radiance fields (and the kinematic field)."""
from .kinematic import KinematicConfig, KinematicField, taylor_displacement
from .radiance import FieldConfig, RadianceField, trunc_exp

__all__ = ["KinematicConfig", "KinematicField", "taylor_displacement", "FieldConfig", "RadianceField", "trunc_exp"]
