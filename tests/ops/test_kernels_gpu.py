"""CUDA kernels against their PyTorch twins on a GPU: forward values and vector-Jacobian products with
random cotangents, on the registry's inputs and at realistic sizes. Skipped, with the reason, without a
GPU or without the built extension."""
import pytest
import torch

import kinfield.ops as ops
from kinfield.nn.hashgrid import HashGrid, HashGridConfig, level_layout
from kinfield.ops import _torch
from kinfield.ops._registry import REGISTRY

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _need_kernels():
    if not ops.cuda_available():
        pytest.skip("kinfield._C is not built (KINFIELD_BUILD_CUDA=1 pip install --no-build-isolation -e . builds it)")


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)


def _fwd_vjp(fn, args, diff, cotangent_seed):
    """Outputs and the gradients of ``sum(out * random cotangent)`` w.r.t. the differentiable inputs."""
    args = list(args)
    for i in diff:
        args[i] = args[i].detach().clone().requires_grad_(True)
    outs = _as_tuple(fn(*args))
    g = torch.Generator(device=outs[0].device).manual_seed(cotangent_seed)
    loss = sum((o * torch.randn(o.shape, generator=g, device=o.device, dtype=o.dtype)).sum() for o in outs)
    grads = torch.autograd.grad(loss, [args[i] for i in diff], allow_unused=True)
    return [o.detach() for o in outs], grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_kernel_forward_and_vjp_match_twin(name, dtype):  # pragma: no cover - GPU only
    _need_kernels()
    entry = REGISTRY[name]
    assert entry.cuda is not None, f"{name} has no kernel"
    for seed in range(3):  # fresh random inputs each time
        args, kw = entry.make_inputs("cuda", dtype, seed)
        got, g_got = _fwd_vjp(lambda *a: entry.cuda(*a, **kw), args, entry.differentiable, seed)
        want, g_want = _fwd_vjp(lambda *a: entry.twin(*a, **kw), args, entry.differentiable, seed)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **entry.fwd_tol)
        for a, b in zip(g_got, g_want):
            assert a is not None and b is not None
            torch.testing.assert_close(a, b, **entry.bwd_tol)


@pytest.mark.parametrize("dim", [3, 4])
def test_hash_kernel_matches_twin_at_full_size(dim):  # pragma: no cover - GPU only
    """The default 16-level config (hashed fine levels, 2^19 entries), 200k points, random parameters."""
    _need_kernels()
    cfg = HashGridConfig(n_levels=16, log2_hashmap_size=19)
    scales, res, offsets, hashed = (t.cuda() for t in level_layout(dim, cfg))
    assert bool(hashed.any()) and not bool(hashed.all())
    g = torch.Generator(device="cuda").manual_seed(dim)
    params = torch.rand(int(offsets[-1]) * 2, device="cuda", generator=g) * 2 - 1
    x = torch.rand(200_000, dim, device="cuda", generator=g)
    x[:64] = torch.tensor([0.0, 1.0], device="cuda")[torch.randint(0, 2, (64, dim), device="cuda", generator=g)]
    args = (x, params, offsets, res, scales, hashed, 2)
    got, g_got = _fwd_vjp(ops._cuda.hash_grid_encode, args, (0, 1), 7)
    want, g_want = _fwd_vjp(_torch.hash_grid_encode_gather, args, (0, 1), 7)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    # parameter gradients are sums of many atomics (order differs from index_add_)
    torch.testing.assert_close(g_got[1], g_want[1], rtol=1e-4, atol=1e-4)
    # position gradients: sums over levels of terms up to ~scale (1e3) that cancel, so float32 summation order
    # shows at ~1e-6 of the largest gradient; skip the corner points (x = 0 or 1 sit on vertices, where the
    # derivative jumps)
    scale = float(g_want[0].abs().max())
    torch.testing.assert_close(g_got[0][64:], g_want[0][64:], rtol=1e-4, atol=1e-5 * scale)


