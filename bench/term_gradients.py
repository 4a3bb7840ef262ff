"""Which loss term trains which part of the model: the gradient norm of each weighted term per parameter group.

    python bench/term_gradients.py SCENE CONFIG CHECKPOINT [--batches 4] [training options ...]

Rebuilds the trainer of ``SCENE CONFIG [options]`` (as ``tools/train.py`` would), loads ``CHECKPOINT`` (a
``ckpts/ckpt_*.pt`` of such a run) and runs ``--batches`` training steps without updating anything. For every
active term it prints the norm of ``weight * d(term) / d(params)`` per parameter group (the model's submodules,
the dynamic field split into grid, density MLP and colour MLP), averaged over the batches. Adam normalises the
summed gradient, so a term whose gradient is several times the photometric one on a group is what trains that
group. On the demo scene this showed the normal regulariser outweighing the images on the dynamic field's grid
and density MLP (2.5x / 4x at step 1000), bench/RESULTS.md "Motion".
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinfield.config import parse_train_args  # noqa: E402
from kinfield.train import Trainer  # noqa: E402
from kinfield.train.checkpoint import load_checkpoint  # noqa: E402


def parameter_groups(model) -> dict:
    """Name -> parameter list: the radiance fields split into grid / density MLP / colour MLP, then the rest."""
    groups = {}
    for name in ("static", "dynamic"):
        field = getattr(model, name, None)
        if field is not None:
            for part in ("encoding", "density_net", "color_net"):
                groups[f"{name}.{part}"] = list(getattr(field, part).parameters())
    for name in ("kinematic", "normal_net"):
        module = getattr(model, name, None)
        if module is not None:
            groups[name] = list(module.parameters())
    return {k: v for k, v in groups.items() if v}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scene")
    ap.add_argument("config")
    ap.add_argument("checkpoint")
    ap.add_argument("--batches", type=int, default=4)
    args, train_options = ap.parse_known_args()
    state = load_checkpoint(args.checkpoint)  # a missing or foreign file fails here, before the scene loads
    with tempfile.TemporaryDirectory(prefix="term_gradients_") as out:  # the trainer's run folder, never written
        trainer = Trainer(parse_train_args([args.scene, args.config, "--out", out] + train_options))
    trainer.load_state_dict(state)
    groups = parameter_groups(trainer.model)
    norms = defaultdict(float)

    def measured(term):
        fn = term.fn

        def wrapper(ctx):
            value = fn(ctx)
            weighted = term.weight_at(ctx["step"]) * value
            if weighted.requires_grad:
                for group, params in groups.items():
                    grads = torch.autograd.grad(weighted, params, retain_graph=True, allow_unused=True)
                    norms[term.name, group] += float(sum(float(g.square().sum()) for g in grads if g is not None)) ** 0.5
            return value
        return wrapper

    for term in trainer.terms:
        term.fn = measured(term)
    trainer.optimizer.step = lambda *a, **k: None  # measure only: the parameters stay as loaded
    for _ in range(args.batches):
        trainer.train_step()
    names = sorted({name for name, _ in norms})
    print(f"step {trainer.step}, {args.batches} batches: |weight * grad| per parameter group")
    print(f"{'term':16s}" + "".join(f"{g:>20s}" for g in groups))
    for name in names:
        print(f"{name:16s}" + "".join(f"{norms[name, g] / args.batches:20.2e}" for g in groups))
    return 0


if __name__ == "__main__":
    sys.exit(main())
