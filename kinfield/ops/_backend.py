"""Finding the compiled CUDA extension ``kinfield._C`` (never at import time, never by surprise).

Order: the prebuilt extension (``KINFIELD_BUILD_CUDA=1 pip install --no-build-isolation -e .``); else, only when
``KINFIELD_JIT=1``, a JIT build of ``cuda/`` from a source checkout; else ``None``. The outcome and its
reason are logged once per process.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Tuple

log = logging.getLogger("kinfield")
_STATE: Optional[Tuple[object, str]] = None


def load_extension() -> Tuple[Optional[object], str]:
    """``(module or None, reason)``; cached after the first call."""
    global _STATE
    if _STATE is not None:
        return _STATE
    try:
        from .. import _C  # type: ignore[attr-defined]

        _STATE = (_C, "prebuilt kinfield._C")
    except ImportError as exc:
        _STATE = (None, f"kinfield._C is not built ({exc}); build it with KINFIELD_BUILD_CUDA=1 pip install --no-build-isolation -e .")
        if os.environ.get("KINFIELD_JIT") == "1":
            _STATE = _jit_build()
    log.info("CUDA kernels: %s", "available" if _STATE[0] is not None else _STATE[1])
    return _STATE


def _jit_build() -> Tuple[Optional[object], str]:
    src = Path(__file__).resolve().parents[2] / "cuda"
    sources = sorted(str(p) for p in src.glob("*.cu")) + [str(p) for p in src.glob("ext.cpp")]
    if not any(s.endswith(".cu") for s in sources):
        return None, f"KINFIELD_JIT=1 but {src} holds no kernel sources"
    try:
        import torch
        from torch.utils.cpp_extension import load

        if not torch.cuda.is_available():
            return None, "KINFIELD_JIT=1 but no CUDA device is available"
        log.info("JIT-building kinfield._C from %s (the first build takes minutes)", src)
        mod = load(name="kinfield_C", sources=sources, extra_include_paths=[str(src / "include")], verbose=False)
        return mod, "JIT-built from cuda/"
    except Exception as exc:
        return None, f"JIT build failed: {exc}"


def cuda_available() -> bool:
    """Whether CUDA kernels can run here (the extension loaded and a GPU is visible)."""
    import torch

    return torch.cuda.is_available() and load_extension()[0] is not None
