"""tools/compare.py: runs side by side, their scores and the options in which they differ."""
import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from kinfield.cli import main_compare, main_eval_motion, main_train
from kinfield.data.synthetic import PRESETS, write_scene

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two 2-step runs of the tiny scene, scored on its test split, that differ in one option; the second one's
    motion scored against the scene's ground truth."""
    root = tmp_path_factory.mktemp("compare")
    scene = write_scene(PRESETS["tiny"], root / "scene")
    runs = []
    for name, extra in (("base", []), ("stiff", ["--kin_rigidity_weight", "0.5"])):
        run = root / "runs" / name
        assert main_train([str(scene), str(REPO / "configs" / "debug.yaml"), "--out", str(run), "--device", "cpu",
                           "--iters", "2", "--train_eval_lpips", "false", "--train_progress", "false", *extra]) == 0
        runs.append(run)
    assert main_eval_motion([str(runs[1]), "--device", "cpu"]) == 0
    return runs


def seed_copy(run: Path, to: Path, psnr) -> Path:
    """A copy of ``run`` as if trained with --seed 1, its test PSNR set to ``psnr`` (None: without one)."""
    shutil.copytree(run, to)
    config = yaml.safe_load((to / "config.yaml").read_text())
    config["seed"] = 1
    (to / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    scores = json.loads((to / "metrics.json").read_text())
    scores["test"].pop("psnr") if psnr is None else scores["test"].update(psnr=psnr)
    (to / "metrics.json").write_text(json.dumps(scores))
    return to


def table(text: str, first: int = 0):
    """The ``first``-th Markdown table in ``text`` as (header, rows)."""
    blocks = [b for b in text.split("\n\n") if b.startswith("|")]
    lines = blocks[first].splitlines()
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return cells[0], cells[2:]


def test_scores_steps_and_the_one_differing_option(two_runs, capsys, tmp_path):
    base, stiff = two_runs
    out_csv = tmp_path / "table.csv"
    assert main_compare([str(base), str(stiff), "--csv", str(out_csv)]) == 0
    out = capsys.readouterr().out
    header, rows = table(out)
    assert header == ["run", "step", "train min", "PSNR", "SSIM", "EPE", "EPE no motion"]  # (no LPIPS: it was off)
    assert [r[:2] for r in rows] == [["base", "2"], ["stiff", "2"]]
    for run, row in zip(two_runs, rows):
        scores = json.loads((run / "metrics.json").read_text())
        assert float(row[3]) == pytest.approx(scores["test"]["psnr"], abs=0.005)
        assert float(row[4]) == pytest.approx(scores["test"]["ssim"], abs=0.0005)
        assert float(row[2]) == pytest.approx(float((run / "train_time.txt").read_text()) / 60, abs=0.05)
    motion = json.loads((stiff / "metrics.json").read_text())["motion"]
    assert rows[0][5:] == ["-", "-"]
    assert float(rows[1][5]) == pytest.approx(motion["epe_mean"], abs=0.0005)
    assert float(rows[1][6]) == pytest.approx(motion["epe_zero_motion"], abs=0.0005)
    # the output folder differs too, but does not make another experiment: only the weight is listed
    assert table(out, 1) == (["option", "base", "stiff"], [["kin_rigidity_weight", "0.01", "0.5"]])
    with out_csv.open() as f:
        written = list(csv.reader(f))
    assert written[0] == header + ["kin_rigidity_weight"] and [r[0] for r in written[1:]] == ["base", "stiff"]


def test_runs_that_differ_in_nothing_say_so(two_runs, capsys, tmp_path):
    copy = tmp_path / "again"
    shutil.copytree(two_runs[0], copy)
    assert main_compare([str(two_runs[0]), str(copy)]) == 0
    out = capsys.readouterr().out
    assert "no option differs between the runs" in out and "options that differ" not in out
    # two runs of one name are told apart by as many parent folders as it takes
    same_name = tmp_path / "elsewhere" / "base"
    shutil.copytree(two_runs[0], same_name)
    assert main_compare([str(two_runs[0]), str(same_name)]) == 0
    assert [r[0] for r in table(capsys.readouterr().out)[1]] == ["runs/base", "elsewhere/base"]


def test_other_folders_are_left_out_with_a_note_and_none_is_an_error(two_runs, capsys, tmp_path):
    (tmp_path / "notes").mkdir()
    assert main_compare([str(two_runs[0]), str(tmp_path / "notes"), f"{two_runs[0]}/"]) == 0
    captured = capsys.readouterr()
    assert [r[0] for r in table(captured.out)[1]] == ["base"]
    assert f"{two_runs[0]}: given twice: compared once" in captured.err
    assert f"{tmp_path / 'notes'}: not a run folder" in captured.err
    # a folder that does not exist (a mistyped run): the table of the others, then an error and exit code 2
    assert main_compare([str(two_runs[0]), str(tmp_path / "missing")]) == 2
    captured = capsys.readouterr()
    assert [r[0] for r in table(captured.out)[1]] == ["base"]
    assert f"error: not found, so not in the table: {tmp_path / 'missing'}" in captured.err
    assert main_compare([str(tmp_path / "notes")]) == 2
    assert "none of the folders given is a run" in capsys.readouterr().err
    # a folder of runs (runs/) stands for the runs in it
    assert main_compare([str(two_runs[0].parent)]) == 0
    assert [r[0] for r in table(capsys.readouterr().out)[1]] == ["base", "stiff"]


def test_a_run_without_a_readable_config_or_with_an_older_one(two_runs, capsys, tmp_path):
    """No config.yaml: its options are '?'; a config written before an option existed: '(absent)' in that row."""
    broken, older = tmp_path / "broken", tmp_path / "older"
    shutil.copytree(two_runs[0], broken)
    shutil.copytree(two_runs[1], older)
    (broken / "config.yaml").write_text("[unclosed")
    config = yaml.safe_load((older / "config.yaml").read_text())
    del config["kin_consistency_weight"]
    (older / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main_compare([str(two_runs[0]), str(broken), str(older)]) == 0
    captured = capsys.readouterr()
    header, rows = table(captured.out, 1)
    assert header == ["option", "base", "broken", "older"]
    assert rows == [["kin_consistency_weight", "0", "?", "(absent)"], ["kin_rigidity_weight", "0.01", "?", "0.5"]]
    assert f"{broken / 'config.yaml'}: not readable as YAML" in captured.err


def test_plot_of_the_runs_curves_leaves_out_a_run_without_a_log(two_runs, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    import imageio.v3 as iio

    from kinfield.plots import read_training_log

    no_log = tmp_path / "no_log"
    shutil.copytree(two_runs[0], no_log)
    (no_log / "metrics.jsonl").unlink()
    figure = tmp_path / "figs" / "curves.png"
    assert main_compare([*map(str, two_runs), str(no_log), "--plot", str(figure)]) == 0
    err = capsys.readouterr().err
    assert f"figure written to {figure}" in err and "no_log left out of the figure" in err
    assert iio.imread(figure).ndim == 3
    assert all("loss/rgb" in read_training_log(run / "metrics.jsonl") for run in two_runs)  # (what the figure draws)
    (tmp_path / "figs" / "none.png").parent.mkdir(exist_ok=True)
    assert main_compare([str(no_log), "--plot", str(tmp_path / "figs" / "none.png")]) == 2
    assert "none has a training log" in capsys.readouterr().err and not (tmp_path / "figs" / "none.png").exists()


def test_runs_that_differ_only_in_their_seed_make_one_row_with_mean_and_spread(two_runs, capsys, tmp_path):
    """--mean-over-seeds: base and a copy of it with another seed and PSNR average to one row (mean +- sample standard
    deviation of the two PSNRs); the run with another weight stays a row of its own; the seed row lists both seeds."""
    base, stiff = two_runs
    psnr = json.loads((base / "metrics.json").read_text())["test"]["psnr"]
    other = seed_copy(base, tmp_path / "base_seed1", psnr=psnr + 1.0)
    assert main_compare([str(base), str(stiff), str(other), "--mean-over-seeds"]) == 0
    out = capsys.readouterr().out
    header, rows = table(out)
    assert [r[0] for r in rows] == ["base, base_seed1", "stiff"]
    assert rows[0][3] == f"{psnr + 0.5:.2f} ± {2 ** -0.5:.2f}"  # (std of {p, p + 1}: 1 / sqrt(2))
    assert rows[1][3] == f"{json.loads((stiff / 'metrics.json').read_text())['test']['psnr']:.2f}"
    assert dict((r[0], r[1:]) for r in table(out, 1)[1]) == {"seed": ["0, 1", "0"], "kin_rigidity_weight": ["0.01", "0.5"]}
    # without the flag: a row per run
    assert main_compare([str(base), str(stiff), str(other)]) == 0
    assert len(table(capsys.readouterr().out)[1]) == 3


def test_notes_on_scores_of_an_older_step_and_on_a_split_no_run_scored(two_runs, capsys, tmp_path):
    """Scores of another step than the run's latest checkpoint (tools/eval.py --checkpoint of an older one) are named;
    so is a --split that no run has scores of; a --plot name matplotlib cannot write is refused before any work."""
    older = tmp_path / "older"
    shutil.copytree(two_runs[0], older)
    scores = json.loads((older / "metrics.json").read_text())
    scores["test"]["step"] = 1
    (older / "metrics.json").write_text(json.dumps(scores))
    assert main_compare([str(older), str(two_runs[1])]) == 0
    err = capsys.readouterr().err
    assert f"{older}: its test scores are of step 1, its latest checkpoint of step 2" in err
    assert "different sizes" not in err
    scores["test"]["width"] = scores["test"]["height"] = 8
    (older / "metrics.json").write_text(json.dumps(scores))
    assert main_compare([str(older), str(two_runs[1])]) == 0
    assert "the test scores are of images of different sizes (8x8, 16x16)" in capsys.readouterr().err
    assert main_compare([str(older), "--split", "tset"]) == 0
    assert "no run has tset scores in its metrics.json" in capsys.readouterr().err
    assert main_compare([str(older), "--plot", str(tmp_path / "curves")]) == 2
    assert "give a file name ending in .png" in capsys.readouterr().err and not (tmp_path / "curves").exists()


def test_a_score_only_one_seed_has_says_so(two_runs, capsys, tmp_path):
    base = two_runs[0]
    other = seed_copy(base, tmp_path / "base_seed1", psnr=None)
    assert main_compare([str(base), str(other), "--mean-over-seeds"]) == 0
    header, rows = table(capsys.readouterr().out)
    psnr = json.loads((base / "metrics.json").read_text())["test"]["psnr"]
    assert rows[0][header.index("PSNR")] == f"{psnr:.2f} (n=1)"


def test_rows_sorted_by_a_score_best_first(two_runs, capsys, tmp_path):
    """--sort psnr: highest first; --sort epe: lowest first, runs without motion scores last."""
    base, stiff = two_runs
    psnr = json.loads((base / "metrics.json").read_text())["test"]["psnr"]
    better = seed_copy(base, tmp_path / "better", psnr=psnr + 5.0)
    assert main_compare([str(base), str(stiff), str(better), "--sort", "psnr"]) == 0
    header, rows = table(capsys.readouterr().out)
    values = [float(r[header.index("PSNR")]) for r in rows]
    assert rows[0][0] == "better" and values == sorted(values, reverse=True)
    assert main_compare([str(base), str(better), str(stiff), "--sort", "epe"]) == 0
    assert [r[0] for r in table(capsys.readouterr().out)[1]][0] == "stiff"  # (the only run with an end-point error)
    assert main_compare([str(base), "--sort", "psnr-dyn"]) == 0
    assert "--sort psnr-dyn: no run has that score" in capsys.readouterr().err
