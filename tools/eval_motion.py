"""Score a run's motion against exact ground truth: ``python tools/eval_motion.py RUN_DIR [--gt motion_gt.npz]``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.cli import main_eval_motion  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_eval_motion(sys.argv[1:]))
