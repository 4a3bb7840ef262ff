"""kinfield's custom ops: public functions that dispatch to a CUDA kernel or their PyTorch twin.

Every op here has a same-name twin in :mod:`kinfield.ops._torch` (the specification). Until the
CUDA extension is built (``cuda/``), every call runs the twin.
"""
from ._torch import composite_blended, exclusive_segment_cumsum, hash_grid_encode

__all__ = ["hash_grid_encode", "composite_blended", "exclusive_segment_cumsum"]
