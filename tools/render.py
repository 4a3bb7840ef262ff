"""Render videos of a trained run: ``python tools/render.py RUN_DIR --path spiral|orbit|fixed-view|bullet-time|test``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.cli import main_render  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_render(sys.argv[1:]))
