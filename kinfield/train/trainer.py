"""The training loop: data, model, optimiser, loss terms, logging, checkpoints, final evaluation."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import signal
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from .._io import metrics_rows, set_aside
from ..config import Config, DataConfig, save_config, to_flat_dict
from ..data import RayBatcher, Scene, load_scene
from ..fields import KinematicField
from ..losses import Term, psnr_from_mse, read_scalars, rgb_loss, total_loss
from ..losses.kinematic import KinematicObjective
from ..losses.priors import (PriorObjective, distortion_loss, dynamic_entropy_loss, dynamic_sparsity_loss,
                             prior_summary)
from ..nn import MLP
from ..render import SceneModel
from ..render.composite import dynamic_probability
from .checkpoint import (CheckpointError, checkpoint_step, ckpt_dir, latest_checkpoint, list_checkpoints,
                         load_checkpoint, model_mismatch, run_lock, save_checkpoint, scene_mismatch, scene_signature,
                         signature_mismatch)
from .evaluate import SCORE_KEYS, evaluate_split, quick_scores, read_metrics
from .logger import EMA, MetricsLogger, progress_bar

log = logging.getLogger("kinfield")


class DeviceUnavailable(ValueError):
    """The requested device is not on this machine (the tools print it as a bad-input error, exit code 2)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"--device {name}: no CUDA device is available here (torch {torch.__version__}, "
                                f"CUDA build: {torch.version.cuda or 'no'}); use --device cpu (or auto)")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def load_configured_scene(data: DataConfig, path: Optional[str] = None, downscale: Optional[float] = None,
                          splits: Optional[tuple] = None) -> Scene:
    """The scene a data config names (``path`` / ``downscale`` override it). ``.npz`` scenes carry their own
    black background and all their splits; D-NeRF folders are composited on the configured background and
    only ``splits`` (default: all) are decoded."""
    path = path or data.scene
    downscale = data.downscale if downscale is None else downscale
    if str(path).lower().endswith(".npz"):
        return load_scene(path, downscale=downscale, background=None)
    kw = {"splits": tuple(splits)} if splits else {}
    return load_scene(path, downscale=downscale, background=tuple(data.background), **kw)


def build_model(cfg: Config, scene_aabb: torch.Tensor, frame_dt: float, ndc=None) -> SceneModel:
    """The scene model of ``cfg``; with the kinematic part on, its kinematic field and normal regressor.
    ``ndc = (focal, width, height, near)`` renders in NDC (forward-facing scenes; ``scene_aabb`` in NDC)."""
    model = SceneModel(scene_aabb, cfg.static, cfg.dynamic, cfg.render, use_static=cfg.model.use_static, ndc=ndc)
    if cfg.kin.enabled:
        model.kinematic = KinematicField(scene_aabb, frame_dt, cfg.kinematic)
        if cfg.kin.normal_weight > 0:
            model.normal_net = MLP(cfg.dynamic.geo_features, 3, 32, 1)
    if cfg.kin.keyframe_frames > 0:
        if cfg.kin.enabled:
            model.set_keyframe_advection(cfg.kin.keyframe_frames * frame_dt, sample=cfg.kin.keyframe_sample)
        else:  # --kin_enabled false is the one switch for ablations: the plain dynamic field then
            log.info("keyframe advection (--kin_keyframe_frames %g) is off: it needs the kinematic field",
                     cfg.kin.keyframe_frames)
    return model


class NonFiniteLoss(RuntimeError):
    """The loss was not finite for 10 steps in a row; the message names the terms and the options to lower."""


def _weight_option(cfg: Config, term: str) -> str:
    """The option of loss term ``term``'s weight (``kin_<term>_weight``, ``prior_<term>_weight``; ``warp_photo``:
    ``kin_photo_weight``), or ``""`` (``rgb``)."""
    flat = to_flat_dict(cfg)
    names = (f"kin_{term}_weight", f"prior_{term}_weight", f"kin_{term.removeprefix('warp_')}_weight")
    return next((key for key in names if key in flat), "")


# options a resume is expected to change: where and how long it runs, what it logs and scores, and the learning
# rates and weight decay (taken from the options on resume); the scene is compared on its own
RESUME_FREE_OPTIONS = ("scene", "out", "resume", "iters", "device", "train_max_minutes", "train_log_every",
                       "train_save_every", "train_keep_ckpts", "train_progress", "train_lr_grid", "train_lr_net",
                       "train_weight_decay_net")


def changed_options(saved: Dict, now: Dict, limit: int = 8) -> str:
    """``"key old -> new, ..."`` for the options (flat dicts, :func:`~kinfield.config.to_flat_dict`) that differ between
    a checkpoint's config and this run's, other than :data:`RESUME_FREE_OPTIONS` and the validation / evaluation
    ones; ``""`` when none does (or the checkpoint recorded none)."""
    keys = [k for k in now if k in saved and k not in RESUME_FREE_OPTIONS
            and not k.startswith(("train_val_", "train_eval_")) and saved[k] != now[k]]
    text = ", ".join(f"{k} {saved[k]!r} -> {now[k]!r}" for k in keys[:limit])
    return text + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


SCENE_MARKERS = ("transforms_train.json", "poses_bounds.npy")  # files that make a folder a scene, not a run


