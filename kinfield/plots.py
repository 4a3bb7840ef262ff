"""Figures of a run folder (``tools/plot.py``): training curves, per-view test scores, motion error over time,
and exported 3-D tracks. Needs matplotlib (``pip install -e ".[plot]"``); everything else here reads the
files the other tools write:

* ``metrics.jsonl`` (tools/train.py): one line per logged step (``step``, ``loss``, ``loss/<term>``,
  ``psnr`` of the training batch, ``rays``, ``samples``, ``physics_points``, ``lr``, ``time_s``; ``val/psnr`` at the periodic
  validations of ``--train_val_every``) -> ``training.png``;
* ``metrics.json`` / ``metrics_test.csv`` (train / eval): the test scores, per view -> ``test_views.png``;
* ``motion_epe_by_time.csv`` (tools/eval_motion.py): end-point error per object and time, next to the error of
  no motion at all -> ``motion_epe.png``;
* a tracks file (tools/export_trajectories.py, any format: ``times [T]``, ``positions``/``velocity [T, N, 3]``) ->
  ``tracks.png``.
"""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ._io import metrics_rows

log = logging.getLogger("kinfield")


class PlotError(ValueError):
    """A run file that cannot be plotted; the message names the file and what to do."""


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotError('plots need matplotlib: pip install -e ".[plot]" (or pip install matplotlib)') from exc
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def read_training_log(path) -> Dict[str, np.ndarray]:
    """``metrics.jsonl`` as columns: ``step [S]`` ascending and one ``[S]`` float array per logged key (NaN where a
    step did not log it). The lines of one step merge (the training row and the validation row; a step logged
    again after a resume from an older checkpoint: the later values win); the closing ``train_time_s`` lines
    and unreadable lines are skipped (with a warning)."""
    path = Path(path)
    if not path.is_file():
        raise PlotError(f"no training log {path}: is {path.parent} a run folder (the --out of tools/train.py)?")
    rows: Dict[int, dict] = {}
    found, bad = metrics_rows(path)
    if bad:
        log.warning("%s line %d%s is not a JSON object with a step: skipped (a run killed while writing?)", path,
                    bad[0], f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
    for _, row in found:
        step = row.pop("step")
        row.pop("train_time_s", None)  # (the closing line of a training session)
        if row:
            rows.setdefault(step, {}).update(row)  # a step's rows merge, the later line's values winning
    if not rows:
        raise PlotError(f"{path} holds no logged training step (the first is written after --train_log_every steps)")
    steps = sorted(rows)
    keys = sorted({k for r in rows.values() for k in r})
    out = {"step": np.asarray(steps, np.float64)}
    for k in keys:
        out[k] = np.asarray([_as_float(rows[s].get(k)) for s in steps], np.float64)
    return out


def _as_float(v) -> float:
    try:
        return float(v)  # non-finite values are logged as strings ("nan", "inf")
    except (TypeError, ValueError):
        return math.nan


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction (TensorBoard's smoothing); NaNs are skipped."""
    out = np.full_like(values, np.nan, dtype=np.float64)
    acc, norm = 0.0, 0.0
    for i, v in enumerate(values):
        if math.isfinite(v):
            acc, norm = weight * acc + (1 - weight) * v, weight * norm + (1 - weight)
        if norm > 0:
            out[i] = acc / norm
    return out


def _read_csv(path: Path) -> Dict[str, np.ndarray]:
    """Numeric columns of a CSV with a header row (text columns dropped)."""
    with path.open(newline="", errors="replace") as f:  # (bytes that are not UTF-8 read as U+FFFD: not numbers)
        rows = list(csv.DictReader(f))
    if not rows:
        raise PlotError(f"{path} has no data rows")
    out = {}
    for k in rows[0]:
        vals = [_as_float(r[k]) for r in rows]
        if any(math.isfinite(v) for v in vals):
            out[k] = np.asarray(vals, np.float64)
    return out


def plot_training(log_path, out_path, test_scores: Optional[dict] = None, smoothing: float = 0.6) -> Path:
    """Four panels against the step: the training batch's PSNR (with the periodic validation's and the final test
    PSNR), every loss term (log scale), rays, samples and physics points per step, and the learning rate with the wall time."""
    plt = _pyplot()
    cols = read_training_log(log_path)
    step = cols["step"]
    fig, ax = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    a = ax[0, 0]
    if "psnr" in cols:
        a.plot(step, cols["psnr"], color="C0", alpha=0.25, lw=1)
        a.plot(step, smooth(cols["psnr"], smoothing), color="C0", label="training batch")
    if "val/psnr" in cols and np.isfinite(cols["val/psnr"]).any():
        ok = np.isfinite(cols["val/psnr"])
        a.plot(step[ok], cols["val/psnr"][ok], "o-", color="C2", ms=4, label="validation views")
    if test_scores and test_scores.get("psnr") is not None:
        a.axhline(test_scores["psnr"], color="C3", ls="--",
                  label=f"test {test_scores['psnr']:.2f} dB (step {test_scores.get('step', '?')})")
    a.set(title="PSNR", xlabel="step", ylabel="dB")
    a.legend(loc="lower right")
    a = ax[0, 1]
    terms = [k for k in cols if k == "loss" or k.startswith("loss/")]
    for i, k in enumerate(terms):
        v = np.where(cols[k] > 0, cols[k], np.nan)  # (log scale: a term that is 0 or off is not drawn)
        if np.isfinite(v).any():
            a.plot(step, smooth(v, smoothing), label=k.replace("loss/", "") if k != "loss" else "total (weighted)",
                   color="k" if k == "loss" else f"C{i % 10}", lw=2 if k == "loss" else 1)
    a.set(title="loss terms (unweighted, smoothed)", xlabel="step", yscale="log")
    a.legend(fontsize=7, ncol=2)
    a = ax[1, 0]
    if "rays" in cols:
        a.plot(step, cols["rays"], color="C0", label="rays")
    if "physics_points" in cols and np.isfinite(cols["physics_points"]).any():  # (0: the physics terms read 0)
        a.plot(step, cols["physics_points"], color="C3", lw=1, label="physics points")
        a.legend(loc="upper left", fontsize=7)
    a.set(title="batch", xlabel="step", ylabel="rays (physics points) per step")
    if "samples" in cols:
        b = a.twinx()
        b.plot(step, cols["samples"], color="C1", label="samples")
        b.set_ylabel("samples per step", color="C1")
    a = ax[1, 1]
    if "lr" in cols:
        a.plot(step, cols["lr"], color="C2")
        a.set_yscale("log")
    a.set(title="learning rate and wall time", xlabel="step", ylabel="learning rate")
    if "time_s" in cols and np.isfinite(cols["time_s"]).any():
        b = a.twinx()
        b.plot(step, cols["time_s"] / 60.0, color="C4")
        b.set_ylabel("minutes", color="C4")
    fig.suptitle(str(Path(log_path).parent))
    return _save(fig, out_path)


def plot_test_views(csv_path, out_path) -> Path:
    """PSNR, SSIM and LPIPS of each test view against its time."""
    plt = _pyplot()
    cols = _read_csv(Path(csv_path))
    x = cols.get("time", cols.get("index"))
    names = [m for m in ("psnr", "ssim", "lpips") if m in cols]
    if x is None or not names:
        raise PlotError(f"{csv_path} has no time/index or metric columns (expected tools/eval.py's per-view CSV)")
    fig, ax = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), constrained_layout=True, squeeze=False)
    order = np.argsort(x, kind="stable")
    for a, m in zip(ax[0], names):
        a.plot(x[order], cols[m][order], "o-", ms=3)
        a.axhline(np.nanmean(cols[m]), color="C3", ls="--", lw=1, label=f"mean {np.nanmean(cols[m]):.4g}")
        a.set(title=m.upper(), xlabel="time" if "time" in cols else "view")
        a.legend()
    fig.suptitle(f"test views: {csv_path}")
    return _save(fig, out_path)


