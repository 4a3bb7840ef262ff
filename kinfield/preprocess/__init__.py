"""From a video (or a folder of frames) to the "NSFF layout": frames, LLFF poses from SfM (pycolmap),
sparse depth, optical flow with forward-backward masks, motion masks. See :mod:`.writer` for the layout
and :func:`preprocess` for the pipeline. Importing this package needs neither OpenCV nor pycolmap.
"""
from .errors import MissingDependencyError, PreprocessError, SfMError
from .pipeline import PreprocessOptions, preprocess

__all__ = ["preprocess", "PreprocessOptions", "PreprocessError", "SfMError", "MissingDependencyError"]
