"""RayBatcher: uniform batches and the importance-map (dynamic-ray) draws."""
from __future__ import annotations

import pytest
import torch

from kinfield.data import RayBatcher
from kinfield.data.scene import SceneSplit


def make_split(n=4, h=25, w=40) -> SceneSplit:
    g = torch.Generator().manual_seed(0)
    poses = torch.eye(4).repeat(n, 1, 1)
    poses[:, 2, 3] = 3.0
    return SceneSplit("train", torch.rand(n, h, w, 3, generator=g), None, poses, torch.linspace(0, 1, n),
                      torch.tensor([[30.0, 30.0, w / 2, h / 2]]).repeat(n, 1), [f"f{i}" for i in range(n)])


def test_flat_index_matches_frame_row_col_and_colour():
    split = make_split()
    b = RayBatcher(split, torch.device("cpu"), torch.Generator().manual_seed(1)).sample(300)
    h, w = split.height, split.width
    assert torch.equal(b["flat"], b["frame"] * h * w + b["rows"] * w + b["cols"])
    assert torch.equal(b["rgb"], split.images[b["frame"], b["rows"], b["cols"]])


def test_important_draws_follow_the_map():
    """Ten pixels at importance 1 (weight 256) among 3990 at 0 (weight 1): a draw lands on them with
    probability 2560 / (2560 + 3990) = 0.391; uniform rays with 10 / 4000."""
    split = make_split()
    batcher = RayBatcher(split, torch.device("cpu"), torch.Generator().manual_seed(2))
    assert batcher.sample(64, n_important=32)["flat"].shape == (64,)  # no map yet: all uniform, no error
    batcher.enable_importance(0.0)
    hot = torch.arange(0, batcher.n_pixels, batcher.n_pixels // 10)[:10]
    batcher.update_importance(hot, torch.ones(10))
    b = batcher.sample(20000, n_important=10000)
    on_hot = torch.isin(b["flat"], hot).float()
    assert abs(float(on_hot[:10000].mean()) - 2560 / 6550) < 0.02  # important rays come first
    assert float(on_hot[10000:].mean()) < 0.01


def test_importance_values_are_clamped_and_quantised():
    batcher = RayBatcher(make_split(), torch.device("cpu"), torch.Generator().manual_seed(3))
    batcher.enable_importance(0.25)
    assert int(batcher.importance[0]) == 64
    batcher.update_importance(torch.tensor([0, 1, 2]), torch.tensor([-1.0, 0.5, 7.0]))
    assert batcher.importance[:3].tolist() == [0, 128, 255]
    batcher.update_importance(torch.tensor([0, 1, 2]), torch.tensor([float("nan"), float("inf"), 0.25]))
    assert batcher.importance[:3].tolist() == [0, 128, 64]  # not-finite values leave their pixels as they were
    with pytest.raises(ValueError, match="prior"):
        RayBatcher(make_split(), torch.device("cpu"), torch.Generator()).enable_importance(1.5)


def _global_draw(importance: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
    """The literal inverse-CDF draw over every pixel's weight 1 + importance (what the blocked draw must equal)."""
    cdf = torch.cumsum(importance.to(torch.float64) + 1.0, 0)
    u = torch.rand(n, generator=gen, dtype=torch.float64) * cdf[-1]
    return torch.searchsorted(cdf, u).clamp_max(importance.numel() - 1)


def test_blocked_importance_draws_equal_the_global_inverse_cdf():
    """The two-level draw (block, then pixel in it; a batch of few draws on a large map) picks exactly the pixels
    one search of every pixel's running weight picks, for the same generator state: a map whose pixel count is no multiple of the block (4000 = 15
    blocks of 256 + 160), random values, updates that hit one pixel twice, then a map loaded from a checkpoint.
    The block sums stay those of a full recount."""
    from kinfield.data.batcher import IMPORTANCE_BLOCK
    batcher = RayBatcher(make_split(), torch.device("cpu"), torch.Generator().manual_seed(4))
    assert batcher.n_pixels % IMPORTANCE_BLOCK != 0
    batcher.enable_importance(0.1)
    g = torch.Generator().manual_seed(5)

    def check():
        recount = torch.zeros(batcher._block_weight.shape, dtype=torch.int64)
        recount.index_add_(0, torch.arange(batcher.n_pixels) // IMPORTANCE_BLOCK, batcher.importance.long() + 1)
        assert torch.equal(batcher._block_weight, recount)
        # 15 draws read 15 blocks of 256 (< 4000 pixels: the two-level draw); 3000 draws one pass over the map
        for n in (15, 15, 15, 3000):
            state = batcher.gen.get_state()
            expect = _global_draw(batcher.importance, torch.Generator().set_state(state), n)
            drawn = batcher.sample(n, n_important=n)["flat"]
            assert torch.equal(drawn, expect)

    check()
    for _ in range(5):
        flat = torch.randint(0, batcher.n_pixels, (700,), generator=g)
        flat[1] = flat[0]  # one pixel twice in a batch
        values = torch.rand(700, generator=g) ** 3
        values[::50] = float("nan")
        batcher.update_importance(flat, values)
        check()
    hot = torch.zeros(batcher.n_pixels, dtype=torch.uint8)
    hot[-5:] = 255  # the padded last block
    batcher.load_importance(hot)
    assert torch.equal(batcher.importance, hot)
    check()
    assert float(torch.isin(batcher.sample(2000, n_important=2000)["flat"], torch.arange(3995, 4000)).float().mean()) > 0.2
