"""Render a split with a trained model and score it (PSNR, SSIM, LPIPS)."""
from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional

import imageio.v3 as iio
import numpy as np
import torch

from .._io import replaced_on_success, set_aside
from ..data import Scene
from ..metrics import lpips_alex, lpips_available, psnr, ssim
from ..metrics.image import SSIM_WINDOW
from ..metrics.lpips import MIN_SIZE as LPIPS_MIN_SIZE
from ..render import SceneModel

log = logging.getLogger("kinfield")
# the image scores of a split in metrics.json: of the whole images, then of the moving regions (NSFF protocol)
SCORE_KEYS = ("psnr", "ssim", "lpips", "psnr_dynamic", "ssim_dynamic", "lpips_dynamic")


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """``[H, W, C]`` float in [0, 1] -> uint8 array."""
    return (img.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def evenly_spaced_views(n_frames: int, max_views: int = 0) -> List[int]:
    """Indices of at most ``max_views`` evenly spaced views of ``n_frames`` (all of them for ``max_views <= 0``)."""
    if 0 < max_views < n_frames:
        return sorted({int(round(v)) for v in np.linspace(0, n_frames - 1, max_views)})
    return list(range(n_frames))


def _ssim_fits(sp) -> bool:
    """Whether the split's images hold SSIM's 11x11 window (a run at a large --downscale may not)."""
    return min(sp.height, sp.width) >= SSIM_WINDOW


def _ssim_note(sp) -> str:
    return f"images are {sp.width}x{sp.height}; SSIM needs both sides >= {SSIM_WINDOW} (its window)"


def quick_scores(model: SceneModel, scene: Scene, split: str, max_views: int, with_ssim: bool = True) -> Dict:
    """Mean PSNR and SSIM (NaN without ``with_ssim``: it costs more than the render of a small image) of up to
    ``max_views`` evenly spaced views of ``split``, nothing written (the periodic validation during training;
    :func:`evaluate_split` is the full evaluation). ``preview``: the first view's render beside its ground truth,
    ``[H, 2W, 3]`` in [0, 1]."""
    sp = scene.split(split)
    was_training = model.training
    model.eval()
    scores, preview = [], None
    try:
        for i in evenly_spaced_views(sp.num_frames, max_views):
            pred = model.render_image(sp.poses[i], sp.intrinsics[i], sp.height, sp.width, float(sp.times[i]),
                                      scene.background)["rgb"].cpu().clamp(0.0, 1.0)
            scores.append((psnr(pred, sp.images[i]),
                           ssim(pred, sp.images[i]) if with_ssim and _ssim_fits(sp) else math.nan))
            if preview is None:
                preview = torch.cat([pred, sp.images[i].clamp(0.0, 1.0)], dim=1)
    finally:
        model.train(was_training)
    return {"psnr": float(np.mean([s[0] for s in scores])), "ssim": float(np.mean([s[1] for s in scores])),
            "n_images": len(scores), "preview": preview}


def evaluate_split(
    model: SceneModel,
    scene: Scene,
    split: str,
    out_dir,
    use_lpips: bool = True,
    progress: bool = False,
    extra: Optional[Dict] = None,
    max_views: int = 0,
) -> Dict:
    """Render every view of ``split`` to ``out_dir/renders/<split>/NNN.png`` and score it.

    Writes ``out_dir/metrics.json`` (means, merged with what is already there) and
    ``out_dir/metrics_<split>.csv`` (one row per image).

    ``max_views > 0`` scores that many evenly spaced views only (``n_images`` and ``n_views_in_split`` say so).

    Returns:
        dict with ``psnr``, ``ssim``, ``lpips`` (or None with ``lpips_note``), ``n_images``.
    """
    from tqdm.auto import tqdm

    sp = scene.split(split)
    out_dir = Path(out_dir)
    render_dir = out_dir / "renders" / split
    render_dir.mkdir(parents=True, exist_ok=True)
    have_lpips, why = lpips_available() if use_lpips else (False, "disabled")
    if have_lpips and min(sp.height, sp.width) < LPIPS_MIN_SIZE:
        have_lpips, why = False, f"images are {sp.width}x{sp.height}; LPIPS (AlexNet) needs both sides >= {LPIPS_MIN_SIZE}"
    if use_lpips and not have_lpips:
        log.warning("LPIPS not computed: %s", why)
    ssim_note = None if _ssim_fits(sp) else _ssim_note(sp)
    ssim_at = ssim if ssim_note is None else (lambda *a: float("nan"))
    if ssim_note is not None:
        log.warning("SSIM not computed: %s", ssim_note)
    rows = []
    model.eval()
    for i in tqdm(evenly_spaced_views(sp.num_frames, max_views), desc=f"eval {split}", disable=not progress):
        out = model.render_image(sp.poses[i], sp.intrinsics[i], sp.height, sp.width, float(sp.times[i]), scene.background)
        pred = out["rgb"].cpu().clamp(0.0, 1.0)  # scored as written (blended weights may sum past 1)
        gt = sp.images[i]
        iio.imwrite(render_dir / f"{i:03d}.png", to_uint8(pred))
        row = {"index": i, "file": sp.paths[i] if i < len(sp.paths) else "", "time": float(sp.times[i]),
               "psnr": psnr(pred, gt), "ssim": ssim_at(pred, gt)}
        row["lpips"] = lpips_alex(pred, gt) if have_lpips else float("nan")
        if "dynamic_mask" in sp.extras:  # NSFF protocol: the same metrics on the moving region only
            mask = sp.extras["dynamic_mask"][i]
            has = bool(mask.sum() > 0)
            row["psnr_dynamic"] = psnr(pred, gt, mask) if has else float("nan")
            row["ssim_dynamic"] = ssim_at(pred, gt, mask) if has else float("nan")
            row["lpips_dynamic"] = lpips_alex(pred, gt, mask=mask) if has and have_lpips else float("nan")
        rows.append(row)
    model.train()
    with (out_dir / f"metrics_{split}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "lpips": float(np.mean([r["lpips"] for r in rows])) if have_lpips else None,
        "n_images": len(rows),
        "n_views_in_split": sp.num_frames,
        "height": sp.height,
        "width": sp.width,
    }
    for key in SCORE_KEYS[3:]:
        vals = [r[key] for r in rows if key in r and math.isfinite(r[key])]
        if vals:
            summary[key] = float(np.mean(vals))
    if not have_lpips:
        summary["lpips_note"] = why
    if ssim_note is not None:
        summary["ssim_note"] = ssim_note
    summary.update(extra or {})
    update_metrics(out_dir, split, summary)
    return summary


def read_metrics(run_dir) -> Dict:
    """``RUN_DIR/metrics.json`` as a dict (empty when missing; a file that is not a JSON object is reported and
    ignored here, and set aside by the next :func:`update_metrics`)."""
    data = _metrics_file(Path(run_dir) / "metrics.json")
    if data is None:
        log.warning("%s is not a JSON object of kinfield's metrics: ignored", Path(run_dir) / "metrics.json")
    return data or {}


def _metrics_file(path: Path) -> Optional[Dict]:
    """The metrics file's dict, ``{}`` when there is none, None when it cannot be read as one."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def update_metrics(run_dir, key: str, value: Dict) -> Path:
    """Set ``metrics[key] = value`` in ``RUN_DIR/metrics.json``, atomically (NaN/inf written as null)."""
    path = Path(run_dir) / "metrics.json"
    metrics = _metrics_file(path)
    if metrics is None:  # someone's file, or a broken one: kept beside the new one
        aside = set_aside(path, "unreadable")
        log.warning("%s is not a JSON object of kinfield's metrics: moved to %s, a new one is written", path, aside)
        metrics = {}
    metrics[key] = value
    with replaced_on_success(path) as tmp:
        tmp.write_text(json.dumps(_finite_or_none(metrics), indent=2))
    return path
