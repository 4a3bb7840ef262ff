"""Op registry, dispatch rules, twin gradients, and import laziness."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kinfield.ops as ops
from kinfield.ops._registry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]


def test_every_public_op_has_a_registry_entry_and_a_same_named_twin():
    from kinfield.ops import _torch

    for name in ("hash_grid_encode", "composite_blended"):
        assert name in REGISTRY
        assert REGISTRY[name].twin is getattr(_torch, name)
        assert callable(getattr(ops, name))


class _ClaimsCuda(torch.Tensor):
    """A CPU tensor that says it is on CUDA (dispatch decisions only look at ``is_cuda``)."""

    @property
    def is_cuda(self):
        return True


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_ops_run_the_kernel_only_when_every_tensor_argument_is_on_cuda(name, monkeypatch):
    """With the extension "available", an op dispatches to its kernel when its data tensors are on CUDA, and to the
    twin as soon as one of them (the ray ids of the compositing too) is not. (The hash grid's small layout tensors
    may stay anywhere: its kernel wrapper moves them to the points' device.)"""
    import kinfield.ops._backend as backend

    entry = REGISTRY[name]
    monkeypatch.setattr(ops, "cuda_available", lambda: True)
    monkeypatch.setattr(backend, "cuda_available", lambda: True)
    monkeypatch.setattr(REGISTRY[entry.name], "cuda", lambda *a, **k: "kernel")
    args, kw = entry.make_inputs("cpu", torch.float32, 0)
    tensors = {"hash_grid_encode": (0, 1), "composite_blended": (0, 1, 2, 3, 4)}[entry.name]
    on_cuda = [a.as_subclass(_ClaimsCuda) if isinstance(a, torch.Tensor) else a for a in args]
    assert getattr(ops, entry.name)(*on_cuda, **kw) == "kernel"
    for i in tensors:  # one tensor left on the CPU: the twin runs
        mixed = list(on_cuda)
        mixed[i] = args[i]
        assert getattr(ops, entry.name)(*mixed, **kw) != "kernel", f"argument {i} on the CPU still ran the kernel"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_public_op_on_cpu_runs_the_twin(name):
    entry = REGISTRY[name]
    args, kw = entry.make_inputs("cpu", torch.float32, 0)
    got = getattr(ops, entry.name)(*args, **kw)
    want = entry.twin(*args, **kw)
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(a, b, **entry.fwd_tol)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_twin_gradcheck_float64(name):
    entry = REGISTRY[name]
    args, kw = entry.make_inputs("cpu", torch.float64, 1)
    args = list(args)
    for i in entry.differentiable:
        args[i] = args[i].clone().requires_grad_(True)

    def f(*diff):
        a = list(args)
        for i, v in zip(entry.differentiable, diff):
            a[i] = v
        out = entry.twin(*a, **kw)
        return out if isinstance(out, tuple) else (out,)

    assert torch.autograd.gradcheck(f, tuple(args[i] for i in entry.differentiable), eps=1e-6, atol=1e-5)


def test_forcing_the_kernel_on_cpu_raises_a_clear_error():
    args, _ = REGISTRY["composite_blended"].make_inputs("cpu", torch.float32, 0)
    with pytest.raises(RuntimeError, match="CUDA device"):
        ops.composite_blended(*args, backend="cuda")
    assert ops.choose_backend("hash_grid_encode", (torch.zeros(1),), "auto") == "torch"
    with pytest.raises(ValueError):
        ops.choose_backend("hash_grid_encode", (torch.zeros(1),), "gpu")


def test_use_backend_changes_what_auto_means():
    x = torch.zeros(1)
    with ops.use_backend("torch"):
        assert ops.choose_backend("hash_grid_encode", (x,)) == "torch"
    with ops.use_backend("cuda"), pytest.raises(RuntimeError, match="CUDA device"):
        ops.choose_backend("hash_grid_encode", (x,))
    assert ops.choose_backend("hash_grid_encode", (x,)) == "torch"  # restored
    with pytest.raises(ValueError):
        with ops.use_backend("gpu"):
            pass


def test_import_kinfield_loads_no_accelerator_and_no_extension():
    code = ("import sys, kinfield, kinfield.train, kinfield.render, kinfield.motion; "
            "bad = [m for m in ('tinycudann', 'nerfacc', 'kinfield._C') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_op_without_a_kernel_runs_its_twin_under_auto_and_refuses_cuda(monkeypatch):
    """An op whose registry entry has no CUDA function (``cuda=None``) resolves to the twin under ``"auto"`` even with
    every tensor on CUDA and the extension loaded, and ``backend="cuda"`` says no kernel exists."""
    import kinfield.ops._backend as backend

    monkeypatch.setattr(ops, "cuda_available", lambda: True)
    monkeypatch.setattr(backend, "cuda_available", lambda: True)
    monkeypatch.setattr(REGISTRY["composite_blended"], "cuda", None)
    x = torch.zeros(2).as_subclass(_ClaimsCuda)
    assert ops.choose_backend("composite_blended", (x, x)) == "torch"
    with pytest.raises(RuntimeError, match="no CUDA kernel exists for this op"):
        ops.choose_backend("composite_blended", (x, x), "cuda")
    assert ops.choose_backend("hash_grid_encode", (x, x)) == "cuda"  # (an op with a kernel, same conditions)


def test_the_extension_is_jit_built_only_when_asked(monkeypatch):
    """Without a prebuilt ``kinfield._C``, ``load_extension`` gives ``(None, how to build it)`` and builds nothing
    unless ``KINFIELD_JIT=1``; then the JIT build's outcome is the answer. ``cuda_available`` needs both a GPU and the
    extension."""
    import kinfield.ops._backend as backend

    import kinfield

    monkeypatch.setitem(sys.modules, "kinfield._C", None)  # import kinfield._C -> ImportError (also where it is built)
    monkeypatch.delattr(kinfield, "_C", raising=False)
    built = []
    monkeypatch.setattr(backend, "_jit_build", lambda: built.append(1) or ("jit module", "JIT-built from cuda/"))
    monkeypatch.setattr(backend, "_STATE", None)
    monkeypatch.delenv("KINFIELD_JIT", raising=False)
    ext, why = backend.load_extension()
    assert ext is None and "KINFIELD_BUILD_CUDA=1" in why and built == []
    assert backend.load_extension() == (ext, why)  # cached
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert backend.cuda_available() is False  # a GPU, no extension
    monkeypatch.setattr(backend, "_STATE", None)
    monkeypatch.setenv("KINFIELD_JIT", "1")
    assert backend.load_extension() == ("jit module", "JIT-built from cuda/") and built == [1]
    assert backend.cuda_available() is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert backend.cuda_available() is False  # the extension, no GPU
