"""Several runs side by side (``tools/compare.py``): their scores and the options in which they differ.

What an ablation needs in one table: each run's step and training time, its image scores (``metrics.json`` of
``tools/train.py`` / ``tools/eval.py``), its motion scores (``tools/eval_motion.py``), and every option of its
``config.yaml`` whose value is not the same in all the runs compared (left out: :data:`IGNORED_OPTIONS`, which do not
make another experiment: the output folder, the resume mode, the progress bar and the TensorBoard mirror).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from .train.checkpoint import checkpoint_step, latest_checkpoint
from .train.evaluate import read_metrics

# options that differ between any two runs without making them different experiments
IGNORED_OPTIONS = ("out", "resume", "train_progress", "train_tensorboard")
# (column, where in metrics.json, digits): the score columns, shown when some run has the score
SCORES = (("PSNR", ("{split}", "psnr"), 2), ("SSIM", ("{split}", "ssim"), 3), ("LPIPS", ("{split}", "lpips"), 3),
          ("PSNR dyn", ("{split}", "psnr_dynamic"), 2), ("EPE", ("motion", "epe_mean"), 3),
          ("EPE no motion", ("motion", "epe_zero_motion"), 3))
ABSENT = "-"
HIGHER_IS_BETTER = ("PSNR", "SSIM", "PSNR dyn")  # (the other scores are errors: lower is better)


def sort_key_name(column: str) -> str:
    """The ``--sort`` spelling of a score column: ``PSNR dyn`` -> ``psnr-dyn``."""
    return column.lower().replace(" ", "-")


class CompareError(ValueError):
    """None of the folders given is a run."""


@dataclass
class Comparison:
    """The table of :func:`compare_runs`: ``header`` and ``rows`` (text cells; the first ``n_score_columns`` are the
    run, its step, training minutes and scores, the rest the differing options), the ``runs`` compared (their folders)
    and their ``run_names`` (a row names one run, or the runs it averages), and ``notes`` on what was left out or
    differs in how it was scored."""

    header: List[str]
    rows: List[List[str]]
    n_score_columns: int
    runs: List[Path]
    run_names: List[str]
    notes: List[str] = field(default_factory=list)
    missing: List[Path] = field(default_factory=list)  # folders given that do not exist (a mistyped run?)


def is_run(folder: Path) -> bool:
    """A folder ``tools/train.py`` wrote into (its config, scores or log)."""
    return folder.is_dir() and any((folder / name).is_file() for name in ("config.yaml", "metrics.json", "metrics.jsonl"))


def _config(folder: Path) -> Tuple[Dict, Optional[str]]:
    """The run's ``config.yaml`` as a flat dict, and a note when it is missing or unreadable."""
    path = folder / "config.yaml"
    if not path.is_file():
        return {}, f"{folder}: no config.yaml (its options are shown as '?')"
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return {}, f"{path}: not readable as YAML ({str(exc).splitlines()[0]}); its options are shown as '?'"
    if not isinstance(data, dict):
        return {}, f"{path}: not a mapping of options; its options are shown as '?'"
    return data, None


def _finite(value) -> Optional[float]:
    """``value`` as a float when it is a finite number (not a bool), else None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _number(value, digits: int) -> str:
    value = _finite(value)
    return ABSENT if value is None else f"{value:.{digits}f}"


def _option(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_option(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return "''" if value == "" else str(value)


def _latest_step(folder: Path) -> Optional[int]:
    """The step of the run's latest checkpoint (None without one)."""
    ckpt = latest_checkpoint(folder)
    return None if ckpt is None else checkpoint_step(ckpt)


def _train_minutes(folder: Path, metrics: Dict, split: str) -> str:
    """The run's training minutes (``train_time.txt``, else those its scores record)."""
    seconds = None
    try:
        seconds = float((folder / "train_time.txt").read_text().strip())
    except (OSError, ValueError):
        scored = metrics.get(split)
        if isinstance(scored, dict) and isinstance(scored.get("train_time_s"), (int, float)):
            seconds = float(scored["train_time_s"])
    return _number(None if seconds is None else seconds / 60.0, 1)