def plot_motion_error(csv_path, out_path) -> Path:
    """Trajectory end-point error over time per object (solid) against no motion at all (dashed)."""
    plt = _pyplot()
    cols = _read_csv(Path(csv_path))
    if "time" not in cols:
        raise PlotError(f"{csv_path} has no time column (expected tools/eval_motion.py's motion_epe_by_time.csv)")
    objects = [k[len("epe_"):] for k in cols if k.startswith("epe_")]
    fig, a = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for i, name in enumerate(objects):
        a.plot(cols["time"], cols[f"epe_{name}"], color=f"C{i}", label=f"{name}: learned motion")
        if f"zero_motion_{name}" in cols:
            a.plot(cols["time"], cols[f"zero_motion_{name}"], color=f"C{i}", ls="--", label=f"{name}: no motion")
    a.set(title="trajectory end-point error", xlabel="time", ylabel="scene units")
    a.legend(fontsize=8)
    return _save(fig, out_path)


def plot_tracks(tracks_path, out_path, max_tracks: int = 400) -> Path:
    """Exported tracks in three orthographic projections, coloured by speed, and the speed over time."""
    plt = _pyplot()
    from matplotlib.collections import LineCollection

    from .motion.export import MotionFileError, load_tracks

    try:  # checked as every tool reads tracks: times [T], positions (and velocity) [T, N, 3]
        z = load_tracks(tracks_path)
    except MotionFileError as exc:
        raise PlotError(str(exc)) from exc
    times, pos = np.asarray(z["times"], np.float64).reshape(-1), np.asarray(z["positions"], np.float64)
    vel = np.asarray(z["velocity"], np.float64) if "velocity" in z else None
    if times.shape[0] < 2:
        raise PlotError(f"{tracks_path}: tracks at {times.shape[0]} time, a curve needs 2 or more; export them with "
                        f"tools/export_trajectories.py --times train (or a count N >= 2)")
    order = np.argsort(times)
    times, pos = times[order], pos[order]
    vel = np.gradient(pos, times, axis=0) if vel is None else vel[order]
    keep = np.isfinite(pos).all(axis=(0, 2))
    pos, vel = pos[:, keep], vel[:, keep]
    if pos.shape[1] == 0:
        raise PlotError(f"{tracks_path}: no track is finite at all {times.shape[0]} times (the integration diverged?); "
                        f"export others with tools/export_trajectories.py --points or another --time")
    if pos.shape[1] > max_tracks:  # evenly spaced subset, so the figure stays readable
        pick = np.linspace(0, pos.shape[1] - 1, max_tracks).round().astype(int)
        pos, vel = pos[:, pick], vel[:, pick]
    speed = np.linalg.norm(vel, axis=-1)  # [T, N]
    fig, ax = plt.subplots(1, 4, figsize=(18, 4.5), constrained_layout=True)
    seg_speed = 0.5 * (speed[1:] + speed[:-1]).T.reshape(-1)  # per segment, track-major
    top = float(np.nanpercentile(seg_speed, 99)) if np.isfinite(seg_speed).any() else 0.0
    norm = plt.Normalize(0.0, top if np.isfinite(top) and top > 0 else 1.0) if seg_speed.size else None
    for a, (i, j, name) in zip(ax[:3], ((0, 1, "x-y"), (0, 2, "x-z"), (1, 2, "y-z"))):
        p = pos[..., [i, j]].transpose(1, 0, 2)  # [N, T, 2]
        segs = np.stack([p[:, :-1], p[:, 1:]], axis=2).reshape(-1, 2, 2)
        lc = LineCollection(segs, cmap="viridis", norm=norm, lw=1)
        lc.set_array(seg_speed)
        a.add_collection(lc)
        a.scatter(p[:, 0, 0], p[:, 0, 1], s=3, c="k", label=f"t = {times[0]:.2f}")
        a.autoscale()
        a.set_aspect("equal", adjustable="datalim")
        a.set(title=f"{name} ({pos.shape[1]} tracks)", xlabel="xyz"[i], ylabel="xyz"[j])
    fig.colorbar(lc, ax=ax[2], label="speed (world units per unit time)")
    ax[0].legend(loc="upper right", fontsize=7)
    a = ax[3]
    q = np.nanpercentile(speed, [25, 50, 75], axis=1)
    a.fill_between(times, q[0], q[2], alpha=0.3, label="25-75 %")
    a.plot(times, q[1], label="median")
    a.plot(times, np.nanmax(speed, axis=1), ls=":", label="max")
    a.set(title="speed along the tracks", xlabel="time", ylabel="world units per unit time")
    a.legend()
    fig.suptitle(str(tracks_path))
    return _save(fig, out_path)


