"""Learned fields: static/dynamic radiance fields (and the kinematic field)."""
from .radiance import FieldConfig, RadianceField, trunc_exp

__all__ = ["FieldConfig", "RadianceField", "trunc_exp"]
