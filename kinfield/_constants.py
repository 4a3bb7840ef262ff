"""Small tensors that depend only on fixed values and a device, made once per device.

On a GPU, making a tensor from host values is a copy that waits for the launch queue; the hot paths (the
hash-grid twin, the finite-difference probes, the integrity term's per-frame scale) take theirs from here instead.
"""
from __future__ import annotations

from typing import Callable, Hashable, Sequence

import torch

_MADE = {}  # key -> tensor (oldest dropped past 512)


def made_once(key: Hashable, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``make()``, kept under ``key`` (which must name the device) for the next calls."""
    if key not in _MADE:
        with torch.inference_mode(False):  # a normal tensor even when first asked for inside inference mode
            _MADE[key] = make()
        if len(_MADE) > 512:
            _MADE.pop(next(iter(_MADE)))
    return _MADE[key]


def constant(values: Sequence, device, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)``, made once (``values``: nested tuples of numbers)."""
    return made_once(("constant", values, dtype, str(device)),
                     lambda: torch.tensor(values, dtype=dtype, device=device))
