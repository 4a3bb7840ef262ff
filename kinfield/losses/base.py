"""Weighted, scheduled loss terms: every objective of the trainer is one named :class:`Term`.

A term has a weight, an optional start/end step and a schedule of its weight over time; the
trainer sums ``weight(step) * value`` over active terms and logs every raw value by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Sequence

import torch


@dataclass
class Schedule:
    """Weight multiplier over training steps.

    kinds: ``constant``; ``linear`` (ramp from 0 at ``start`` to 1 at ``start + ramp``);
    ``step`` (multiply by ``rate`` at each milestone, counted from ``start``: the reference's flow-loss decay
    counts the steps after static pre-training, METHOD 2.10).
    """

    kind: str = "constant"
    ramp: int = 0
    milestones: Sequence[int] = ()
    rate: float = 0.1

    def __call__(self, step: int, start: int) -> float:
        if self.kind == "constant":
            return 1.0
        if self.kind == "linear":
            return 1.0 if self.ramp <= 0 else min(1.0, max(0.0, (step - start) / self.ramp))
        if self.kind == "step":
            return self.rate ** sum(step - start >= m for m in self.milestones)
        raise ValueError(f"unknown schedule kind {self.kind!r} (constant, linear, step)")


@dataclass
class Term:
    """One objective: ``fn(ctx) -> scalar tensor`` weighted by ``weight * schedule``.

    Attributes:
        name: logged as ``loss/<name>``.
        fn: computes the raw value from the step context (a dict the trainer fills).
        weight: base weight; 0 disables the term (it is not even computed).
        start, end: active for ``start <= step < end`` (end < 0: forever).
    """

    name: str
    fn: Callable[[dict], torch.Tensor]
    weight: float = 1.0
    start: int = 0
    end: int = -1
    schedule: Schedule = field(default_factory=Schedule)

    def weight_at(self, step: int) -> float:
        if self.weight == 0.0 or step < self.start or (0 <= self.end <= step):
            return 0.0
        return self.weight * self.schedule(step, self.start)


def total_loss(terms: Sequence[Term], ctx: dict, step: int) -> tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Weighted sum of the active terms and a log dict of their raw values (``loss/<name>``: detached 0-dim
    tensors, left on the device so that a step reads every scalar back at once, see :func:`read_scalars`)."""
    total = None
    logs: Dict[str, torch.Tensor] = {}
    weights = [term.weight_at(step) for term in terms]
    ctx["active_terms"] = {term.name for term, w in zip(terms, weights) if w != 0.0}  # (what terms may share)
    for term, w in zip(terms, weights):
        if w == 0.0:
            continue
        value = term.fn(ctx)
        logs[f"loss/{term.name}"] = value.detach()
        total = w * value if total is None else total + w * value
    if total is None:
        raise RuntimeError("no loss term is active at this step: check the loss weights and start steps")
    return total, logs


def read_scalars(values: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """0-dim tensors to Python floats with one device-to-host copy (one host sync on a GPU, not one per value)."""
    if not values:
        return {}
    device = next(iter(values.values())).device
    flat = torch.stack([v.detach().reshape(()).to(device, torch.float64) for v in values.values()]).cpu().tolist()
    return dict(zip(values, flat))
