"""Figures of a run: ``python tools/plot.py RUN_DIR [--out DIR] [--tracks tracks.npz]`` (needs matplotlib)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.cli import main_plot  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_plot(sys.argv[1:]))