def _duration(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps it above 1: '3.2 days', '14.5 hours', '12 minutes'."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


def looks_like_scene(folder) -> bool:
    """Whether ``folder`` holds a scene's files (:data:`SCENE_MARKERS`), not a run's."""
    return any((Path(folder) / name).exists() for name in SCENE_MARKERS)


def check_options(cfg: Config) -> None:
    """Refuse, naming the option, the values a training cannot mean (before the scene is read): sizes and step counts
    below their minimum, a negative loss weight (it would maximise its term) or gradient / time scale, a negative
    learning rate or factor (it climbs the loss; 0 freezes those parameters), a ``--train_lr_final_ratio`` not > 0
    (a negative one made the rates complex), fractions outside [0, 1]. Raises ValueError."""
    t, r = cfg.train, cfg.render
    for option, unit in (("log_every", "steps"), ("save_every", "steps"), ("rays", "rays"), ("min_rays", "rays"),
                         ("max_rays", "rays")):
        if getattr(t, option) < 1:
            raise ValueError(f"--train_{option} must be >= 1 ({unit}), got {getattr(t, option)}")
    if t.min_rays > t.max_rays:
        raise ValueError(f"--train_min_rays {t.min_rays} is above --train_max_rays {t.max_rays}: give min <= max")
    if t.iters < 0:
        raise ValueError(f"--iters must be >= 0 (steps), got {t.iters}")
    if t.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {t.seed}")
    for option, value in (("step_size", r.step_size), ("chunk", r.chunk),
                          ("occupancy_resolution", r.occupancy.resolution)):
        if not value > 0:  # (NaN too)
            raise ValueError(f"--render_{option} must be > 0, got {value}")
    for field_name in ("static", "dynamic"):
        if getattr(cfg, field_name).grid.n_levels < 1:
            raise ValueError(f"--{field_name}_grid_n_levels must be >= 1, got {getattr(cfg, field_name).grid.n_levels}")
    for key, value in to_flat_dict(cfg).items():
        if key.endswith("_weight") and not value >= 0:
            raise ValueError(f"--{key} must be >= 0 (0 turns the term off; a negative weight maximises it), got {value}")
        if key.endswith("_scale") and not value >= 0:  # (gradient, time and motion scales; per-level scales below)
            raise ValueError(f"--{key} must be >= 0, got {value}")
        if key.endswith("per_level_scale") and not value >= 1:
            raise ValueError(f"--{key} must be >= 1 (each level at least as fine as the last), got {value}")
    for option in ("lr_grid", "lr_net", "lr_static_factor", "lr_kinematic_factor"):  # (0 freezes those parameters)
        if not getattr(t, option) >= 0:
            raise ValueError(f"--train_{option} must be >= 0 (0 freezes those parameters), got {getattr(t, option)}")
    if not t.lr_final_ratio > 0:
        raise ValueError(f"--train_lr_final_ratio must be > 0 (the rates decay to this fraction), got {t.lr_final_ratio}")
    if not t.weight_decay_net >= 0:
        raise ValueError(f"--train_weight_decay_net must be >= 0, got {t.weight_decay_net}")
    for option in ("dynamic_ray_fraction", "dynamic_ray_prior"):
        if not 0.0 <= getattr(t, option) <= 1.0:
            raise ValueError(f"--train_{option} must be in [0, 1], got {getattr(t, option)}")
    if t.dynamic_ray_map not in ("probability", "motion"):
        raise ValueError(f"--train_dynamic_ray_map must be probability or motion, got {t.dynamic_ray_map!r}")
    if t.motion_map_cells <= 0:
        raise ValueError(f"--train_motion_map_cells must be > 0, got {t.motion_map_cells}")
    out = Path(t.out)
    if looks_like_scene(out) or (cfg.data.scene and out.resolve() == Path(cfg.data.scene).resolve()):
        raise ValueError(f"--out {t.out} is a scene folder: the run's checkpoints, logs and renders would be written "
                         f"into the dataset; pass another folder (e.g. runs/NAME)")
    if cfg.static.time_scale != type(cfg.static)().time_scale:
        raise ValueError(f"--static_time_scale {cfg.static.time_scale}: the static field has no time axis, so the "
                         f"option does nothing there; leave it out (--dynamic_time_scale scales the dynamic field's)")
    if cfg.kin.enabled and cfg.kinematic.order not in (1, 2, 3):
        raise ValueError(f"--kinematic_order must be 1, 2 or 3 (velocity, + acceleration, + jerk), got "
                         f"{cfg.kinematic.order}")


class Trainer:
    """Trains a :class:`SceneModel` on a scene.

    Objectives are :class:`~kinfield.losses.Term` objects in ``self.terms`` (photometric loss here;
    the kinematic regularisers add theirs); each is computed from a per-step context dict holding
    ``batch``, ``render`` (the reference render, with its packed ``samples``), ``model``, ``step``.
    """

    def __init__(self, cfg: Config, scene: Optional[Scene] = None):
        check_options(cfg)
        self.cfg = cfg
        self.run_dir = Path(cfg.train.out)
        self.device = resolve_device(cfg.train.device)
        self.gen = seed_everything(cfg.train.seed)
        self.scene = scene if scene is not None else load_configured_scene(cfg.data)
        log.info("%s", self.scene.describe())
        self.train_split = self.scene.split("train")
        self.background = self.scene.background.to(torch.float32).to(self.device)  # what the images sit on
        self.model = build_model(cfg, self.scene.aabb, self.scene.frame_dt, self.scene.ndc).to(self.device)
        self._check_scene_fits()
        self.scene_signature = scene_signature(self.train_split)  # (checkpoints carry it)
        self.batcher = RayBatcher(self.train_split, self.device, self.gen)
        if cfg.train.dynamic_ray_fraction > 0:
            self.batcher.enable_importance(cfg.train.dynamic_ray_prior)
        self.optimizer = self._make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.priors = PriorObjective(cfg.prior, self.model, self.train_split, self.scene.frame_dt,
                                     cfg.kin.dyn_weight_threshold) if self.train_split.extras else None
        pretrain = self.priors.pretrain_steps if self.priors is not None else 0
        self.terms: List[Term] = [Term("rgb", lambda ctx: rgb_loss(ctx["render"]["rgb"], ctx["target"], cfg.train.loss),
                                       start=pretrain)]
        pc = cfg.prior
        self.terms.append(Term("dynamic_sparsity", lambda ctx: dynamic_sparsity_loss(ctx["render"]["samples"]),
                               pc.dynamic_sparsity_weight, max(pretrain, pc.dynamic_sparsity_start)))
        self.terms.append(Term("distortion", lambda ctx: distortion_loss(ctx["render"]["samples"], self.model.space.is_ndc,
                                                                         self.model.extent),
                               pc.distortion_weight, max(pretrain, pc.distortion_start)))
        self.terms.append(Term("entropy", lambda ctx: dynamic_entropy_loss(ctx["render"]["samples"], pc.entropy_skew),
                               pc.entropy_weight if self.model.static is not None else 0.0,
                               max(pretrain, pc.entropy_start)))
        self.kinematic = None
        if self.model.kinematic is not None:
            self.kinematic = KinematicObjective(cfg.kin, self.model, self.scene.frame_dt)
            self.terms += [dataclasses.replace(t, start=max(t.start, pretrain)) for t in self.kinematic.terms()]
        if self.priors is not None:
            log.info("priors of %s: %s", self.scene.root, ", ".join(k for k, v in prior_summary(self.train_split).items() if v))
            self.terms += self.priors.terms()
        self.step = 0
        t = cfg.train  # (the adapted count stays within [min_rays, max_rays] from the first step on)
        self.n_rays = min(t.max_rays, max(t.min_rays, t.rays)) if t.target_samples > 0 else t.rays
        if self.n_rays != t.rays:
            log.info("--train_rays %d is outside [--train_min_rays %d, --train_max_rays %d]: %d rays at the start",
                     t.rays, t.min_rays, t.max_rays, self.n_rays)
        self.n_bad_steps = 0
        self._steps_without_physics, self._warned_physics = 0, False  # (_note_missing_physics)
        self._pace_from = 0.0  # (_note_long_run)

    # ----------------------------------------------------------------------------------- setup
    def _check_scene_fits(self) -> None:
        """What the options and the scene give together: a marching step too long for the scene's box is an error
        (no sample would be taken); images shrunk to a few pixels, or training frames all at one time (nothing for
        the kinematic field to learn) are warned about."""
        cfg, split = self.cfg, self.train_split
        box = self.model.aabb.cpu()
        shortest = float((box[3:] - box[:3]).min())  # (NDC: rays cross the depth range, 2 units)
        if cfg.render.step_size > 0.5 * shortest:
            raise ValueError(f"--render_step_size {cfg.render.step_size} leaves fewer than 2 samples on a ray across "
                             f"the scene's box (shortest side {shortest:g}{' in NDC' if self.scene.ndc else ''}): give "
                             f"a step well below {0.5 * shortest:g} (the shipped configs: 0.005 to 0.05)")
        if min(split.height, split.width) < 16:
            log.warning("the training images are %dx%d pixels (--downscale %g): too few to learn a scene from; give a "
                        "smaller --downscale", split.width, split.height, cfg.data.downscale)
        if self.model.kinematic is not None and split.times.unique().numel() < 2:
            log.warning("all %d training frames are at time %g: there is no motion for the kinematic field to learn "
                        "(a dynamic scene needs frames at two times or more)", split.num_frames,
                        float(split.times[0]))

    def _make_optimizer(self) -> torch.optim.Optimizer:
        # No weight decay on the kinematic head: its gradients are weak, and Adam's coupled L2 term alone
        # shrank its weights 270x on the demo scene (the field then output one constant velocity).
        grids, nets, kin_grids, kin_nets, static_grids, static_nets = [], [], [], [], [], []
        for name, p in self.model.named_parameters():
            is_grid = name.endswith("encoding.params")
            if name.startswith("static."):
                (static_grids if is_grid else static_nets).append(p)
            elif name.startswith("kinematic."):
                (kin_grids if is_grid else kin_nets).append(p)
            else:
                (grids if is_grid else nets).append(p)
        t = self.cfg.train
        f, fk = t.lr_static_factor, t.lr_kinematic_factor
        groups = [{"name": "dynamic grid", "params": grids, "lr": t.lr_grid, "weight_decay": 0.0},
                  {"name": "dynamic nets", "params": nets, "lr": t.lr_net, "weight_decay": t.weight_decay_net},
                  {"name": "kinematic nets", "params": kin_nets, "lr": t.lr_net * fk, "weight_decay": 0.0},
                  {"name": "static grid", "params": static_grids, "lr": t.lr_grid * f, "weight_decay": 0.0},
                  {"name": "static nets", "params": static_nets, "lr": t.lr_net * f, "weight_decay": t.weight_decay_net},
                  {"name": "kinematic grid", "params": kin_grids, "lr": t.lr_grid * fk, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        try:  # the fused kernel is ~6x faster than the default on CPU for multi-million-entry tables
            return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15, fused=True)
        except (RuntimeError, TypeError):
            return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15)

    def _lr_factor(self, step: int) -> float:
        t = self.cfg.train
        warm = min(1.0, (step + 1) / max(1, t.warmup))
        return warm * t.lr_final_ratio ** min(1.0, step / max(1, t.iters))

    # ------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "config": to_flat_dict(self.cfg),
            "n_rays": self.n_rays,
            "rng": {"torch": torch.get_rng_state(), "batch": self.gen.get_state(),
                    # on a GPU the marching jitter, occupancy draws, backgrounds and warp hops come from its generator
                    **({"cuda": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {})},
            "dynamic_map": None if self.batcher.importance is None else self.batcher.importance.clone(),
            "scene_signature": self.scene_signature,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint's state; the learning rates and weight decay stay this run's options."""
        self.model.load_state_dict(state["model"])
        options = [(g["initial_lr"], g["weight_decay"]) for g in self.optimizer.param_groups]
        names = [g["name"] for g in self.optimizer.param_groups]  # (a checkpoint's groups may be unnamed)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except ValueError as exc:  # a checkpoint from a version with other parameter groups
            log.warning("optimizer state not restored (%s): Adam restarts from zero moments", exc)
            self.scheduler.last_epoch = int(state["step"])
        groups = self.optimizer.param_groups  # (loading replaced them)
        saved = [(g["initial_lr"], g["weight_decay"]) for g in groups]
        changed = [f"{name} {lr:g} / {decay:g} (checkpoint: {lr_s:g} / {decay_s:g})"
                   for name, (lr, decay), (lr_s, decay_s) in zip(names, options, saved) if (lr, decay) != (lr_s, decay_s)]
        if changed:
            log.info("learning rate / weight decay from the options, not the checkpoint: %s", "; ".join(changed))
        epoch = self.scheduler.last_epoch  # the learning rates of this step (as the scheduler computes them)
        self.scheduler.base_lrs = [lr for lr, _ in options]
        for group, name, (lr, decay), factor in zip(groups, names, options, self.scheduler.lr_lambdas):
            group.update(name=name, initial_lr=lr, weight_decay=decay, lr=lr * factor(epoch))
        self.scheduler._last_lr = [g["lr"] for g in groups]
        self.n_rays = state.get("n_rays", self.n_rays)
        saved_map = state.get("dynamic_map")
        if saved_map is not None and self.batcher.importance is not None:
            if saved_map.shape == self.batcher.importance.shape:
                self.batcher.load_importance(saved_map)
            else:
                log.warning("the checkpoint's dynamic-ray map has %d pixels, the scene %d: starting a new map",
                            saved_map.numel(), self.batcher.importance.numel())
        if "rng" in state:
            # (.cpu(): a checkpoint opened with map_location=cuda has its byte states there, which set_rng_state refuses)
            torch.set_rng_state(state["rng"]["torch"].cpu())
            self.gen.set_state(state["rng"]["batch"].cpu())
            if "cuda" in state["rng"] and self.device.type == "cuda":  # pragma: no cover - GPU only
                torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        self.step = int(state["step"])

    def save(self) -> Path:
        return save_checkpoint(self.run_dir, self.step, self.state_dict(), keep=self.cfg.train.keep_ckpts)

    def maybe_resume(self) -> bool:
        """Resume from ``--resume`` (auto = the latest checkpoint in the run dir). Raises CheckpointError where
        training would mix with, lose or continue another run's checkpoints; writes nothing, except that ``auto`` in a
        folder without checkpoints moves the metrics of a run killed before its first save aside (``.orphaned``)."""
        mode = self.cfg.train.resume
        ckpts, metrics = list_checkpoints(self.run_dir), self.run_dir / "metrics.jsonl"
        earlier_rows = metrics.is_file() and metrics.stat().st_size > 0
        start_over = f"use another --out, or delete {ckpt_dir(self.run_dir)} and {metrics} to start over"
        results = self.run_dir / "metrics.json"
        if not ckpts and results.exists():  # an earlier run's scores (its checkpoints gone), or someone's file
            raise CheckpointError(f"{results} holds results but {ckpt_dir(self.run_dir)} holds no checkpoint to resume: a new "
                                  f"run would replace them; use another --out, or move {results} away to start over")
        if mode in ("none", ""):
            if ckpts:
                raise CheckpointError(f"{ckpt_dir(self.run_dir)} holds an earlier run's checkpoints (latest step "
                                      f"{checkpoint_step(ckpts[-1])}): {start_over}")
            if earlier_rows:
                raise CheckpointError(f"{metrics} holds an earlier run's metrics: {start_over}")
            return False
        if mode == "auto":
            if not ckpts:
                if earlier_rows:  # its rows would interleave with this run's
                    aside = set_aside(metrics, "orphaned")  # (an earlier dead run's rows stay too)
                    log.warning("%s: no checkpoint to resume, so its rows (a run stopped before its first save) are "
                                "moved to %s and training starts at step 0", metrics, aside)
                return False
            path = ckpts[-1]
        else:
            path = Path(mode)
            if path.is_dir():
                raise CheckpointError(f"--resume {mode} is a folder; pass one of its checkpoint files "
                                      f"(ckpt_XXXXXXX.pt), or --resume auto (the latest in --out)")
            if not path.is_file():
                raise CheckpointError(f"--resume {mode}: no such checkpoint file; pass an existing ckpt_XXXXXXX.pt, "
                                      f"or --resume auto (the latest in --out) or none")
            own = path.resolve().parent == ckpt_dir(self.run_dir).resolve()
            if not own and (ckpts or earlier_rows):  # another run's checkpoint: its continuation needs a folder of its own
                held = f"checkpoints up to step {checkpoint_step(ckpts[-1])}" if ckpts else f"the metrics of {metrics}"
                raise CheckpointError(f"--resume {path} is another run's checkpoint, and {self.run_dir} holds a run of "
                                      f"its own ({held}): continuing it there would prune that run's checkpoints and "
                                      f"mix the logs; resume it into an empty --out (or, if that run is this "
                                      f"command's own, interrupted, continue it with --resume auto)")
        state = load_checkpoint(path, map_location=self.device)
        later = [p for p in ckpts if checkpoint_step(p) >= int(state["step"]) and not p.samefile(path)]
        if later:  # they would be resumed by the next --resume auto instead, or pruned
            raise CheckpointError(f"{path} is of step {int(state['step'])}, but {ckpt_dir(self.run_dir)} holds "
                                  f"checkpoints up to step {checkpoint_step(later[-1])}: resume them (--resume auto), "
                                  f"or resume {path} into another --out, or delete the later ones first")
        differs = model_mismatch(self.model.state_dict(), state["model"])
        if differs:  # e.g. the run folder of an earlier config: its checkpoints stay as they are
            raise CheckpointError(
                f"{path} holds a model built with other options than this run's ({differs}); train into another "
                f"--out, or run with the options it was trained with (its run folder's config.yaml)")
        saved_scene, scene = state.get("config", {}).get("scene", ""), self.cfg.data.scene
        moved = bool(saved_scene and scene and Path(saved_scene).resolve() != Path(scene).resolve())
        # the box, frame spacing and NDC map; then the signature (same box and spacing: two D-NeRF scenes of 150
        # frames, two synthetic presets from one seed; a scene regenerated in place)
        differs = scene_mismatch(self.model.state_dict(), state["model"]) or (
            signature_mismatch(self.scene_signature, state["scene_signature"]) if "scene_signature" in state else "")
        if differs and not moved and saved_scene:
            raise CheckpointError(f"{path} was trained on {saved_scene} as it was then, and the scene there has changed "
                                  f"since ({differs}): train it into another --out, or restore the scene")
        if differs:
            raise CheckpointError(f"{path} was trained on another scene, {saved_scene or '(not recorded)'} "
                                  f"({differs}): train {scene or 'this scene'} into another --out, or resume it with "
                                  f"its own scene")
        if moved and "scene_signature" in state:
            log.info("%s was trained on %s: the same scene as %s (its frames, cameras and image files)", path,
                     saved_scene, scene)
        elif moved and Path(saved_scene).exists():  # a checkpoint from before the signature: only the path tells
            raise CheckpointError(f"{path} was trained on {saved_scene}, which is still there, and this run names "
                                  f"{scene}: train {scene} into another --out, or resume with {saved_scene}")
        elif moved:
            log.warning("%s was trained on %s, which is gone; this run names %s (same box and frame spacing): "
                        "resuming it as the same scene moved", path, saved_scene, scene)
        changed = changed_options(state.get("config", {}), to_flat_dict(self.cfg))
        if changed:  # legitimate (a new weight, a longer schedule) or a slip: either way the user should see it
            log.warning("%s was trained with other options; resuming with this run's: %s", path, changed)
        self.load_state_dict(state)
        log.info("resumed from %s at step %d", path, self.step)
        return True

    # ------------------------------------------------------------------------------- training
    def make_target(self, batch: Dict[str, torch.Tensor]):
        """Training colour and background: pixels with alpha are re-composited on a random colour."""
        rgb = batch["rgb"]
        if "alpha" in batch and self.cfg.data.random_background:
            bg = torch.rand(rgb.shape[0], 3, device=self.device)
            a = batch["alpha"][:, None]
            target = rgb - (1.0 - a) * self.scene.background.to(self.device) + (1.0 - a) * bg
            return target, bg
        return rgb, self.background

    def train_step(self) -> Dict[str, float]:
        """One optimisation step; returns scalars to log."""
        step = self.step
        self.model.update_occupancy(step)
        if self.kinematic is not None:
            self.model.kinematic.set_active_orders(self.kinematic.active_orders(step))
            self.model.kinematic.set_gate_active(step >= self.cfg.kin.gate_start)
        batch = self.batcher.sample(self.n_rays, self._n_dynamic_rays(step))
        target, bg = self.make_target(batch)
        decompose = self.priors is not None and self.priors.needs_decomposition
        map_update = None  # (pixels, values) for the importance map
        with self.model.shared_kinematics():  # F_K once per set of points within the step (see there)
            keyframe_u = self.model.keyframe_draws(batch["times"].shape[0], self.device)
            render = self.model.render_rays(batch["origins"], batch["dirs"], batch["times"], bg, stratified=True,
                                            decompose=decompose, keyframe_u=keyframe_u)
            ctx = {"batch": batch, "target": target, "render": render, "render_background": bg, "model": self.model,
                   "step": step}
            motion_map = self._motion_map(step)
            if self.batcher.importance is not None:  # each ray's dynamic probability (warps reuse it), the map's value
                ctx["dynamic_probability"] = dynamic_probability(render["samples"])  # [R], detached
                if not motion_map:
                    map_update = (batch["flat"], ctx["dynamic_probability"])
            loss, term_logs = total_loss(self.terms, ctx, step)
            if motion_map:  # or the motion F_K renders on the warp rays (the batcher clamps it to [0, 1])
                moved = self.kinematic.ray_motion(ctx)
                if moved is not None:
                    ref = self.cfg.train.motion_map_cells * self.model.dynamic_finest_cell()
                    map_update = (batch["flat"][: moved.shape[0]], moved / ref)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            mse = torch.mean((render["rgb"].detach() - target) ** 2)
        # every logged scalar (and the finiteness check) in one device-to-host copy: on a GPU each separate
        # read is a host sync that stalls the launch queue
        logs = read_scalars({"loss": loss, "psnr": psnr_from_mse(mse), **term_logs})
        if not math.isfinite(logs["loss"]):  # the step is dropped: no parameter or schedule update
            self._update_map(map_update)
            self.optimizer.zero_grad(set_to_none=True)
            self.n_bad_steps += 1
            if self.n_bad_steps >= 10:
                weight = {t.name: t.weight_at(step) for t in self.terms}  # (a finite value times its weight may overflow)
                culprits = [k.split("/", 1)[1] for k, v in logs.items() if k.startswith("loss/")
                            and not abs(v * weight.get(k.split("/", 1)[1], 1.0)) < torch.finfo(loss.dtype).max]
                weights = ", ".join(f"--{o}" for o in (_weight_option(self.cfg, name) for name in culprits) if o)
                raise NonFiniteLoss(f"the loss was not finite for 10 steps in a row (last step {step}"
                                    + (f"; not finite: {', '.join(culprits)}" if culprits else "")
                                    + f"); the last good checkpoint is in {self.run_dir / 'ckpts'}: lower the learning "
                                    f"rates (--train_lr_grid/--train_lr_net)"
                                    + (f" or the weight of those terms ({weights})" if weights else "")
                                    + ", then resume (the same command)")
            return {"skipped_nonfinite": 1.0}
        self.n_bad_steps = 0
        self.optimizer.step()
        self.scheduler.step()
        self._update_map(map_update)  # (on a GPU: CPU work while Adam's kernels run)
        n_samples = render["samples"].ray_ids.shape[0]
        t = self.cfg.train
        if t.target_samples > 0:
            ratio = t.target_samples / max(n_samples, 1)
            # move towards the target sample count (at most x1.41 up per step)
            self.n_rays = int(min(t.max_rays, max(t.min_rays, self.n_rays * min(ratio, 2.0) ** 0.5)))
        logs.update({"rays": float(batch["rgb"].shape[0]), "samples": float(n_samples),
                     "lr": self.optimizer.param_groups[0]["lr"]})
        if "physics_points" in ctx:  # (the physics terms' points before any volume points: 0 leaves them at 0)
            logs["physics_points"] = float(ctx["physics_points"])
            self._note_missing_physics(step, ctx["physics_points"], ctx.get("physics_points_why", ""))
        return logs

    def _note_missing_physics(self, step: int, points: int, why: str, patience: int = 50) -> None:
        """Warn (once per session) when the physics terms have had no point for ``patience`` steps in a row: they
        then read 0, as converged terms would, and train nothing. ``why``: the last step's reason, naming its option."""
        self._steps_without_physics = 0 if points else self._steps_without_physics + 1
        if self._steps_without_physics == patience and not self._warned_physics:
            self._warned_physics = True
            log.warning("step %d: the physics terms have had no point for %d steps (at the last: %s), so they train "
                        "nothing; lower that option, or start them later (--kin_physics_start)", step, patience,
                        why or "none")

    def _note_long_run(self, steps_done: int, seconds: float, paced: int = 3, hours: float = 12.0) -> None:
        """On a CPU, at the session's step ``1 + paced`` (``seconds``: its training time so far): warn when the steps
        left would take more than ``hours`` at the pace of the last ``paced`` steps (the first one, which warms up, left
        out) and no --train_max_minutes stops the run before that (e.g. a GPU config on a laptop), naming the CPU
        configs and the cap."""
        if self.device.type != "cpu" or steps_done not in (1, 1 + paced):
            return
        if steps_done == 1:
            self._pace_from = seconds
            return
        per_step = (seconds - self._pace_from) / paced
        left = per_step * (self.cfg.train.iters - self.step)
        cap = 60.0 * self.cfg.train.max_minutes
        if left > 3600.0 * hours and not 0 < cap < 3600.0 * hours:
            log.warning("on this CPU a step takes %.1f s: the %d steps left would take about %s. The configs sized for "
                        "a CPU are configs/*_cpu.yaml (and demo.yaml); --train_max_minutes stops a run at a time limit "
                        "(raise it and run the same command again to go on)", per_step, self.cfg.train.iters - self.step,
                        _duration(left))

    def _update_map(self, update) -> None:
        """Record a step's ``(pixels, values)`` in the importance map. The map lives on the CPU (one byte per training
        pixel), so this copies the values to the host: done after the step's one read-back of its logged scalars and
        after the optimizer's launches, never between the forward and the backward pass, where a GPU would idle."""
        if update is not None:
            self.batcher.update_importance(*update)

    def _motion_map(self, step: int) -> bool:
        """Whether this step's importance map records motion (``--train_dynamic_ray_map motion``, from kin_start on)."""
        return (self.batcher.importance is not None and self.kinematic is not None
                and self.cfg.train.dynamic_ray_map == "motion" and step >= self.cfg.kin.start)

    def _n_dynamic_rays(self, step: int) -> int:
        """Rays of this step's batch drawn from the importance map (``--train_dynamic_ray_fraction``, ``--train_dynamic_ray_map``)."""
        t = self.cfg.train
        start = self.cfg.kin.start if self.kinematic is not None else 0
        return int(t.dynamic_ray_fraction * self.n_rays) if t.dynamic_ray_fraction > 0 and step >= start else 0

    def fit(self) -> Dict:
        """Train to ``--iters`` (resuming when possible), then render and score the eval split; one training at a time
        in a run folder (:func:`run_lock`)."""
        with run_lock(self.run_dir):
            return self._fit()

    def _fit(self) -> Dict:
        cfg = self.cfg
        resumed = self.maybe_resume()  # (it checks the run folder before anything is written there)
        wall_before = self._wall_time_so_far() if resumed else 0.0
        capped = cfg.train.max_minutes > 0 and wall_before > 60.0 * cfg.train.max_minutes
        # a rerun of a finished run (or of one the time cap stopped): nothing to train, so its checkpoint, config.yaml
        # and scores stay as they are (a rerun with other options would otherwise file them as the checkpoint's)
        idle = resumed and (self.step >= cfg.train.iters or capped)
        if not idle or not (self.run_dir / "config.yaml").is_file():
            save_config(cfg, self.run_dir / "config.yaml")
        split = cfg.train.eval_split
        scored = read_metrics(self.run_dir).get(split) if split else None
        scored_already = idle and isinstance(scored, dict) and scored.get("step") == self.step
        # an idle rerun writes to TensorBoard only the scores a Ctrl-C during scoring left out; a fresh run in a folder
        # whose earlier run was removed hides that run's events (resume step 0)
        logger = MetricsLogger(self.run_dir, tensorboard=cfg.train.tensorboard and not (idle and (
            scored_already or split not in self.scene.splits)), resume_step=self.step)
        ema = EMA()
        bar = progress_bar(cfg.train.iters, self.step, cfg.train.progress)
        t_start = time.time()
        val_seconds, val_split = 0.0, self._val_split()
        if cfg.train.eval_split and cfg.train.eval_split not in self.scene.splits:
            log.warning("--train_eval_split %r: the scene has no such split (it has: %s): nothing is scored at the end, "
                        "so no metrics.json (pass one of those, or '' to say so)", cfg.train.eval_split,
                        ", ".join(sorted(self.scene.splits)))
        stopped_cleanly, previous_handlers = False, self._stop_after_step_on_signal()
        cap_hit = False  # (this session reached --train_max_minutes)
        session_steps = 0
        try:
            if capped and self.step < cfg.train.iters:  # a rerun of a run the time cap stopped: nothing to train
                log.warning("step %d: the earlier session reached --train_max_minutes %.1f; not training further "
                            "(raise it to continue)", self.step, cfg.train.max_minutes)
            while self.step < cfg.train.iters and not capped:
                logs = self.train_step()
                self.step += 1
                session_steps += 1
                interrupted = self._signal != 0  # read once: the step just done is the last one
                bar.update(1)
                if "psnr" in logs:
                    smooth = ema.update({"loss": logs["loss"], "psnr": logs["psnr"]})
                    bar.set_postfix(loss=f"{smooth['loss']:.4f}", psnr=f"{smooth['psnr']:.2f}",
                                    rays=int(logs["rays"]), samples=int(logs["samples"]), refresh=False)
                elapsed = wall_before + time.time() - t_start - val_seconds
                self._note_long_run(session_steps, elapsed - wall_before)
                stop = cfg.train.max_minutes > 0 and elapsed > 60.0 * cfg.train.max_minutes
                validate = val_split is not None and self.step % cfg.train.val_every == 0
                if validate or stop or interrupted or self.step % cfg.train.log_every == 0 or \
                        self.step == cfg.train.iters:
                    logger.log(self.step, {**logs, "time_s": elapsed})
                    if not cfg.train.progress and "psnr" in logs:  # (no bar: a line per logged step instead)
                        log.info("step %d/%d: loss %.4f, PSNR %.2f, %d rays, %.0f s", self.step, cfg.train.iters,
                                 logs["loss"], logs["psnr"], int(logs["rays"]), elapsed)
                if validate:  # (its own row, after the step's: an interrupt here loses no training log)
                    t_val = time.time()
                    scores = quick_scores(self.model, self.scene, val_split, cfg.train.val_views)
                    val_seconds += time.time() - t_val
                    logger.log(self.step, {"val/psnr": scores["psnr"], "val/ssim": scores["ssim"]})
                    logger.tensorboard_image("val/render | ground truth", scores.get("preview"), self.step)
                    log.info("step %d: %s PSNR %.2f, SSIM %.4f (%d views)", self.step, val_split, scores["psnr"],
                             scores["ssim"], scores["n_images"])
                if interrupted:
                    break
                if self.step % cfg.train.save_every == 0:
                    self.save()
                if stop:
                    cap_hit = True
                    break
            if self._signal:  # a signal during a step, or during the last one's logging, validation or save
                path = self.save()
                if self.step >= cfg.train.iters:  # (the rerun has nothing to train: the time is written now)
                    self._record_train_time(logger, wall_before + time.time() - t_start - val_seconds)
                bar.close()  # (before the message: it would otherwise land on the bar's line)
                log.warning("interrupted at step %d; checkpoint saved to %s (run again to resume)", self.step, path)
                stopped_cleanly = True
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            bar.close()
            logger.close()
            if not stopped_cleanly:  # a second Ctrl-C (or SIGTERM): the step or save in progress is not kept
                log.warning("aborted after step %d without saving; running again resumes from %s", self.step,
                            latest_checkpoint(self.run_dir) or "step 0 (no checkpoint yet)")
            raise
        except Exception:  # (e.g. NonFiniteLoss: the bar and TensorBoard's writer thread closed before the error shows)
            bar.close()
            logger.close()
            raise
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        bar.close()
        if cap_hit and self.step < cfg.train.iters:
            log.warning("stopped at step %d of %d: --train_max_minutes %g reached. The run is shorter than its config "
                        "asks, so its scores are not those of a full run; raise --train_max_minutes and run the same "
                        "command again to continue from here", self.step, cfg.train.iters, cfg.train.max_minutes)
        train_time = wall_before + time.time() - t_start - val_seconds
        checkpoint = latest_checkpoint(self.run_dir)
        if not idle or checkpoint is None or checkpoint_step(checkpoint) != self.step:
            try:
                checkpoint = self.save()
            except KeyboardInterrupt:  # (the signal handlers are back: a Ctrl-C here stops the save, atomically)
                log.warning("interrupted while saving the checkpoint of step %d; the last one saved is kept (%s): "
                            "run the same command again", self.step, latest_checkpoint(self.run_dir) or "none yet")
                raise
            self._record_train_time(logger, train_time)
        result = {"step": self.step, "train_time_s": train_time}
        if not split or split not in self.scene.splits:
            logger.close()
            return result
        if scored_already:
            logger.close()
            log.info("%s is trained to step %d and its %s split scored (%s): nothing to do (tools/eval.py scores "
                     "it again, e.g. at another --downscale; a larger --iters trains further)", self.run_dir,
                     self.step, split, self.run_dir / "metrics.json")
            result[split] = scored
            return result
        try:
            result[split] = evaluate_split(self.model, self.scene, split, self.run_dir,
                                           use_lpips=cfg.train.eval_lpips, progress=cfg.train.progress,
                                           max_views=cfg.train.eval_max_views,
                                           extra={"step": self.step, "train_time_s": round(train_time, 1),
                                                  "checkpoint": str(checkpoint)})
        except KeyboardInterrupt:
            log.warning("interrupted while scoring the %s split; training is saved (%s): run the same command "
                        "again to score it", split, checkpoint)
            raise
        finally:
            # (the final scores live in metrics.json; TensorBoard shows them beside the training curves)
            if split in result:
                logger.tensorboard_only(self.step, {f"{split}/{k}": result[split].get(k) for k in SCORE_KEYS})
            logger.close()
        return result

    def _record_train_time(self, logger: MetricsLogger, seconds: float) -> None:
        """The training time of the run so far: a ``train_time_s`` row at this step and ``RUN/train_time.txt``."""
        logger.log(self.step, {"train_time_s": seconds})
        (self.run_dir / "train_time.txt").write_text(f"{seconds:.1f}\n")

    def _stop_after_step_on_signal(self) -> dict:
        """From now on Ctrl-C and SIGTERM only set ``self._signal``: fit saves and stops once the step in progress is
        complete, so a checkpoint never holds half a step; a second one raises KeyboardInterrupt at once (a hung
        step). Returns the previous handlers (e.g. tools/train.py's for SIGTERM), which fit puts back."""
        self._signal = 0

        def handler(signum, frame):
            if self._signal:
                raise KeyboardInterrupt(f"signal {signum}")
            self._signal = signum

        previous = {}
        with contextlib.suppress(ValueError):  # not in the main thread (which alone receives signals)
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, handler)
        return previous

    def _val_split(self) -> Optional[str]:
        """The split of the periodic validation, or None when it is off (or the scene has no split to use)."""
        t = self.cfg.train
        if t.val_every <= 0 or t.val_views <= 0:
            return None
        for split in (t.val_split, t.eval_split):
            if split and split in self.scene.splits:
                if split != t.val_split:
                    log.info("the scene has no %r split: validating on %r", t.val_split, split)
                return split
        named = " nor a ".join(repr(n) for n in (t.val_split, t.eval_split) if n) or "--train_val_split"
        log.info("periodic validation off: the scene has no %s split (it has: %s)", named,
                 ", ".join(sorted(self.scene.splits)))
        return None

    def _wall_time_so_far(self) -> float:
        """The training time the log records up to this run's step (its last ``time_s`` there; unreadable rows
        skipped)."""
        p = self.run_dir / "metrics.jsonl"
        if not p.is_file():
            return 0.0
        last = 0.0
        for _, row in metrics_rows(p)[0]:
            try:
                if row["step"] <= self.step and "time_s" in row:
                    last = float(row["time_s"])
            except (TypeError, ValueError):
                continue
        return last
