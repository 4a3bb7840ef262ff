"""A trained tiny run shared by the tool tests (one 4-step training per test session)."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """``<tmp>/run`` trained 4 steps on the tiny synthetic scene ``<tmp>/scene`` (with the kinematic field; at step 4
    the curriculum has unlocked only the velocity)."""
    from kinfield.cli import main_train
    from kinfield.data.synthetic import PRESETS, write_scene

    root = tmp_path_factory.mktemp("render_eval")
    scene = write_scene(PRESETS["tiny"], root / "scene")
    run = root / "run"
    code = main_train([str(scene), str(REPO / "configs" / "debug.yaml"), "--out", str(run), "--device", "cpu",
                       "--resume", "none", "--iters", "4", "--train_eval_split", ""])
    assert code == 0
    return run
