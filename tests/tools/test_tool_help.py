"""Every option of every tool says what it does in ``--help`` (the training options: tests/test_config.py)."""
import argparse
import importlib.util
import re
from pathlib import Path

import pytest

from kinfield.config import ToolParser

REPO = Path(__file__).resolve().parents[2]
TOOLS = sorted(p.stem for p in (REPO / "tools").glob("*.py") if p.stem != "train")


def tool_main(name: str):
    spec = importlib.util.spec_from_file_location(f"kinfield_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "main", None) or next(getattr(module, n) for n in dir(module) if n.startswith("main_"))


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_option_has_a_help_text_and_one_default(name, monkeypatch, capsys):
    parsers = []
    for method in ("parse_args", "parse_known_args"):
        original = getattr(ToolParser, method)

        def recording(self, *args, _original=original, **kwargs):
            parsers.append(self)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ToolParser, method, recording)
    with pytest.raises(SystemExit) as exit_:
        tool_main(name)(["--help"])
    assert exit_.value.code == 0 and parsers
    text = capsys.readouterr().out
    assert text.startswith("usage:")
    options = [a for a in parsers[0]._actions if a.option_strings and a.help != argparse.SUPPRESS and a.dest != "help"]
    undocumented = [a.option_strings[-1] for a in options if not re.search(r"[a-zA-Z]{3}", a.help or "")]
    assert not undocumented, f"tools/{name}.py options without a help text: {undocumented}"
    # a default is said once (a help that gives it is not followed by argparse's own "(default: ...)")
    assert not re.search(r"default[^()]*\)\s*\(default:", " ".join(text.split())), text
    assert "(default: None)" not in text
