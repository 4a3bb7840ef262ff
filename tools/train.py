"""Train kinfield on a scene: ``python tools/train.py SCENE CONFIG [--option value ...]``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.cli import main_train  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_train(sys.argv[1:]))