def compare_runs(folders: Sequence, split: str = "test", mean_over_seeds: bool = False,
                 sort_by: Optional[str] = None) -> Comparison:
    """A table of ``folders`` (run folders; others are left out with a note).

    Columns: the run, its step and training minutes, each score some run has (``split``'s PSNR / SSIM / LPIPS / PSNR
    of the moving regions, the motion's end-point error and that of no motion); then every option whose value differs
    between the runs ('?' where a run has no readable config, ``(absent)`` where its config predates the option).
    ``mean_over_seeds``: runs that differ only in ``--seed`` make one row, their scores as mean +- standard deviation
    (of the runs that have the score), named by their folders, with a ``seed`` row listing the seeds. ``sort_by``: a
    score (:func:`sort_key_name` of its column) to order the rows by, best first (rows without it last).
    Raises :class:`CompareError` when none of ``folders`` is a run.
    """
    notes: List[str] = []
    runs, seen, missing = [], set(), []
    for folder in _expanded(map(Path, folders)):
        if folder.resolve() in seen:
            notes.append(f"{folder}: given twice: compared once")
            continue
        seen.add(folder.resolve())
        if not folder.exists():
            missing.append(folder)
            continue
        if not is_run(folder):
            notes.append(f"{folder}: not a run folder (no config.yaml, metrics.json or metrics.jsonl): left out")
            continue
        config, note = _config(folder)
        notes += [note] if note else []
        metrics, step = read_metrics(folder), _latest_step(folder)
        scored = metrics.get(split)
        if isinstance(scored, dict) and step is not None and scored.get("step") not in (None, step):
            notes.append(f"{folder}: its {split} scores are of step {scored['step']}, its latest checkpoint of step "
                         f"{step}: tools/eval.py {folder} --split {split} scores the latest")
        runs.append((folder, config, metrics, step))
    if not runs:
        if missing:
            notes.append("not found: " + ", ".join(map(str, missing)))
        raise CompareError("none of the folders given is a run (" + ", ".join(map(str, folders)) + "): pass the --out "
                           "folders of tools/train.py, e.g. runs/*")
    names = _names([folder for folder, _, _, _ in runs])
    raw = [[_score(metrics, section.format(split=split), key) for _, (section, key), _ in SCORES]
           for _, _, metrics, _ in runs]
    shown = [j for j in range(len(SCORES)) if any(r[j] is not None for r in raw)]
    if not any(isinstance(m.get(split), dict) for _, _, m, _ in runs):
        notes.append(f"no run has {split} scores in its metrics.json (--split {split})")
    configs = [config for _, config, _, _ in runs]
    keys = [k for k in dict.fromkeys(k for c in configs for k in c) if k not in IGNORED_OPTIONS]
    readable = [c for c in configs if c]
    differing = [k for k in keys if len({_option(c[k]) if k in c else None for c in readable}) > 1]
    cells = [[("?" if not c else _option(c[k]) if k in c else "(absent)") for k in differing] for c in configs]
    groups: Dict[tuple, List[int]] = {}
    for i, row in enumerate(cells):  # (a run alone, or with the runs whose other options are the same)
        key = tuple(v for k, v in zip(differing, row) if k != "seed") if mean_over_seeds and "?" not in row else (i,)
        groups.setdefault(key, []).append(i)
    header = ["run", "step", "train min"] + [SCORES[j][0] for j in shown] + differing
    if sort_by is not None:
        j = next(j for j, (column, _, _) in enumerate(SCORES) if sort_key_name(column) == sort_by)
        sign = -1.0 if SCORES[j][0] in HIGHER_IS_BETTER else 1.0

        def order(members):
            have = [raw[i][j] for i in members if raw[i][j] is not None]
            return (not have, sign * sum(have) / len(have) if have else 0.0)

        groups = dict(sorted(groups.items(), key=lambda item: order(item[1])))
        if j not in shown:
            notes.append(f"--sort {sort_by}: no run has that score; the rows stay in the order given")
    rows = []
    for members in groups.values():
        steps = sorted({runs[i][3] for i in members}, key=lambda s: (s is None, s or 0))
        minutes = [float(m) for m in (_train_minutes(runs[i][0], runs[i][2], split) for i in members) if m != ABSENT]
        row = [", ".join(names[i] for i in members), " / ".join(ABSENT if s is None else str(s) for s in steps),
               _number(sum(minutes) / len(minutes) if minutes else None, 1)]
        row += [_spread([raw[i][j] for i in members], SCORES[j][2]) for j in shown]
        row += [", ".join(dict.fromkeys(cells[i][n] for i in members)) for n in range(len(differing))]
        rows.append(row)
    views = {metrics[split].get("n_images") for _, _, metrics, _ in runs
             if isinstance(metrics.get(split), dict) and metrics[split].get("n_images") is not None}
    if len(views) > 1:
        notes.append(f"the {split} scores average different numbers of views ({', '.join(map(str, sorted(views)))}): "
                     f"tools/eval.py RUN --split {split} scores all of a run's views")
    sizes = {(metrics[split].get("width"), metrics[split].get("height")) for _, _, metrics, _ in runs
             if isinstance(metrics.get(split), dict) and metrics[split].get("width") is not None}
    if len(sizes) > 1:
        notes.append(f"the {split} scores are of images of different sizes ({', '.join(f'{w}x{h}' for w, h in sorted(sizes))}"
                     f"): a run scored at another --downscale (tools/eval.py RUN --downscale D scores it at D)")
    return Comparison(header, rows, 3 + len(shown), [folder for folder, _, _, _ in runs], names, notes, missing)


