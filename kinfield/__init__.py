"""kinfield: dynamic radiance fields regularised by a kinematic field.

Importing this package never imports an optional accelerator (tinycudann, nerfacc) and never loads
or compiles the CUDA extension.
"""
__version__ = "0.1.0"
