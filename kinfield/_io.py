"""Writing results without ever leaving a half-written file, or losing the previous one to a failed write."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator, List, Tuple, Union


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def replaced_on_success(path: Union[str, Path]) -> Iterator[Path]:
    """Yield a hidden sibling of ``path`` (same suffix, so writers that go by it still do) to write a file or a folder
    into; when the block ends without an error it replaces ``path`` (a file atomically; a folder once it is complete,
    so a replaced folder keeps no stale files), and when it raises, the partial output is removed and ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    _remove(tmp)  # left by a killed earlier write
    old = path.with_name(f".{path.name}.old")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp}")
        if path.exists() and path.is_dir() != tmp.is_dir():  # never a user's folder replaced by a file, or back
            kind = "a folder" if path.is_dir() else "a file"
            raise FileExistsError(f"{path} is {kind}, not what is being written there; left as it was: pass another path")
        if tmp.is_dir():  # os.replace cannot put a folder over a folder: move the old one aside
            _remove(old)
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        if old.exists() and not path.exists():  # failed between the two moves: the earlier folder goes back
            os.replace(old, path)
        raise


def set_aside(path: Union[str, Path], tag: str) -> Path:
    """Move ``path`` to ``<name>.<tag>`` (``<name>.<tag>.1``, ``.2``, ... when taken: earlier ones stay) and return
    where it went: a file kinfield will not overwrite, kept for whoever needs it."""
    path = Path(path)
    aside, n = path.with_name(f"{path.name}.{tag}"), 1
    while aside.exists():
        aside, n = path.with_name(f"{path.name}.{tag}.{n}"), n + 1
    os.replace(path, aside)
    return aside


def metrics_rows(path) -> Tuple[List[Tuple[int, dict]], List[int]]:
    """The rows of a ``metrics.jsonl``: ``([(line number, row dict with an int "step"), ...], [bad line numbers])``.
    A line that is not a JSON object with a step (a run killed while writing, a hand edit, bytes that are not
    UTF-8) is a bad line, never an error: the log is read to plot and to resume, and neither should fail on it."""
    rows, bad = [], []
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row["step"] = int(row["step"])
        except (ValueError, KeyError, TypeError, IndexError, OverflowError):  # (OverflowError: a step of 1e999)
            bad.append(i)
            continue
        rows.append((i, row))
    return rows, bad
