"""Host-side cost of one training step: the aten ops it dispatches and the host syncs it forces, per phase.

    python bench/step_ops.py SCENE CONFIG [--rays 1024] [--steps 3] [--sites] [--option value ...]

Why: on a GPU the step is launch-bound. An H100 profile of configs/dnerf.yaml at 4096 rays (bench/RESULTS.md "GPU") had
the GPU busy ~17 ms of a ~45 ms step, the rest Python and aten dispatch; every host sync (``.item()``,
``float(t)``, ``nonzero``, indexing with a boolean mask) also drains the launch queue, so the GPU then idles
while the host catches up. Both counts are properties of the code, not of the device, so they are measured
here on the CPU, with each custom op (``kinfield.ops`` registry: hash-grid encoding, blended compositing)
counted as the single launch its CUDA kernel is, forward and backward (``--twins`` counts the PyTorch
twins' ops instead, as the CPU path runs them).

Every loss term is on from step 0 and the physics points are taken wherever the warped samples are
(``--kin_physics_sigma_threshold -1``), so an untrained model walks every branch a trained one does.
Syncs counted: ``_local_scalar_dense`` (``item``/``float``/``int``/``bool`` of a tensor), ``nonzero``,
index / index_put with a boolean mask, ``masked_select``, ``repeat_interleave`` without an output size,
``unique``, ``bincount``/``histc`` (their output size is read back), and ``Tensor.tolist``. Copies between
devices cannot be seen on a CPU-only run, nor the few index ops a kernel's Python wrapper runs around it.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from kinfield.config import parse_train_args  # noqa: E402
from kinfield.ops import _torch as twins  # noqa: E402
from kinfield.ops._registry import REGISTRY  # noqa: E402
from kinfield.train import Trainer  # noqa: E402

ROOT = str(Path(__file__).resolve().parents[1]) + "/"
SYNC_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.repeat_interleave",
            "aten.unique", "aten._unique2", "aten.unique_consecutive", "aten.bincount", "aten.histc"}

# the batcher's importance map lives on the CPU in every run (one byte per training pixel, beside the batch
# generator): its data-dependent reads are counted in this phase but not as host syncs of the step, since they read
# CPU tensors; the one device-to-host copy of the step's values comes after the step's read-back of the logged
# scalars and after the optimizer's launches, so a GPU runs Adam meanwhile (Trainer._update_map)
CPU_PHASE = "importance map (CPU)"

# not tagged as views by aten, but they launch no kernel either
NO_LAUNCH_OPS = {"aten._unsafe_view", "aten.lift_fresh"}


class StepCounter(TorchDispatchMode):
    """Counts dispatched aten ops by name and by the phase set in ``self.phase``; host syncs by call site."""

    def __init__(self, sites: bool = False):
        super().__init__()
        self.ops, self.phases, self.syncs = collections.Counter(), collections.Counter(), collections.Counter()
        self.phase_ops = collections.Counter()  # (phase, op name)
        self.views = collections.Counter()  # by phase: ops that only make a new view of a tensor (no kernel launch)
        self.phase, self.quiet, self.sites = "other", 0, sites
        self.cpu_syncs = collections.Counter()  # by op: reads in the work on CPU-resident tensors (CPU_PHASE)

    def count(self, name: str, sync: bool = False, view: bool = False) -> None:
        self.ops[name] += 1
        self.views[self.phase] += view
        self.phases[self.phase] += 1
        self.phase_ops[(self.phase, name)] += 1
        if sync and self.phase.startswith(CPU_PHASE):
            self.cpu_syncs[name] += 1
        elif sync:
            where = "" if not self.sites else " <- ".join(
                f"{f.filename[len(ROOT):]}:{f.lineno}" for f in reversed(traceback.extract_stack()[:-2])
                if f.filename.startswith(ROOT + "kinfield"))[:160]
            self.syncs[(name, where)] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.quiet:
            name = str(func.overloadpacket)
            sync = name in SYNC_OPS and not (name == "aten.repeat_interleave" and (kwargs or {}).get("output_size"))
            if name in ("aten.index", "aten.index_put", "aten.index_put_") and len(args) > 1:
                sync = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ()))
                name += "[bool]" if sync else ""
            self.count(name, sync, view=func.is_view or name in NO_LAUNCH_OPS)
        return func(*args, **(kwargs or {}))


def as_one_launch(counter: StepCounter, name: str, fn):
    """``fn`` (a twin) seen by ``counter`` as one op forward and one op backward, like its CUDA kernel."""

    class Launch(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            ctx.args = args
            counter.quiet += 1
            try:
                with torch.no_grad():
                    return fn(*args)
            finally:
                counter.quiet -= 1

        @staticmethod
        def backward(ctx, *grads):
            counter.count(f"kernel:{name}_bwd")
            counter.quiet += 1
            try:
                with torch.enable_grad():
                    ins = [a.detach().requires_grad_(ctx.needs_input_grad[i]) if isinstance(a, torch.Tensor) else a
                           for i, a in enumerate(ctx.args)]
                    outs = fn(*ins)
                    outs = outs if isinstance(outs, tuple) else (outs,)
                    wrt = [a for a in ins if isinstance(a, torch.Tensor) and a.requires_grad]
                    pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
                    got = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs],
                                                   allow_unused=True) if pairs and wrt else [None] * len(wrt))
                return tuple(next(got) if isinstance(a, torch.Tensor) and a.requires_grad else None for a in ins)
            finally:
                counter.quiet -= 1

    def launch(*args):
        counter.count(f"kernel:{name}")
        return Launch.apply(*args)

    return launch


def in_phase(counter: StepCounter, phase: str, fn):
    def wrapped(*args, **kwargs):
        before, counter.phase = counter.phase, phase
        try:
            return fn(*args, **kwargs)
        finally:
            counter.phase = before

    return wrapped


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scene")
    p.add_argument("config")
    p.add_argument("--rays", type=int, default=1024, help="fixed rays per step")
    p.add_argument("--steps", type=int, default=3, help="steps counted (after --warmup uncounted ones)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--twins", action="store_true", help="count the PyTorch twins' ops (the CPU path)")
    p.add_argument("--sites", action="store_true", help="print where each host sync comes from")
    p.add_argument("--phase", default=None, help="also list the ops of these phases (comma-separated, e.g. 'render,term cycle')")
    a, rest = p.parse_known_args(argv)
    always_on = ["--kin_start", "0", "--kin_physics_start", "0", "--kin_normal_start", "0",
                 "--kin_unlock_acceleration", "0", "--kin_unlock_jerk", "0", "--kin_physics_sigma_threshold", "-1",
                 "--train_target_samples", "0", "--train_rays", str(a.rays), "--device", "cpu"]
    cfg = parse_train_args([a.scene, a.config, "--resume", "none", "--train_progress", "false", "--out",
                            "/tmp/kinfield_step_ops"] + always_on + rest)
    trainer = Trainer(cfg)
    for _ in range(a.warmup):
        trainer.train_step()
        trainer.step += 1
    counter = StepCounter(a.sites)
    saved = {name: getattr(twins, name) for name in REGISTRY if hasattr(twins, name)}
    if not a.twins:
        for name, fn in saved.items():
            setattr(twins, name, as_one_launch(counter, name, fn))
    model = trainer.model
    model.render_rays = in_phase(counter, "render", model.render_rays)
    for term in trainer.terms:
        term.fn = in_phase(counter, f"term {term.name}", term.fn)
    trainer.optimizer.step = in_phase(counter, "optimizer", trainer.optimizer.step)
    for name in ("update_importance", "_draw_important"):
        setattr(trainer.batcher, name, in_phase(counter, CPU_PHASE, getattr(trainer.batcher, name)))
    backward, tolist = torch.Tensor.backward, torch.Tensor.tolist
    torch.Tensor.backward = in_phase(counter, "backward", backward)

    def counted_tolist(t):
        if not counter.quiet:
            counter.count("Tensor.tolist", sync=True)
        return tolist(t)

    torch.Tensor.tolist = counted_tolist
    try:
        t0 = time.perf_counter()
        with counter:
            for _ in range(a.steps):
                trainer.train_step()
                trainer.step += 1
        seconds = time.perf_counter() - t0
    finally:
        torch.Tensor.backward, torch.Tensor.tolist = backward, tolist
        for name, fn in saved.items():
            setattr(twins, name, fn)
    n = a.steps
    kind = "PyTorch twins" if a.twins else "custom ops as one launch each"
    print(f"# {a.config}, {a.rays} rays, {kind}; mean over {n} steps (counted steps took {seconds / n:.2f} s each)")
    # (the CPU-resident map's ops launch nothing on a GPU either: listed by phase, left out of the totals)
    n_ops = (sum(counter.ops.values()) - counter.phases[CPU_PHASE]) / n
    n_views = (sum(counter.views.values()) - counter.views[CPU_PHASE]) / n
    print(f"aten ops per step: {n_ops:.0f} ({n_views:.0f} of them views, which launch no kernel: "
          f"{n_ops - n_views:.0f} launches; the importance map's CPU work left out)")
    cpu_side = sum(counter.cpu_syncs.values()) / n
    print(f"host syncs per step: {sum(counter.syncs.values()) / n:.1f}"
          + (f" (and {cpu_side:.1f} data-dependent reads on the CPU-resident importance map, not counted: "
             f"{', '.join(sorted(counter.cpu_syncs))})" if cpu_side else ""))
    print("by phase: ops, launches")
    for phase, c in counter.phases.most_common():
        print(f"  {phase:28s} {c / n:8.1f} {(c - counter.views[phase]) / n:8.1f}")
    print("most frequent ops:")
    for name, c in counter.ops.most_common(12):
        print(f"  {name:28s} {c / n:8.1f}")
    for wanted in (a.phase.split(",") if a.phase else []):
        print(f"ops of phase {wanted!r}:")
        for (phase, name), c in counter.phase_ops.most_common():
            if phase == wanted:
                print(f"  {name:28s} {c / n:8.1f}")
    print("host syncs:")
    for (name, where), c in sorted(counter.syncs.items(), key=lambda kv: -kv[1]):
        print(f"  {c / n:5.1f}  {name}" + (f"  {where}" if where else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
