"""Writing results: a new file or folder replaces the earlier one only once complete, never a folder by a file."""
import os

import pytest

import kinfield._io as kio
from kinfield._io import replaced_on_success


def test_a_write_that_fails_leaves_the_earlier_result_and_no_partial_one(tmp_path):
    target = tmp_path / "tracks.csv"
    target.write_text("earlier")
    with pytest.raises(RuntimeError):
        with replaced_on_success(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["tracks.csv"]
    with replaced_on_success(target) as tmp:
        assert tmp.suffix == ".csv" and tmp.parent == tmp_path
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["tracks.csv"]


def test_a_folder_is_replaced_whole_and_never_by_a_file(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "000.png").write_text("a")
    (folder / "001.png").write_text("b")
    with replaced_on_success(folder) as tmp:
        tmp.mkdir()
        (tmp / "000.png").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["000.png"] and (folder / "000.png").read_text() == "new"
    with pytest.raises(FileExistsError, match="is a folder"):
        with replaced_on_success(folder) as tmp:
            tmp.write_text("a file where a folder is")
    assert (folder / "000.png").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_a_failure_between_the_two_moves_puts_the_earlier_folder_back(tmp_path, monkeypatch):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "000.png").write_text("earlier")
    calls = []
    real = os.replace

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(kio.os, "replace", second_fails)
    with pytest.raises(OSError, match="disk full"):
        with replaced_on_success(folder) as tmp:
            tmp.mkdir()
            (tmp / "000.png").write_text("new")
    monkeypatch.undo()
    assert (folder / "000.png").read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_a_partial_output_left_by_a_killed_write_is_cleared_first(tmp_path):
    """A ``.frames.partial`` folder left by a killed earlier write (with a stale frame in it) does not stop the next
    write, nor end up in its result."""
    folder = tmp_path / "frames"
    stale = tmp_path / ".frames.partial"
    stale.mkdir()
    (stale / "999.png").write_text("stale")
    with replaced_on_success(folder) as tmp:
        assert tmp == stale
        tmp.mkdir()
        (tmp / "000.png").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["000.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_metrics_rows_number_lines_from_one_and_skip_blank_ones(tmp_path):
    """Blank lines are neither rows nor bad lines; a line that is not a JSON object with an integer-like step is a bad
    line (by its 1-based number); a step written as text is read as an int."""
    log = tmp_path / "metrics.jsonl"
    log.write_bytes(b'{"step": 1, "loss": 0.5}\n\n   \n{"step": "7", "psnr": 20}\n{"loss": 1}\n[1, 2]\n'
                    b'{"step": 2, "x": "\xff"}\n{"step": 1e999}\n{"step": 3')
    rows, bad = kio.metrics_rows(log)
    assert [(i, r["step"]) for i, r in rows] == [(1, 1), (4, 7), (7, 2)]
    assert rows[0][1] == {"step": 1, "loss": 0.5} and rows[2][1]["x"] == "\ufffd"
    assert bad == [5, 6, 8, 9]
