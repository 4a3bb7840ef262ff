"""Tests of occupancy-grid marching and updates (kinfield.render.occupancy)."""
from __future__ import annotations

import torch

from kinfield.geometry import ray_aabb
from kinfield.render import OccupancyConfig, OccupancyGrid

AABB = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


def make_rays():
    """Axis rays from outside, a diagonal, a ray starting inside the box, rays that miss it."""
    g = torch.Generator().manual_seed(0)
    o = [[-3.0, 0.1, 0.2], [0.3, -4.0, -0.6], [-2.0, -2.0, -2.0], [0.0, 0.0, 0.0], [-3.0, 2.0, 0.0],
         [5.0, 5.0, 5.0]]
    d = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.2, -0.5, 0.7], [1.0, 0.0, 0.0],
         [1.0, 1.0, 1.0]]
    origins = torch.cat([torch.tensor(o), torch.randn(10, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, -3.0])])
    dirs = torch.cat([torch.tensor(d), torch.randn(10, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, 1.0])])
    return origins, dirs / dirs.norm(dim=-1, keepdim=True)


def check_sorted(ray_ids, t_starts):
    assert (ray_ids[1:] >= ray_ids[:-1]).all()
    same = ray_ids[1:] == ray_ids[:-1]
    assert (t_starts[1:][same] > t_starts[:-1][same]).all()


def test_all_occupied_grid_marches_whole_box_evenly():
    grid = OccupancyGrid(AABB, OccupancyConfig(resolution=8))
    origins, dirs = make_rays()
    step = 0.05
    t_near, t_far = ray_aabb(origins, dirs, AABB)
    for stratified in (False, True):
        torch.manual_seed(0)
        ray_ids, t0, t1 = grid.sample(origins, dirs, step, stratified=stratified)
        check_sorted(ray_ids, t0)
        torch.testing.assert_close(t1 - t0, torch.full_like(t0, step))
        mid = 0.5 * (t0 + t1)
        assert (t0 >= t_near[ray_ids] - 1e-6).all() and (mid < t_far[ray_ids]).all()
        pts = origins[ray_ids] + dirs[ray_ids] * mid[:, None]
        assert ((pts >= -1.0) & (pts < 1.0)).all()
        for r in range(origins.shape[0]):
            ts = t0[ray_ids == r]
            span = float(t_far[r] - t_near[r])
            if span <= 0:  # misses the box (rays 4 and 5)
                assert ts.numel() == 0
                continue
            # one sample per step over the whole segment: no gaps, nothing skipped
            torch.testing.assert_close(ts[1:] - ts[:-1], torch.full_like(ts[1:], step), rtol=0, atol=1e-5)
            assert 0.0 <= float(ts[0] - t_near[r]) < step if stratified else float(ts[0]) == float(t_near[r])
            # ... up to the last step whose midpoint is inside the box
            last_mid = float(ts[-1]) + 0.5 * step
            assert last_mid < float(t_far[r]) <= last_mid + step + 1e-5
    assert (ray_ids == 4).sum() == 0 and (ray_ids == 5).sum() == 0
    assert float(t_near[3]) == 0.0  # the ray that starts inside begins at its origin


def test_chunked_marching_equals_unchunked():
    grid = OccupancyGrid(AABB, OccupancyConfig(resolution=8))
    origins, dirs = make_rays()
    full = grid.sample(origins, dirs, 0.05)
    chunked = grid.sample(origins, dirs, 0.05, max_samples=100)  # a few rays per chunk
    for a, b in zip(full, chunked):
        assert torch.equal(a, b)


def test_single_occupied_cell():
    r = 8
    grid = OccupancyGrid(AABB, OccupancyConfig(resolution=r))
    cell = (5, 2, 6)  # x in [0.25, 0.5), y in [-0.5, -0.25), z in [0.5, 0.75)
    grid.binaries.zero_()
    grid.binaries[cell] = True
    lo = AABB[:3] + torch.tensor(cell, dtype=torch.float32) * 2.0 / r
    hi = lo + 2.0 / r
    origins, dirs = make_rays()
    # plus rays through the cell along each axis and one that passes next to it
    centre = 0.5 * (lo + hi)
    extra_o = torch.stack([centre - torch.tensor([3.0, 0, 0]), centre - torch.tensor([0, 3.0, 0]),
                           centre - torch.tensor([0, 0, 3.0]), centre + torch.tensor([-3.0, 0.3, 0])])
    extra_d = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]])
    origins, dirs = torch.cat([origins, extra_o]), torch.cat([dirs, extra_d])
    step = 0.01
    ray_ids, t0, t1 = grid.sample(origins, dirs, step)
    check_sorted(ray_ids, t0)
    mid = 0.5 * (t0 + t1)
    pts = origins[ray_ids] + dirs[ray_ids] * mid[:, None]
    assert ((pts >= lo) & (pts < hi)).all()
    n = origins.shape[0]
    for k in (n - 4, n - 3, n - 2):  # straight through: 0.25 / 0.01 samples
        assert abs(int((ray_ids == k).sum()) - 25) <= 1
    assert int((ray_ids == n - 1).sum()) == 0


def test_occupied_outside_box_is_false():
    grid = OccupancyGrid(AABB, OccupancyConfig(resolution=4))
    pts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-1.0, -1.0, -1.0], [0.0, 1.5, 0.0], [0.0, 0.0, -1.01]])
    assert grid.occupied(pts).tolist() == [True, False, True, False, False]


def _sphere(centre, radius):
    c = torch.tensor(centre)
    return lambda x: ((x - c).norm(dim=-1) < radius).float()


