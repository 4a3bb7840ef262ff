"""Checkpoints: step-stamped files written atomically, resume from the latest.

A checkpoint is a dict ``{format_version, step, model, optimizer, scheduler, config, rng}``; it never
pickles a module. Files are written to a temporary name and renamed, so a killed run leaves either
the previous checkpoint or the new one, never a truncated file.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
from pathlib import Path
from typing import Optional

import torch

FORMAT_VERSION = 1
_NAME = re.compile(r"ckpt_(\d{7})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or resumed; the message names the file and what to do."""


@contextlib.contextmanager
def run_lock(run_dir):
    """Hold ``RUN_DIR/.kinfield.lock`` (this process's id) while a training runs there: a second training into the same
    folder stops with a CheckpointError naming the first one's process instead of interleaving its metrics and
    checkpoints. A lock whose process is gone (a killed run) is taken over. The folder is created if needed, and
    removed again if it is still empty at the end."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / ".kinfield.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None and holder != os.getpid() and _process_alive(holder):
                raise CheckpointError(f"{run_dir} is being trained by process {holder} ({lock}): wait for it to finish, "
                                      f"stop it, or use another --out") from None
            lock.unlink(missing_ok=True)  # its process is gone
    else:
        raise CheckpointError(f"could not take {lock}: another training is starting in {run_dir}; use another --out")
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()


def _lock_holder(lock: Path) -> Optional[int]:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def ckpt_dir(run_dir) -> Path:
    return Path(run_dir) / "ckpts"


def save_checkpoint(run_dir, step: int, state: dict, keep: int = 3) -> Path:
    """Write ``ckpts/ckpt_{step:07d}.pt`` atomically; keep ``keep`` files (0: all), this one and the newest others."""
    d = ckpt_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"ckpt_{step:07d}.pt"
    tmp = path.with_suffix(".pt.tmp")
    try:
        with open(tmp, "wb") as f:  # on disk before it replaces anything (a power cut leaves the old file or this one)
            torch.save({"format_version": FORMAT_VERSION, "step": step, **state}, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as exc:  # (a full disk shows as torch's RuntimeError from its zip writer)
        tmp.unlink(missing_ok=True)  # a half-written file would keep the disk full
        kept = list_checkpoints(run_dir)
        raise CheckpointError(f"could not write the checkpoint {path} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                              f"the earlier checkpoints are kept ({kept[-1].name if kept else 'none yet'}): free disk space "
                              f"(or fix the folder's permissions) and run the same command again to resume") from exc
    os.replace(tmp, path)
    for stale in d.glob("ckpt_*.pt.tmp"):  # half-written files of a run killed while saving
        stale.unlink(missing_ok=True)
    if keep > 0:
        others = [p for p in list_checkpoints(run_dir) if p != path]
        for old in others[: max(0, len(others) - (keep - 1))]:
            old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir):
    """Checkpoint files of a run, oldest first."""
    return _checkpoints_in(ckpt_dir(run_dir))


def _checkpoints_in(folder: Path):
    """The ``ckpt_XXXXXXX.pt`` files in ``folder``, oldest first (none when it is not a folder)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NAME.search(p.name)), key=checkpoint_step)


def checkpoint_step(path) -> int:
    """The step in a checkpoint file's name."""
    return int(_NAME.search(Path(path).name).group(1))


def latest_checkpoint(run_dir) -> Optional[Path]:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint file, with a clear error when it is not one of ours."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is a folder: pass one of its ckpt_XXXXXXX.pt files (the tools "
                                f"take the run's latest when --checkpoint is left out)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # (a copy cut short, another program's file: torch's zip reader says little more)
        what = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        earlier = [p for p in _checkpoints_in(path.parent) if checkpoint_step(p) < checkpoint_step(path)] \
            if _NAME.search(path.name) else []
        fix = (f"its folder has an earlier checkpoint, {earlier[-1]}: move {path.name} out of {path.parent} (keep it "
               f"until the run is fine) and run the command again to use that one (where the command names this "
               f"file, name the earlier one)" if earlier
               else "pass another checkpoint, or train again")
        raise CheckpointError(f"cannot read checkpoint {path}: the file is damaged or not a torch checkpoint (a copy cut "
                              f"short?; {what}); {fix}") from exc
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not a kinfield checkpoint")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {state['format_version']}; "
                              f"this kinfield reads <= {FORMAT_VERSION}")
    return state


