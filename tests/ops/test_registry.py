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