def _cells_by_distance(grid, centre, radius):
    """Masks [r, r, r] of the cells entirely inside / entirely outside the sphere."""
    r = grid.cfg.resolution
    idx = torch.arange(r**3)
    centres = grid._cell_centres(idx, jitter=False).view(r, r, r, 3)
    dist = (centres - torch.tensor(centre)).norm(dim=-1)
    half_diag = float(grid.cell_size.norm()) / 2
    return dist + half_diag < radius, dist - half_diag > radius


def test_update_marks_sphere_cells():
    torch.manual_seed(0)
    cfg = OccupancyConfig(resolution=16, update_every=4, warmup_steps=8, ema_decay=0.95, threshold=0.01)
    grid = OccupancyGrid(AABB, cfg)
    inside, outside = _cells_by_distance(grid, (0.0, 0.0, 0.0), 0.5)
    assert inside.sum() > 50 and outside.sum() > 2000
    occ_fn = _sphere((0.0, 0.0, 0.0), 0.5)

    assert not grid.update(1, occ_fn)  # off-schedule: nothing happens
    assert grid.binaries.all() and int(grid.n_updates) == 0

    assert grid.update(0, occ_fn, chunk=1000)  # warmup: every cell, evaluated in chunks
    assert grid.binaries[inside].all() and not grid.binaries[outside].any()
    assert int(grid.n_updates) == 1

    # after warmup a random quarter of the cells plus occupied ones are refreshed (decayed by ema_decay, then the
    # max with the new reading); the rest keeps its value; far cells stay empty
    assert grid.update(8, occ_fn)
    assert grid.binaries[inside].all() and not grid.binaries[outside].any()

    # new content elsewhere is picked up where the random quarter lands (~22% of the cells per update)
    inside2, _ = _cells_by_distance(grid, (0.6, 0.6, 0.6), 0.3)
    fn2 = lambda x: torch.maximum(occ_fn(x), _sphere((0.6, 0.6, 0.6), 0.3)(x))  # noqa: E731
    assert grid.update(12, fn2)
    first = grid.binaries[inside2].float().mean()
    assert 0.05 < first < 0.5
    for step in range(16, 16 + 4 * 20, 4):
        grid.update(step, fn2)
    assert grid.binaries[inside2].float().mean() > 0.9
    assert grid.binaries[inside].all()


def test_merge_readings_keeps_the_max_of_repeated_readings_and_leaves_unread_cells():
    from kinfield.render.occupancy import merge_readings

    occs = torch.tensor([0.5, 0.5, 0.5, 0.0])
    idx = torch.tensor([0, 0, 1, 3, 3])
    vals = torch.tensor([1.0, 0.0, 0.1, 0.0, 0.2])  # cell 0 read full then empty: the full reading counts
    want = torch.tensor([1.0, 0.45, 0.5, 0.2])
    torch.testing.assert_close(merge_readings(occs, idx, vals, 0.9), want)
    for seed in range(5):  # in any order
        perm = torch.randperm(5, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(merge_readings(occs, idx[perm], vals[perm], 0.9), want)
    torch.testing.assert_close(occs, torch.tensor([0.5, 0.5, 0.5, 0.0]))  # the input is left as it was
    nan = merge_readings(occs, torch.tensor([0, 2]), torch.tensor([float("nan"), 1.0]), 0.9)
    torch.testing.assert_close(nan, torch.tensor([0.45, 0.5, 1.0, 0.0]))  # a NaN reading counts as empty


def test_a_faint_object_moving_through_a_crowded_grid_stays_occupied_along_its_path():
    """Each update reads the scene at one random time, and after warmup only a part of the cells; a cell the moving
    sphere fills at some times must not fade between its readings (it did when every cell decayed at each update:
    about a fifth of the path was marked empty here)."""
    torch.manual_seed(0)
    cfg = OccupancyConfig(resolution=16, update_every=1, warmup_steps=4, ema_decay=0.95, threshold=0.01)
    grid = OccupancyGrid(AABB, cfg)
    slab = lambda x: (x[:, 2] < 0.0).float()  # noqa: E731 - opaque static content in half the box
    start, end, radius = torch.tensor([-0.7, -0.7, 0.5]), torch.tensor([0.7, 0.7, 0.5]), 0.2

    def scene_at_random_time(x):
        t = torch.rand(())
        moving = ((x - (start + t * (end - start))).norm(dim=-1) < radius).float() * 0.05  # faint (density x step)
        return torch.maximum(slab(x), moving)

    r = cfg.resolution
    centres = grid._cell_centres(torch.arange(r**3), jitter=False)
    ts = torch.linspace(0, 1, 50)[:, None, None]
    path = ((centres[None] - (start + ts * (end - start))).norm(dim=-1) < radius - 0.1).any(0)  # cells it fills
    assert path.sum() > 20
    shares = []
    for step in range(600):
        grid.update(step, scene_at_random_time)
        if step >= 300:
            shares.append(float(grid.binaries.reshape(-1)[path].float().mean()))
    assert min(shares) > 0.9 and sum(shares) / len(shares) > 0.95


def test_rays_that_miss_everything_render_the_background():
    from kinfield.fields import FieldConfig
    from kinfield.nn import HashGridConfig
    from kinfield.render import OccupancyConfig, RenderConfig, SceneModel

    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    small = FieldConfig(grid=HashGridConfig(n_levels=2, log2_hashmap_size=10))
    model = SceneModel(aabb, small, small, RenderConfig(step_size=0.1, occupancy=OccupancyConfig(resolution=8)))
    origins = torch.tensor([[0.0, 0.0, 5.0], [3.0, 3.0, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # both point away from the box
    bg = torch.tensor([0.2, 0.4, 0.6])
    out = model.render_rays(origins, dirs, torch.zeros(2), bg)
    assert int(out["n_samples"]) == 0
    torch.testing.assert_close(out["rgb"], bg.expand(2, 3))