def _expanded(folders) -> List[Path]:
    """``folders``, each folder that is not a run but holds runs (``runs/``) replaced by those runs, in name order."""
    out = []
    for folder in folders:
        children = sorted(c for c in folder.iterdir() if is_run(c)) if folder.is_dir() and not is_run(folder) else []
        out += children or [folder]
    return out


def _score(metrics: Dict, section: str, key: str) -> Optional[float]:
    """A finite number of ``metrics.json``'s ``section`` (None when it is missing, not a number or not finite)."""
    part = metrics.get(section)
    return _finite(part.get(key) if isinstance(part, dict) else None)


def _spread(values: List[Optional[float]], digits: int) -> str:
    """One run's score, or several runs' mean +- sample standard deviation (and how many had it, where not all)."""
    have = [v for v in values if v is not None]
    if len(have) <= 1:
        text = _number(have[0] if have else None, digits)
        return f"{text} (n=1)" if have and len(values) > 1 else text
    mean = sum(have) / len(have)
    std = math.sqrt(sum((v - mean) ** 2 for v in have) / (len(have) - 1))
    text = f"{mean:.{digits}f} ± {std:.{digits}f}"
    return text if len(have) == len(values) else f"{text} (n={len(have)})"


def _names(folders: List[Path]) -> List[str]:
    """Short distinct names: the folders' last path parts, as few as tell them apart (``a/demo``, ``b/demo``)."""
    parts = [Path(f).absolute().parts for f in folders]
    for n in range(1, max(map(len, parts)) + 1):
        names = [str(Path(*p[-n:])) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(f) for f in folders]


def markdown_report(table: Comparison) -> str:
    """The scores as a table of runs, then the differing options as a table of options (a row each, a column per run:
    readable however many there are)."""
    header, rows, n_score_columns = table.header, table.rows, table.n_score_columns
    text = markdown_table(header[:n_score_columns], [row[:n_score_columns] for row in rows])
    options = header[n_score_columns:]
    if not options:
        return text + "\n\nno option differs between the runs" if len(rows) > 1 else text
    by_option = [[name] + [row[n_score_columns + j] for row in rows] for j, name in enumerate(options)]
    return text + "\n\noptions that differ:\n\n" + markdown_table(["option"] + [row[0] for row in rows], by_option)


def markdown_table(header: List[str], rows: List[List[str]]) -> str:
    """A Markdown table (numbers right-aligned)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    numeric = [all(_is_number(r[j]) or r[j] == ABSENT for r in rows) for j in range(len(header))]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---:" if numeric[j] else "---" for j in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_csv(path, header: List[str], rows: List[List[str]]) -> None:
    """The table as CSV (written beside ``path``, then moved in)."""
    from ._io import replaced_on_success

    with replaced_on_success(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
