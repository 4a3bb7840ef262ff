"""Loss terms: weights, start/end steps and schedules."""
import pytest
import torch

from kinfield.losses import Schedule, Term, total_loss


def test_schedules():
    assert Schedule()(123, 0) == 1.0
    ramp = Schedule("linear", ramp=100)
    assert ramp(50, 50) == 0.0 and ramp(100, 50) == 0.5 and ramp(1000, 50) == 1.0
    decay = Schedule("step", milestones=(10, 20), rate=0.1)
    assert decay(5, 0) == 1.0 and decay(10, 0) == pytest.approx(0.1) and decay(25, 0) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        Schedule("cosine")(0, 0)


def test_term_window_and_total():
    calls = []

    def value(name, v):
        def fn(ctx):
            calls.append(name)
            return torch.tensor(v)
        return fn

    terms = [Term("a", value("a", 2.0), 1.0), Term("b", value("b", 3.0), 0.5, start=10, end=20),
             Term("off", value("off", 9.0), 0.0)]
    total, logs = total_loss(terms, {}, 5)
    assert float(total) == 2.0 and set(logs) == {"loss/a"}
    total, logs = total_loss(terms, {}, 15)
    assert float(total) == 3.5 and logs["loss/b"] == 3.0
    assert set(total_loss(terms, {}, 19)[1]) == {"loss/a", "loss/b"}  # start <= step < end
    assert set(total_loss(terms, {}, 20)[1]) == {"loss/a"}
    assert set(total_loss(terms, {}, 10)[1]) == {"loss/a", "loss/b"}
    assert "off" not in calls  # a zero-weight term is never computed
    with pytest.raises(RuntimeError, match="no loss term"):
        total_loss([Term("b", value("b", 1.0), 1.0, start=10)], {}, 0)


def test_photometric_losses_are_their_formulas():
    """mse 0.5^2; huber (delta 0.1) at an error of 0.3: 0.1 (0.3 - 0.05) = 0.025; charbonnier of no error: its eps."""
    from kinfield.losses.photometric import charbonnier, rgb_loss

    pred = torch.full((2, 3), 0.5)
    assert float(rgb_loss(pred, torch.zeros(2, 3), "mse")) == pytest.approx(0.25, abs=1e-7)
    assert float(rgb_loss(torch.full((2, 3), 0.3), torch.zeros(2, 3), "huber")) == pytest.approx(0.025, abs=1e-7)
    assert float(rgb_loss(torch.full((2, 3), 0.05), torch.zeros(2, 3), "huber")) == pytest.approx(0.00125, abs=1e-8)
    assert float(charbonnier(torch.zeros(1), torch.zeros(1))) == pytest.approx(1e-4, abs=1e-10)
    assert float(charbonnier(torch.ones(1), torch.zeros(1))) == pytest.approx(1.0, abs=1e-7)