def plot_run(run_dir, out_dir=None, tracks=None, smoothing: float = 0.6) -> Tuple[List[Path], List[str]]:
    """Every figure the run's files allow (see the module docstring) into ``out_dir`` (default ``RUN/plots``).

    Returns ``(written PNGs, problems)``: a file that cannot be plotted is reported in ``problems`` (naming it and
    what to do) and the other figures are still drawn. Raises :class:`PlotError` when ``run_dir`` is missing or
    matplotlib is not installed."""
    from .train.evaluate import read_metrics

    run = Path(run_dir)
    if not run.is_dir():
        raise PlotError(f"run folder not found: {run} (the --out of tools/train.py)")
    _pyplot()  # (once, up front: without matplotlib no figure can be drawn)
    out = Path(out_dir) if out_dir else run / "plots"
    test = read_metrics(run).get("test")
    jobs = [(plot_training, run / "metrics.jsonl", "training.png", dict(test_scores=test if isinstance(test, dict)
                                                                        else None, smoothing=smoothing))]
    if (run / "metrics_test.csv").is_file():
        jobs.append((plot_test_views, run / "metrics_test.csv", "test_views.png", {}))
    if (run / "motion_epe_by_time.csv").is_file():
        jobs.append((plot_motion_error, run / "motion_epe_by_time.csv", "motion_epe.png", {}))
    if tracks is None:  # export_trajectories.py's default output, in the first format found
        from .motion.export import TRAJECTORY_FORMATS

        tracks = next((run / "motion" / f"tracks.{fmt}" for fmt in TRAJECTORY_FORMATS
                       if (run / "motion" / f"tracks.{fmt}").is_file()), None)
    if tracks is not None:
        jobs.append((plot_tracks, Path(tracks), "tracks.png", {}))
    written, problems = [], []
    for fn, src, name, kwargs in jobs:
        try:
            written.append(fn(src, out / name, **kwargs))
        except PlotError as exc:
            problems.append(str(exc))
    return written, problems


