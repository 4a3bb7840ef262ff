"""Per-device constants made once (kinfield._constants)."""
import torch

from kinfield._constants import constant, made_once


def test_a_constant_is_made_once_per_values_dtype_and_device():
    a = constant((1, 2, 3), "cpu")
    assert a is constant((1, 2, 3), "cpu") and a.dtype == torch.int64 and a.tolist() == [1, 2, 3]
    b = constant((1, 2, 3), "cpu", torch.float32)
    assert b is not a and b.dtype == torch.float32
    calls = []
    made_once(("test key", "cpu"), lambda: calls.append(1) or torch.zeros(1))
    made_once(("test key", "cpu"), lambda: calls.append(1) or torch.zeros(1))
    assert calls == [1]


def test_a_constant_first_made_in_inference_mode_still_serves_autograd():
    values = (0.5, -1.5, 0.123456789)  # (values no other caller asks for, so this call makes the tensor)
    with torch.inference_mode():
        c = constant(values, "cpu", torch.float64)
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    (x * constant(values, "cpu", torch.float64)).sum().backward()  # mul saves the constant for backward
    assert x.grad.tolist() == list(values) and not c.is_inference()