def test_hashgrid_module_on_cuda_runs_the_kernel_without_tcnn(monkeypatch):  # pragma: no cover - GPU only
    _need_kernels()
    from kinfield import _external

    if _external.get("tinycudann", "hash grid") is not None:
        pytest.skip("tinycudann is installed: HashGrid(auto) uses it (test_tcnn_hash_grid_matches_the_twin)")
    enc = HashGrid(4, HashGridConfig(n_levels=8, log2_hashmap_size=15)).cuda()
    x = torch.rand(4096, 4, device="cuda")
    with ops.use_backend("torch"):
        want = enc(x)
    entry, calls = REGISTRY["hash_grid_encode"], []
    kernel = entry.cuda
    monkeypatch.setattr(entry, "cuda", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    got = enc(x)
    assert calls, "HashGrid on CUDA tensors did not dispatch to the kernel"
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_tcnn_hash_grid_matches_the_twin():  # pragma: no cover - GPU with tinycudann only
    """tinycudann's HashGrid against the PyTorch twin with the same (copied) table: features, and the gradients of
    random cotangents w.r.t. the table and the positions."""
    from kinfield import _external

    if _external.get("tinycudann", "hash grid") is None:
        pytest.skip(f"tinycudann is not usable here: {_external.reason('tinycudann')}")
    for dim in (3, 4):
        grid = HashGrid(dim, HashGridConfig(n_levels=12, log2_hashmap_size=17)).cuda()
        with torch.no_grad():
            grid.params.uniform_(-1.0, 1.0)
        g = torch.Generator(device="cuda").manual_seed(dim)
        x = (torch.rand(50_000, dim, device="cuda", generator=g) * 0.9 + 0.05).requires_grad_(True)
        cot = torch.randn(50_000, grid.n_output_dims, device="cuda", generator=g)
        got = grid(x)
        g_got = torch.autograd.grad((got * cot).sum(), [grid.params, x])
        with ops.use_backend("torch"):
            twin = HashGrid(dim, grid.cfg, backend="torch").cuda()
            twin.load_state_dict(grid.state_dict())
            want = twin(x)
            g_want = torch.autograd.grad((want * cot).sum(), [twin.params, x])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(g_got[0], g_want[0], rtol=1e-3, atol=1e-3)
        scale = float(g_want[1].abs().max())
        torch.testing.assert_close(g_got[1], g_want[1], rtol=1e-3, atol=1e-4 * scale)


def test_composite_kernel_matches_twin_on_long_rays():  # pragma: no cover - GPU only
    """Thousands of rays with up to 1024 samples each (transmittance underflows on the long ones)."""
    _need_kernels()
    g = torch.Generator(device="cuda").manual_seed(3)
    counts = torch.randint(0, 1024, (4000,), device="cuda", generator=g)
    n_rays = counts.numel()
    ray_ids = torch.repeat_interleave(torch.arange(n_rays, device="cuda"), counts)
    m = ray_ids.numel()
    t_starts = torch.rand(m, device="cuda", generator=g).sort()[0]  # sorted within every ray too
    t_ends = t_starts + 0.004
    sig_s = torch.rand(m, device="cuda", generator=g) * 20
    sig_d = torch.rand(m, device="cuda", generator=g) * 20
    args = (sig_s, sig_d, t_starts, t_ends, ray_ids, n_rays)
    got, g_got = _fwd_vjp(ops._cuda.composite_blended, args, (0, 1, 2, 3), 1)
    want, g_want = _fwd_vjp(_torch.composite_blended, args, (0, 1, 2, 3), 1)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_renderer_on_cuda_equals_the_torch_path():  # pragma: no cover - GPU only
    """A whole ray batch through the scene model: the custom kernels vs their twins (the occupancy marching, nerfacc
    when installed, is the same on both sides; tests/render/test_nerfacc_sampler.py compares it with its twin)."""
    _need_kernels()
    from kinfield.fields import FieldConfig
    from kinfield.render.renderer import RenderConfig, SceneModel

    torch.manual_seed(0)
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    model = SceneModel(aabb, FieldConfig(), FieldConfig(), RenderConfig(step_size=0.02)).cuda()
    for p in model.parameters():  # non-trivial densities and colours
        p.data.uniform_(-0.5, 0.5)
    origins = torch.randn(512, 3, device="cuda") * 0.2 + torch.tensor([0.0, 0.0, 3.0], device="cuda")
    dirs = torch.nn.functional.normalize(-origins + torch.randn_like(origins) * 0.3, dim=-1)
    times = torch.rand(512, device="cuda")
    bg = torch.ones(3, device="cuda")
    got = model.render_rays(origins, dirs, times, bg)
    with ops.use_backend("torch"):
        want = model.render_rays(origins, dirs, times, bg)
    assert int(got["n_samples"]) > 10_000
    for k in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-4)
    # whole images on the GPU (rays made on the model's device), chunked
    c2w = torch.eye(4)
    c2w[2, 3] = 3.0
    img = model.render_image(c2w, torch.tensor([40.0, 40.0, 16.0, 16.0]), 32, 32, 0.5, bg, chunk=300)
    assert img["rgb"].shape == (32, 32, 3) and img["rgb"].is_cuda and torch.isfinite(img["rgb"]).all()
