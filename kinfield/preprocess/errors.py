"""Errors of the preprocessing pipeline.

Every message has the form ``"<path>: <problem>\\n  fix: <what to do>"`` (as
:class:`kinfield.data.DatasetError`, which is not imported here so that preprocessing never imports
torch); the CLI prints it and exits with status 2 instead of showing a traceback.
"""
from __future__ import annotations

import os
from typing import Union


class PreprocessError(ValueError):
    """Bad input for ``tools/preprocess.py``: missing file, unreadable video, too few frames, ...

    Attributes: ``path`` (the offending file or folder), ``problem``, ``fix``.
    """

    def __init__(self, path: Union[str, os.PathLike], problem: str, fix: str):
        self.path = os.fspath(path)
        self.problem = str(problem)
        self.fix = str(fix)
        super().__init__(f"{self.path}: {self.problem}\n  fix: {self.fix}")

    def __reduce__(self):
        return (type(self), (self.path, self.problem, self.fix))


class SfMError(PreprocessError):
    """Structure from motion failed or registered too few frames.

    Attributes (besides ``path``, ``problem``, ``fix``): ``registered`` (frames with a pose) and
    ``total`` (frames given to SfM), when known.
    """

    FIX = ("try more frames (--max-frames, a lower --stride), slower / smoother camera motion with more "
           "sideways translation (not only rotation), a higher resolution (a larger --resize-long-side / --width, up to the source's: "
           "frames are never upscaled), a scene with "
           "more static texture, or --camera-model SIMPLE_RADIAL (a lens with visible distortion; the default is "
           "SIMPLE_PINHOLE)")

    def __init__(self, path, problem: str, fix: str = "", registered: int = -1, total: int = -1):
        self.registered = int(registered)
        self.total = int(total)
        super().__init__(path, problem, fix or self.FIX)

    def __reduce__(self):
        return (type(self), (self.path, self.problem, self.fix, self.registered, self.total))


class MissingDependencyError(PreprocessError):
    """An optional dependency (pycolmap, OpenCV) is not installed."""


def require_cv2():
    """Import OpenCV or raise :class:`MissingDependencyError` saying how to install it."""
    try:
        import cv2
    except ImportError as exc:
        raise MissingDependencyError(
            "<python environment>", f"OpenCV is not installed ({exc})",
            "pip install opencv-python-headless (or: pip install -e .)") from None
    return cv2


def require_pycolmap():
    """Import pycolmap or raise :class:`MissingDependencyError` saying how to install it."""
    try:
        import pycolmap
    except ImportError as exc:
        raise MissingDependencyError(
            "<python environment>", f"pycolmap is not installed ({exc}); it runs the structure from motion",
            "pip install pycolmap (or: pip install -e \".[preprocess]\")") from None
    return pycolmap
