"""Video (or folder of frames) -> NSFF layout: ``python tools/preprocess.py INPUT OUT_DIR [--option value ...]``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.cli import main_preprocess  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_preprocess(sys.argv[1:]))
