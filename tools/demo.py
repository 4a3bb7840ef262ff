"""The README demo: generate the synthetic demo scene, train on it, render a video, score images and motion.

``python tools/demo.py [--out runs/demo] [--device cpu] [extra training options ...]``
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.cli import main_demo  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_demo(sys.argv[1:]))