def model_mismatch(own: dict, saved: dict, limit: int = 3) -> str:
    """How a saved model state differs from ``own`` (both ``state_dict()``s): missing and unexpected entries and
    shape changes, at most ``limit`` named per kind; ``""`` when the saved state fits."""
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [f"{k} {tuple(saved[k].shape)} -> {tuple(own[k].shape)}" for k in own
              if k in saved and tuple(own[k].shape) != tuple(saved[k].shape)]
    parts = []
    for what, items in (("not in the checkpoint", missing), ("only in the checkpoint", unexpected),
                        ("other shapes", shapes)):
        if items:
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            parts.append(f"{what}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def scene_mismatch(own: dict, saved: dict) -> str:
    """How the scene a saved model state was trained on differs from ``own``'s (both ``state_dict()``s), as far as
    the model records it: the scene box, the training-frame spacing and the NDC map (its ``focal / width``,
    ``focal / height`` and ``near``: the image size follows ``--downscale``, and its rounding moves those ratios by up
    to half a pixel, which the comparison allows); ``""`` when they agree."""
    def described(state):
        ndc = [float(v) for v in state.get("space.ndc", torch.zeros(4))]
        return {"box": state.get("occupancy.aabb"), "frame spacing": state.get("kinematic.frame_dt"),
                "NDC map": torch.tensor([ndc[0] / ndc[1], ndc[0] / ndc[2], ndc[3]] if ndc[0] > 0 else [0.0] * 3)}, \
            min(ndc[1:3]) if ndc[0] > 0 else math.inf

    (a, pixels_a), (b, pixels_b) = described(own), described(saved)
    rtol = {"NDC map": max(1e-3, 1.0 / min(pixels_a, pixels_b))}  # one pixel of the smaller image
    return "; ".join(f"{what} {[round(v, 4) for v in b[what].reshape(-1).tolist()]} -> "
                     f"{[round(v, 4) for v in a[what].reshape(-1).tolist()]}" for what in a
                     if a[what] is not None and b[what] is not None
                     and not torch.allclose(a[what].cpu().double(), b[what].cpu().double(), rtol=rtol.get(what, 1e-3),
                                            atol=1e-6))


def _files_digest(paths) -> Optional[str]:
    """SHA-1 over the bytes of the image files behind a split's ``paths`` (in order; ``file#i`` entries name their
    file once), or ``None`` where they are not all files (a scene rendered in memory)."""
    import hashlib

    files = list(dict.fromkeys(str(p).split("#", 1)[0] for p in paths))
    if not files or not all(os.path.isfile(f) for f in files):
        return None
    digest = hashlib.sha1()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def scene_signature(split) -> dict:
    """What identifies the scene a run trains on, whatever ``--downscale``, ``--background`` or the folder it is read
    from: its training frames' ``times [N]``, camera ``poses [N, 3, 4]`` (CPU tensors) and a SHA-1 of their image
    files' bytes (``None`` for a scene rendered in memory). Stored in checkpoints."""
    return {"times": split.times.float().cpu().clone(), "poses": split.poses[:, :3, :4].float().cpu().clone(),
            "files": _files_digest(split.paths)}


def signature_mismatch(own: dict, saved: dict) -> str:
    """How two :func:`scene_signature` differ (``""``: the same scene): the frame count, times, poses (to 0.1 % of
    the cameras' spread) or the image files' contents (when both record them). Either may come from a checkpoint
    loaded onto a GPU: compared on the CPU."""
    own_t, saved_t = ({k: d[k].detach().cpu().float() for k in ("times", "poses")} for d in (own, saved))
    n_own, n_saved = own_t["times"].shape[0], saved_t["times"].shape[0]
    if n_own != n_saved:
        return f"{n_saved} training frames -> {n_own}"
    if not torch.allclose(own_t["times"], saved_t["times"], atol=1e-5):
        return "the training frames' times differ"
    poses = saved_t["poses"]
    spread = float((poses[:, :, 3].max(0).values - poses[:, :, 3].min(0).values).norm())
    if not torch.allclose(own_t["poses"], poses, atol=1e-3 * max(spread, 1.0)):
        return "the training cameras differ"
    if own.get("files") and saved.get("files") and own["files"] != saved["files"]:
        return "the training image files hold other bytes"
    return ""
