"""Reusable network pieces: hash grid encoding, MLPs, fixed encodings."""
from .encodings import sh_encode
from .grad import scale_grad
from .hashgrid import HashGrid, HashGridConfig, level_layout
from .mlp import MLP

__all__ = ["HashGrid", "HashGridConfig", "level_layout", "MLP", "sh_encode", "scale_grad"]
