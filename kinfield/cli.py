"""Entry points behind ``tools/*.py`` (kept here so the tools stay thin)."""
from __future__ import annotations

import json
import logging
import sys
from typing import List


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="[kinfield] %(message)s",
                        stream=sys.stderr)


def main_train(argv: List[str]) -> int:
    from .config import parse_train_args
    from .data import DatasetError
    from .train import Trainer

    setup_logging()
    cfg = parse_train_args(argv)
    try:
        trainer = Trainer(cfg)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = trainer.fit()
    except KeyboardInterrupt:
        return 130
    print(json.dumps(result, indent=2))
    return 0
