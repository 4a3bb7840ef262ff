"""Occupancy-grid marching: the backend option, the shared jitter, and nerfacc against the PyTorch path."""
import pytest
import torch

from kinfield import _external
from kinfield.render.occupancy import OccupancyConfig, OccupancyGrid


def _grid(device="cpu", backend="auto", seed=0):
    g = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]), OccupancyConfig(resolution=32, backend=backend))
    grid.binaries.copy_(torch.rand(32, 32, 32, generator=g) < 0.3)
    return grid.to(device)


def _rays(n, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 0.5 + torch.tensor([0.0, 0.0, 3.0])
    d = torch.nn.functional.normalize(-o + torch.randn(n, 3, generator=g) * 0.6, dim=-1)  # some rays miss
    return o.to(device), d.to(device)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="occupancy backend"):
        _grid(backend="cuda")


def test_forcing_nerfacc_on_cpu_rays_raises_a_clear_error():
    grid = _grid(backend="nerfacc")
    o, d = _rays(8)
    with pytest.raises(RuntimeError, match="needs CUDA rays"):
        grid.sample(o, d, 0.05)


def test_auto_on_cpu_marches_in_torch_and_the_jitter_can_be_shared():
    grid = _grid()
    grid.binaries.fill_(True)  # every cell occupied: each ray's first sample starts at entry + jitter * step
    o, d = _rays(64)
    assert grid.marching_backend(o) == "torch"
    jitter = torch.rand(64)
    a = grid.sample(o, d, 0.05, stratified=True, jitter=jitter)
    b = grid.sample(o, d, 0.05, stratified=True, jitter=jitter)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    ids, starts, _ = a
    assert ids.numel() > 100
    first = torch.ones_like(ids, dtype=torch.bool)
    first[1:] = ids[1:] != ids[:-1]
    from kinfield.geometry import ray_aabb

    t_near, _ = ray_aabb(o, d, grid.aabb)
    torch.testing.assert_close(starts[first], t_near[ids[first]] + jitter[ids[first]] * 0.05)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("stratified", [False, True])
def test_nerfacc_marching_matches_torch(stratified):  # pragma: no cover - GPU only
    if _external.get("nerfacc", "occupancy-grid marching") is None:
        pytest.skip(f"nerfacc unusable: {_external.reason('nerfacc')}")
    grid = _grid("cuda")
    o, d = _rays(4096, "cuda")
    jitter = torch.rand(4096, device="cuda") if stratified else None
    ids_t, s_t, e_t = grid._sample_torch(o, d, 0.01, jitter)
    ids_n, s_n, e_n = grid._sample_nerfacc(o, d, 0.01, jitter)
    assert ids_t.numel() > 50_000
    # per-ray counts agree except where a midpoint sits within rounding of a cell face or the box exit
    c_t = torch.bincount(ids_t, minlength=4096)
    c_n = torch.bincount(ids_n, minlength=4096)
    assert (c_t - c_n).abs().sum() <= 0.001 * ids_t.numel()
    # matched samples: every nerfacc sample has a torch sample of the same ray at the same start
    key_t = ids_t.double() * 1e3 + s_t.double()
    key_n = ids_n.double() * 1e3 + s_n.double()
    pos = torch.searchsorted(key_t, key_n).clamp(max=key_t.numel() - 1)
    near = torch.minimum((key_t[pos] - key_n).abs(), (key_t[(pos - 1).clamp(min=0)] - key_n).abs())
    assert (near < 1e-4).float().mean() > 0.999
    torch.testing.assert_close(e_n - s_n, torch.full_like(s_n, 0.01), rtol=0, atol=1e-5)