def plot_runs(run_dirs, names, out_path, smoothing: float = 0.6) -> Tuple[Path, List[str]]:
    """Several runs' curves on shared axes (``tools/compare.py --plot``): the training batch's PSNR (smoothed) and the
    validation PSNR against the step, and the photometric loss (``loss/rgb``: unlike the total, the same quantity
    whatever the runs' regulariser weights) against the step and against the training time.

    Returns ``(the PNG, problems)``: a run without a readable training log is left out and named in ``problems``.
    Raises :class:`PlotError` when no run has one, or matplotlib is not installed."""
    plt = _pyplot()
    logs, problems = [], []
    for run, name in zip(map(Path, run_dirs), names):
        try:
            logs.append((name, read_training_log(run / "metrics.jsonl")))
        except PlotError as exc:
            problems.append(f"{exc}: {name} left out of the figure")
    if not logs:
        raise PlotError("no run to plot: none has a training log (metrics.jsonl)")
    fig, ax = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    for i, (name, cols) in enumerate(logs):
        color, step = f"C{i % 10}", cols["step"]
        if "psnr" in cols:
            ax[0, 0].plot(step, smooth(cols["psnr"], smoothing), color=color, label=name)
        if "val/psnr" in cols and np.isfinite(cols["val/psnr"]).any():
            ok = np.isfinite(cols["val/psnr"])
            ax[0, 1].plot(step[ok], cols["val/psnr"][ok], "o-", ms=4, color=color, label=name)
        if "loss/rgb" in cols:  # (the total depends on each run's weights and schedule; the photometric term does not)
            loss = smooth(np.where(cols["loss/rgb"] > 0, cols["loss/rgb"], np.nan), smoothing)
            ax[1, 0].plot(step, loss, color=color, label=name)
            if "time_s" in cols:
                ax[1, 1].plot(cols["time_s"] / 60.0, loss, color=color, label=name)
    ax[0, 0].set(title="training batch PSNR (smoothed)", xlabel="step", ylabel="dB")
    ax[0, 1].set(title="validation PSNR", xlabel="step", ylabel="dB")
    ax[1, 0].set(title="photometric loss of the training batch (smoothed)", xlabel="step", yscale="log")
    ax[1, 1].set(title="photometric loss against training time", xlabel="minutes", yscale="log")
    for a in ax.flat:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
        else:
            a.text(0.5, 0.5, "not logged", ha="center", va="center", transform=a.transAxes, color="0.5")
    return _save(fig, out_path), problems


def _save(fig, path) -> Path:
    """Write ``fig`` to ``path`` through a temporary file (a killed run never leaves half a PNG)."""
    import matplotlib.pyplot as plt

    from ._io import replaced_on_success

    path = Path(path)
    try:
        with replaced_on_success(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path
