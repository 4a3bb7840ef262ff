"""Runs side by side: ``python tools/compare.py RUN [RUN ...] [--split test] [--sort SCORE] [--mean-over-seeds]
[--csv FILE] [--plot FILE]`` (e.g. ``runs/*`` or ``runs/``)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.cli import main_compare  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_compare(sys.argv[1:]))
