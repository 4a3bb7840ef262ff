"""Opening a finished (or interrupted) run directory for rendering, evaluation and export."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import yaml

from ..config import Config, from_flat_dict
from ..render import SceneModel
from .checkpoint import CheckpointError, ckpt_dir, latest_checkpoint, load_checkpoint, model_mismatch
from .trainer import build_model, changed_options, looks_like_scene, resolve_device

log = logging.getLogger("kinfield")


@dataclass
class LoadedRun:
    cfg: Config
    model: SceneModel
    step: int
    checkpoint: Path
    run_dir: Path
    scene_signature: Optional[dict] = None  # of the scene it was trained on (checkpoint.scene_signature), if recorded


def load_run(run_dir, device: str = "auto", checkpoint: Optional[str] = None) -> LoadedRun:
    """Rebuild the model of ``run_dir`` from its latest checkpoint (or ``checkpoint``).

    Raises:
        FileNotFoundError: with the fix, when the folder, its config or its checkpoints are missing.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir} (pass the --out folder of tools/train.py)")
    path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir} is a scene folder, not a run: pass the --out folder of tools/train.py"
                                if looks_like_scene(run_dir) else
                                f"no checkpoint in {run_dir / 'ckpts'}: train first (tools/train.py ... --out {run_dir})")
    dev = resolve_device(device)
    state = load_checkpoint(path, map_location=dev)
    own_cfg = run_dir / "config.yaml"
    try:
        own = yaml.safe_load(own_cfg.read_text()) if own_cfg.is_file() else None
    except (yaml.YAMLError, UnicodeDecodeError):
        own = None
    own = own if isinstance(own, dict) else {}
    if "config" in state and own:
        differs = changed_options(state["config"], own)
        if differs:  # (training rewrites config.yaml at each start, so: an edit, or an older --checkpoint)
            log.warning("%s differs from the options %s was trained with (%s): the checkpoint's are used (pass "
                        "--scene / --downscale to the tools to read the scene otherwise)", own_cfg, path.name, differs)
    home = path.resolve().parent
    own_ckpt = home == ckpt_dir(run_dir).resolve()  # (an older one of the run may name the scene's earlier path)
    if checkpoint and home.name == "ckpts" and not own_ckpt and (home.parent / "config.yaml").is_file():
        raise CheckpointError(f"{path} is a checkpoint of another run, {home.parent}: its results would be written into "
                              f"the wrong run ({run_dir}); pass its own run folder ({home.parent}) with --checkpoint")
    if checkpoint and not own_ckpt and "config" in state:  # results go into run_dir: the checkpoint must be its
        own_scene = own.get("scene")
        saved_scene = state["config"].get("scene")
        if own_scene and saved_scene and Path(own_scene).resolve() != Path(saved_scene).resolve():
            raise CheckpointError(f"{path} was trained on {saved_scene}, the run {run_dir} on {own_scene}: its results "
                                  f"would be written into the wrong run; pass a checkpoint of this run (or that "
                                  f"checkpoint's own run folder)")
    if "config" in state:
        flat = dict(state["config"])
    else:
        if not own:
            raise FileNotFoundError(f"{own_cfg} is missing or unreadable and {path} holds no config: restore the run's "
                                    f"config.yaml (the options it was trained with)")
        flat = own
    flat.setdefault("kinematic_activation", "relu")  # runs from before the option had ReLU heads
    cfg = from_flat_dict(flat, strict=False)
    # the checkpoint decides whether there is a kinematic field (older runs / --kin_enabled false)
    has_kin = any(k.startswith("kinematic.") for k in state["model"])
    if cfg.kin.enabled != has_kin:
        cfg = dataclasses.replace(cfg, kin=dataclasses.replace(cfg.kin, enabled=has_kin))
    if has_kin and cfg.kin.normal_weight > 0 and not any(k.startswith("normal_net.") for k in state["model"]):
        cfg = dataclasses.replace(cfg, kin=dataclasses.replace(cfg.kin, normal_weight=0.0))
    frame_dt = float(state["model"].get("kinematic.frame_dt", torch.tensor(1.0)))
    state["model"].setdefault("space.ndc", torch.zeros(4))  # runs from before forward-facing support
    model = build_model(cfg, state["model"]["occupancy.aabb"].cpu(), frame_dt).to(dev)
    differs = model_mismatch(model.state_dict(), state["model"])
    if differs:  # (a checkpoint without its config, read with a config.yaml of other options, or edited by hand)
        raise CheckpointError(f"{path} does not fit the model its options describe ({differs}): pass a checkpoint "
                              f"of this run (--checkpoint), or restore the run's config.yaml")
    model.load_state_dict(state["model"])
    model.eval()
    return LoadedRun(cfg=cfg, model=model, step=int(state["step"]), checkpoint=path, run_dir=run_dir,
                     scene_signature=state.get("scene_signature"))
