"""The trainer composites on the background the images actually sit on."""
import torch

from kinfield.config import parse_args
from kinfield.data import Scene, SceneSplit
from kinfield.train import Trainer


def _black_scene():
    n, h, w = 3, 8, 8
    poses = torch.eye(4).repeat(n, 1, 1)
    poses[:, 2, 3] = 4.0
    split = SceneSplit("train", torch.zeros(n, h, w, 3), None, poses, torch.linspace(0, 1, n),
                       torch.tensor([8.0, 8.0, 4.0, 4.0]).repeat(n, 1))
    return Scene("", {"train": split}, torch.tensor([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]), 2.0, 6.0,
                 torch.zeros(3), 0.5)


def test_scene_without_alpha_trains_on_its_own_black_background(tmp_path):
    cfg = parse_args(["--config", "configs/debug.yaml", "--out", str(tmp_path), "--device", "cpu",
                      "--train_eval_split", ""])
    assert cfg.data.background == (1.0, 1.0, 1.0)  # the config default is white ...
    trainer = Trainer(cfg, scene=_black_scene())
    batch = trainer.batcher.sample(16)
    target, bg = trainer.make_target(batch)
    torch.testing.assert_close(bg, torch.zeros(3))  # ... but these images sit on black
    torch.testing.assert_close(target, torch.zeros(16, 3))
