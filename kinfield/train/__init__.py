"""Training, checkpoints, logging and evaluation."""
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .evaluate import evaluate_split
from .run import LoadedRun, load_run
from .trainer import Trainer, build_model, load_configured_scene, resolve_device

__all__ = ["LoadedRun", "load_run", "Trainer", "build_model", "load_configured_scene", "resolve_device", "evaluate_split", "latest_checkpoint", "load_checkpoint",
           "save_checkpoint"]
