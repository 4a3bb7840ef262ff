"""The one exception every dataset reader raises on bad input."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Union


class DatasetError(ValueError):
    """A dataset file is missing, malformed or inconsistent.

    The message always has the form ``"<path>: <problem>\\n  fix: <what to do>"`` so a user sees
    which file is wrong and how to repair it.

    Attributes:
        path: the offending file or folder (as a string).
        problem: what is wrong with it.
        fix: how to fix it.
    """

    def __init__(self, path: Union[str, os.PathLike], problem: str, fix: str):
        self.path = os.fspath(path)
        self.problem = str(problem)
        self.fix = str(fix)
        super().__init__(f"{self.path}: {self.problem}\n  fix: {self.fix}")

    def __reduce__(self):  # keep the exception picklable (e.g. across worker processes)
        return (type(self), (self.path, self.problem, self.fix))


@contextmanager
def as_dataset_error(path: Union[str, os.PathLike], problem: str, fix: str) -> Iterator[None]:
    """Turn any exception raised in the block (a corrupt or truncated file, a missing key, an
    unexpected shape) into ``DatasetError(path, "<problem> (<exception>)", fix)``; a
    :class:`DatasetError` passes through unchanged."""
    try:
        yield
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy / zipfile / pickle raise many different types
        raise DatasetError(path, f"{problem} ({type(e).__name__}: {e})", fix) from None
