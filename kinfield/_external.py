"""The only place that imports the optional accelerators ``tinycudann`` and ``nerfacc``.

Each is imported lazily on first request, guarded against ``ImportError`` *and* the
``OSError``/``EnvironmentError`` tinycudann raises on an unknown GPU; the reason a module is not
used is kept and logged once per process.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

log = logging.getLogger("kinfield")
_CACHE: Dict[str, Tuple[Optional[Any], str]] = {}
_LOGGED: set = set()


def _load(name: str) -> Tuple[Optional[Any], str]:
    if name not in _CACHE:
        try:
            import torch

            if not torch.cuda.is_available():
                _CACHE[name] = (None, "no CUDA device is available")
            else:
                module = __import__(name)
                if name == "nerfacc":
                    _check_nerfacc_backend()
                _CACHE[name] = (module, f"{name} {getattr(module, '__version__', '')} imported")
        except Exception as exc:  # ImportError, OSError from tcnn's native module, ...
            _CACHE[name] = (None, f"import {name} failed: {type(exc).__name__}: {exc}")
    return _CACHE[name]


def _check_nerfacc_backend() -> None:
    """Load nerfacc's CUDA code now, so that a missing toolchain means "not usable" rather than a crash later.

    ``import nerfacc`` compiles nothing: its CUDA functions import ``nerfacc.cuda._backend`` on their first
    call, which JIT-builds the extension with ``torch.utils.cpp_extension.load`` into
    ``$TORCH_EXTENSIONS_DIR/nerfacc_cuda`` (default ``~/.cache/torch_extensions/py3X_cuXYZ/nerfacc_cuda``;
    a minute or so the first time; needs nvcc, ninja and the ``rich`` package), and leaves ``_C = None``
    (every call then fails with an ``AttributeError``) when no nvcc is on the PATH.
    """
    from nerfacc.cuda import _backend  # the JIT build (or the load of a finished one) happens here

    if getattr(_backend, "_C", None) is None:
        raise ImportError("nerfacc's CUDA extension is not built and no CUDA toolkit (nvcc) was found to build it")


def get(name: str, purpose: str) -> Optional[Any]:
    """Return the module ``name`` (``"tinycudann"`` or ``"nerfacc"``) or ``None``; log the choice once.

    Args:
        name: module to import.
        purpose: what it would be used for (goes into the one log line).
    """
    module, reason = _load(name)
    key = (name, purpose)
    if key not in _LOGGED:
        _LOGGED.add(key)
        if module is None:
            log.info("%s: using the PyTorch implementation (%s)", purpose, reason)
        else:
            log.info("%s: using %s (%s)", purpose, name, reason)
    return module


def reason(name: str) -> str:
    """Why ``name`` is (not) used, without logging."""
    return _load(name)[1]
