"""Export 3-D motion tracks of a trained run: ``python tools/export_trajectories.py RUN_DIR [--points FILE] ...``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.cli import main_export  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_export(sys.argv[1:]))
