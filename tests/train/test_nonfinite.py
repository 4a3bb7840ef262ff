"""A non-finite loss drops the step (no parameter, optimiser or schedule update) and stops the run after 10."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kinfield.config import parse_args
from kinfield.data.synthetic import PRESETS, write_scene
from kinfield.losses import Term, read_scalars
from kinfield.train import Trainer
from kinfield.train.trainer import NonFiniteLoss

REPO = Path(__file__).resolve().parents[2]


def test_read_scalars_reads_every_value_at_once():
    out = read_scalars({"a": torch.tensor(1.5), "b": torch.tensor([2.0]), "c": torch.tensor(3, dtype=torch.int64)})
    assert out == {"a": 1.5, "b": 2.0, "c": 3.0} and all(type(v) is float for v in out.values())
    assert read_scalars({}) == {}


def test_nonfinite_loss_skips_the_update_then_stops_with_the_checkpoint_folder(tmp_path):
    scene = write_scene(PRESETS["tiny"], tmp_path / "scene")
    cfg = parse_args(["--config", str(REPO / "configs" / "debug.yaml"), "--scene", str(scene), "--out",
                      str(tmp_path / "run"), "--device", "cpu", "--train_eval_split", "", "--train_rays", "64",
                      "--train_min_rays", "64", "--train_target_samples", "0"])
    tr = Trainer(cfg)
    tr.train_step()  # a finite step first: Adam has moments to keep
    tr.step += 1
    bad = {"on": True}
    tr.terms.append(Term("poison", lambda ctx: torch.tensor(float("nan")) if bad["on"] else torch.tensor(0.0)))
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    moments = {k: v.clone() for k, v in tr.optimizer.state_dict()["state"][0].items()}
    lr = tr.optimizer.param_groups[0]["lr"]
    for i in range(9):
        assert tr.train_step() == {"skipped_nonfinite": 1.0}
        tr.step += 1
    after = tr.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k != "occupancy.density")
    assert all(torch.equal(v, tr.optimizer.state_dict()["state"][0][k]) for k, v in moments.items())
    assert tr.optimizer.param_groups[0]["lr"] == lr and all(p.grad is None for p in tr.model.parameters())
    bad["on"] = False  # a finite step resets the count
    assert "skipped_nonfinite" not in tr.train_step() and tr.n_bad_steps == 0
    bad["on"] = True
    for _ in range(9):
        tr.train_step()
    with pytest.raises(NonFiniteLoss, match="ckpts"):
        tr.train_step()


def test_a_weight_that_overflows_the_loss_is_named_and_the_tool_exits_without_a_traceback(tmp_path, capsys):
    from kinfield.cli import main_train

    scene = write_scene(PRESETS["tiny"], tmp_path / "scene")
    code = main_train([str(scene), str(REPO / "configs" / "debug.yaml"), "--out", str(tmp_path / "run"), "--device",
                       "cpu", "--train_eval_split", "", "--train_rays", "64", "--train_min_rays", "64",
                       "--train_target_samples", "0", "--iters", "12", "--kin_start", "0",
                       "--kin_photo_weight", "1e300"])  # finite as an option, infinite in the float32 loss
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "not finite: warp_photo)" in err and "or the weight of those terms (--kin_photo_weight)" in err
