"""Throughput of each CUDA kernel against its PyTorch twin on the same GPU (and tinycudann when installed).

    python bench/gpu_kernels.py [--points 1048576] [--rays 16384] [--json OUT.json]

Times forward and forward+backward with CUDA events (median of repeats after warm-up, inputs rotated
over several random sets so the L2 cache does not flatter), prints a table and the kernel/twin ratio.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import kinfield.ops as ops  # noqa: E402
from kinfield import _external  # noqa: E402
from kinfield.nn.hashgrid import HashGridConfig, level_layout  # noqa: E402
from kinfield.ops import _cuda, _torch  # noqa: E402


def cuda_time(fn, inputs, reps=20, warmup=3):
    """Median milliseconds of ``fn(*inputs[i % len])`` over ``reps`` calls."""
    for i in range(warmup):
        fn(*inputs[i % len(inputs)])
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn(*inputs[i % len(inputs)])
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def fwd_bwd(f):
    def run(*args):
        out = f(*args)
        outs = out if isinstance(out, tuple) else (out,)
        sum(o.sum() for o in outs).backward()
    return run


def hash_rows(n_points, dim):
    cfg = HashGridConfig(n_levels=16, log2_hashmap_size=19, base_resolution=16, per_level_scale=1.38 if dim == 3 else 1.3)
    scales, res, offsets, hashed = (t.cuda() for t in level_layout(dim, cfg))
    params = (torch.rand(int(offsets[-1]) * 2, device="cuda") * 2 - 1).requires_grad_(True)
    sets = [(torch.rand(n_points, dim, device="cuda"), params) for _ in range(4)]
    rows = []
    impls = {"kernel": _cuda.hash_grid_encode, "twin": _torch.hash_grid_encode}
    tcnn = _external.get("tinycudann", "hash grid benchmark")
    if tcnn is not None:
        enc = tcnn.Encoding(dim, cfg.tcnn_config(), dtype=torch.float32)
        impls["tcnn"] = lambda x, p: enc(x)
    for name, f in impls.items():
        g = (lambda x, p, f=f: f(x, p, offsets, res, scales, hashed, 2)) if name != "tcnn" else f
        with torch.no_grad():
            t_f = cuda_time(g, sets)
        t_fb = cuda_time(fwd_bwd(g), sets)
        rows.append({"op": f"hash_grid_encode {dim}D", "impl": name, "n": n_points, "fwd_ms": t_f, "fwd_bwd_ms": t_fb})
    return rows


def composite_rows(n_rays, per_ray=128):
    sets = []
    for _ in range(4):
        counts = torch.randint(per_ray // 2, per_ray * 3 // 2, (n_rays,), device="cuda")
        ray_ids = torch.repeat_interleave(torch.arange(n_rays, device="cuda"), counts)
        m = ray_ids.numel()
        t0 = torch.rand(m, device="cuda").sort()[0]
        sets.append(((torch.rand(m, device="cuda") * 10).requires_grad_(True),
                     (torch.rand(m, device="cuda") * 10).requires_grad_(True), t0, t0 + 0.005, ray_ids, n_rays))
    rows = []
    for name, f in {"kernel": _cuda.composite_blended, "twin": _torch.composite_blended}.items():
        with torch.no_grad():
            t_f = cuda_time(f, sets)
        t_fb = cuda_time(fwd_bwd(f), sets)
        rows.append({"op": "composite_blended", "impl": name, "n": int(sets[0][0].numel()), "fwd_ms": t_f,
                     "fwd_bwd_ms": t_fb})
    return rows


def sampler_rows(n_rays):
    from kinfield.render.occupancy import OccupancyConfig, OccupancyGrid

    rows = []
    grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), OccupancyConfig(resolution=128)).cuda()
    grid.binaries.copy_(torch.rand_like(grid.binaries, dtype=torch.float32) < 0.2)
    sets = []
    for _ in range(4):
        o = torch.randn(n_rays, 3, device="cuda") * 0.3 + torch.tensor([0.0, 0.0, 3.0], device="cuda")
        d = torch.nn.functional.normalize(-o + torch.randn_like(o) * 0.3, dim=-1)
        sets.append((o, d))
    impls = {"torch": grid._sample_torch}
    if _external.get("nerfacc", "sampler benchmark") is not None:
        impls["nerfacc"] = grid._sample_nerfacc
    for name, f in impls.items():
        jit = torch.rand(n_rays, device="cuda")
        t = cuda_time(lambda o, d, f=f: f(o, d, 0.005, jit), sets)
        m = int(f(*sets[0], 0.005, jit)[0].numel())
        rows.append({"op": "occupancy sample", "impl": name, "n": m, "fwd_ms": t, "fwd_bwd_ms": None})  # (no backward)
    return rows


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=1 << 20)
    p.add_argument("--rays", type=int, default=1 << 14)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if not torch.cuda.is_available() or not ops.cuda_available():
        print("needs a CUDA GPU and the built extension (KINFIELD_BUILD_CUDA=1 pip install --no-build-isolation -e .): "
              f"{ops.load_extension()[1]}")
        return 2
    rows = hash_rows(a.points, 3) + hash_rows(a.points, 4) + composite_rows(a.rays) + sampler_rows(a.rays * 4)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"{'op':<20} {'impl':<8} {'n':>9} {'fwd ms':>8} {'fwd+bwd ms':>11} {'twin/this fwd':>13} {'twin/this f+b':>13}")
    base = {r["op"]: r for r in rows if r["impl"] in ("twin", "torch")}
    for r in rows:
        b = base[r["op"]]
        fb = "-" if r["fwd_bwd_ms"] is None else f"{r['fwd_bwd_ms']:.3f}"
        fb_ratio = "-" if r["fwd_bwd_ms"] is None else f"{b['fwd_bwd_ms'] / r['fwd_bwd_ms']:.1f}"
        print(f"{r['op']:<20} {r['impl']:<8} {r['n']:>9} {r['fwd_ms']:>8.3f} {fb:>11} {b['fwd_ms'] / r['fwd_ms']:>13.1f} "
              f"{fb_ratio:>13}")
    if a.json:
        Path(a.json).write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
