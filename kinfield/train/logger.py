"""Training logs: JSON lines (always), TensorBoard (when installed), one progress bar."""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Dict, Optional

log = logging.getLogger("kinfield")


class MetricsLogger:
    """Appends ``{"step": s, ...}`` lines to ``RUN_DIR/metrics.jsonl`` and mirrors the numbers to TensorBoard event files in
    ``RUN_DIR/tb/`` (``tensorboard``: when the package is installed; ``resume_step``: the step the session starts from, 0
    for a fresh run: TensorBoard hides what earlier sessions logged after it)."""

    def __init__(self, run_dir, tensorboard: bool = True, resume_step: Optional[int] = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size > 0:
            with self.path.open("r+b") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a row cut off by a kill mid-write: the next row must not join it
                    f.seek(0)
                    data = f.read()  # (only then: a whole run's log is not read at every start)
                    f.truncate(data.rfind(b"\n") + 1)
                    log.warning("%s: dropped a cut-off last row (%d bytes)", self.path,
                                len(data) - data.rfind(b"\n") - 1)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # (tensorboard not installed)
                log.debug("TensorBoard logging off: %s", exc)
            except Exception as exc:  # noqa: BLE001 (an install that breaks on import, e.g. a protobuf mismatch)
                log.warning("TensorBoard logging off: the tensorboard package fails to import (%s: %s); metrics.jsonl "
                            "is written as always (pip install -U tensorboard, or --train_tensorboard false)",
                            type(exc).__name__, exc)
            else:
                # a resumed run retrains the steps after its checkpoint (and a fresh run in a folder whose earlier run
                # was removed starts at 0): TensorBoard then hides what an earlier session logged after that step
                # (metrics.jsonl keeps every row; tools/plot.py counts a step once)
                self._tb = SummaryWriter(str(Path(run_dir) / "tb"),
                                         purge_step=None if resume_step is None else resume_step + 1)

    def log(self, step: int, values: Dict[str, float]) -> None:
        row = {"step": step}
        row.update({k: (float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else str(v))
                    for k, v in values.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def tensorboard_only(self, step: int, values: Dict[str, Optional[float]]) -> None:
        """Numbers kept elsewhere (the final scores, in metrics.json) shown in TensorBoard too; None / NaN left out."""
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def tensorboard_image(self, tag: str, image, step: int) -> None:
        """An ``[H, W, 3]`` image in [0, 1] into TensorBoard (e.g. a validation render beside its ground truth)."""
        if self._tb is not None and image is not None:
            self._tb.add_image(tag, image.clamp(0.0, 1.0), step, dataformats="HWC")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def progress_bar(total: int, initial: int, enabled: bool):
    """A tqdm bar (disabled when not wanted or stdout is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, file=sys.stdout,
                mininterval=1.0, desc="train")


class EMA:
    """Exponential moving average of logged scalars for the progress bar."""

    def __init__(self, decay: float = 0.9):
        self.decay = decay
        self.values: Dict[str, float] = {}

    def update(self, values: Dict[str, float]) -> Dict[str, float]:
        for k, v in values.items():
            old: Optional[float] = self.values.get(k)
            self.values[k] = v if old is None else self.decay * old + (1 - self.decay) * v
        return self.values
