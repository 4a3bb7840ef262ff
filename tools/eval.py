"""Re-render and score a split of a trained run: ``python tools/eval.py RUN_DIR [--split test] [--no-lpips]``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.cli import main_eval  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_eval(sys.argv[1:]))
