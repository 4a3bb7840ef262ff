"""Entry points behind ``tools/*.py`` (kept here so the tools stay thin)."""
from __future__ import annotations

import errno
import functools
import json
import logging
import math
import os
import sys
from typing import List


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="[kinfield] %(message)s",
                        stream=sys.stderr)


def _terminate_like_ctrl_c():
    """Make SIGTERM (``kill``, job schedulers) behave like Ctrl-C: the trainer saves a checkpoint first. Returns the
    handler it replaced (``None`` outside the main thread), for :func:`main_train` to put back."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        return None


def _user_errors(main=None, *, out: str = "--out"):
    """Wrap a tool's ``main(argv)``: a file-system failure (a full disk, a read-only folder, an output path that is a
    file) is one ``error:`` line naming the path, and Ctrl-C a short note (exit 130), not a traceback. Outputs are
    written beside their final names and moved in when complete (:mod:`kinfield._io`), so earlier results stay.
    ``out``: what the fixes call the tool's output path (``@_user_errors(out="OUT_DIR")`` for a positional one)."""
    if main is None:
        return functools.partial(_user_errors, out=out)

    @functools.wraps(main)
    def wrapped(argv: List[str]) -> int:
        try:
            return main(argv)
        except KeyboardInterrupt:
            print("interrupted: earlier results are kept (outputs replace them only when complete)", file=sys.stderr)
            return 130
        except ValueError as exc:
            from .train.trainer import DeviceUnavailable

            if isinstance(exc, DeviceUnavailable):
                return _error(exc)
            raise
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            fix = {errno.ENOSPC: "free disk space", errno.EROFS: f"write to another folder ({out})",
                   errno.EACCES: f"fix the folder's permissions or write to another folder ({out})",
                   errno.ENOTDIR: f"a part of the path is a file: choose another {out}",
                   errno.EEXIST: f"a file is where a folder is expected: choose another {out}",
                   errno.ENOENT: "a folder on the path does not exist or cannot be made there: check the path"
                   }.get(exc.errno, "check the path")
            return _error(f"{exc.strerror or exc}{where}\n  fix: {fix}, then run the command again")
    return wrapped


@_user_errors
def main_train(argv: List[str]) -> int:
    from .config import parse_train_args

    setup_logging()
    try:
        cfg = parse_train_args(argv)
    except SystemExit as exc:  # (argparse's own errors have printed themselves and carry a number)
        if isinstance(exc.code, str) and exc.code.startswith("usage:"):
            print(exc.code, file=sys.stderr)
            return 2
        if isinstance(exc.code, str):
            return _error(exc.code)
        return exc.code or 0
    previous = _terminate_like_ctrl_c()
    try:
        return _train(cfg)
    finally:  # (a caller in the same process, e.g. the demo or a test runner, gets its own SIGTERM handling back)
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)


def _train(cfg) -> int:
    """Train ``cfg`` (``main_train`` after its options are read): prints the result summary; the exit code."""
    from .data import DatasetError
    from .train import Trainer
    from .train.checkpoint import CheckpointError
    from .train.trainer import NonFiniteLoss

    try:
        trainer = Trainer(cfg)
    except (DatasetError, ValueError) as exc:
        return _error(exc)
    try:
        result = trainer.fit()
    except KeyboardInterrupt:
        return 130
    except CheckpointError as exc:
        return _error(exc)
    except NonFiniteLoss as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


# ------------------------------------------------------------------------------ render / eval
RENDER_PATHS = ("spiral", "orbit", "fixed-view", "bullet-time", "test")


def _load_run_scene(cfg, scene_arg, downscale_arg, splits):
    """The scene of a run (``--scene`` / ``--downscale`` override the run config), only ``splits`` decoded."""
    from pathlib import Path

    from .data import DatasetError
    from .train import load_configured_scene

    path = scene_arg or cfg.data.scene
    if not path:
        raise DatasetError("<run config>", "the run's config names no scene", "pass --scene PATH")
    if not scene_arg and not Path(path).exists():
        raise DatasetError(path, "the run's scene is not there (moved or deleted?)", "pass --scene with where it is now")
    scene = load_configured_scene(cfg.data, path, downscale_arg, tuple(splits))
    missing = [name for name in splits if name not in scene.splits]
    if missing:  # (the splits the scene's loader finds, every one read: files of another layout may lie there)
        have = sorted(load_configured_scene(cfg.data, path, downscale_arg).splits)
        raise KeyError(f"scene {str(path)!r} has no {missing[0]!r} split (it has: {', '.join(have) or 'none'})")
    return scene


def _scene_folder(scene, fallback):
    """The folder of a run's ``scene`` (its config's ``data.scene``) when it exists, else ``fallback``'s folder."""
    from pathlib import Path

    return Path(scene) if scene and Path(scene).is_dir() else Path(fallback).parent


def _error(message) -> int:
    """Print ``error: <message>`` (what is wrong and the fix) to stderr; returns 2, the exit code of bad input.
    A KeyError (a missing split) prints its text, not its quoted repr."""
    if isinstance(message, KeyError) and message.args:
        message = message.args[0]
    print(f"error: {message}", file=sys.stderr)
    return 2


def _device(text: str) -> str:
    """``--device`` of the tools, checked as the training checks it (argparse names the option)."""
    import argparse

    from .config import _parse_device
    try:
        return _parse_device(text)
    except Exception as exc:  # (configargparse's ArgumentTypeError)
        raise argparse.ArgumentTypeError(str(exc)) from None


def _require_positive(parser, args, *names) -> None:
    """``parser.error`` (exit 2) for the first of the integer options ``names`` below 1 (None: not given)."""
    for name in names:
        v = getattr(args, name)
        if v is not None and v < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")


def _open_run(args, kinematic_for: str = ""):
    """``(LoadedRun, None)`` or ``(None, exit code)`` after printing ``error: ...``. With ``kinematic_for`` (what
    needs the kinematic field, and the fix) a run trained without one is an error too."""
    from .train.run import load_run

    try:
        run = load_run(args.run_dir, device=args.device, checkpoint=args.checkpoint)
    except (FileNotFoundError, RuntimeError) as exc:
        return None, _error(exc)
    if kinematic_for and run.model.kinematic is None:
        return None, _error(f"{run.run_dir} has no kinematic field (trained with --kin_enabled false): {kinematic_for}")
    return run, None


def _note_untrained(run, names, consequence: str):
    """One stderr line when Taylor orders among ``names`` were still locked by the training curriculum at the
    run's checkpoint (the field gives zeros for them); returns those orders."""
    from .motion.export import unmodelled_orders, untrained_orders

    kin = run.model.kinematic
    zeros = [o for o in untrained_orders(kin) if o in names]
    absent = [o for o in unmodelled_orders(kin) if o in names]
    locked = [o for o in zeros if o not in absent]
    if locked:
        unlock = ", ".join(f"{o} at step {getattr(run.cfg.kin, 'unlock_' + o, '?')}" for o in locked)
        print(f"note: {', '.join(locked)} not yet trained at step {run.step} ({run.checkpoint}; the training "
              f"curriculum unlocks {unlock}): {consequence}", file=sys.stderr)
    if absent:
        print(f"note: {', '.join(absent)} not modelled by this run's kinematic field (--kinematic_order "
              f"{kin.order}): {consequence}", file=sys.stderr)
    return zeros


def _view_error(view: int, split) -> str:
    """The error of a ``--view`` that is not a camera index of the train ``split`` ("" when it is one)."""
    if 0 <= view < split.num_frames:
        return ""
    return (f"--view {view} out of range: the train split has {split.num_frames} cameras; pass --view "
            f"0..{split.num_frames - 1}")


def _render_parser():
    from .config import ToolParser
    from .render.video import VIDEO_OUTPUTS

    p = ToolParser(
        prog="tools/render.py",
        description="Render videos of a trained run along a camera/time path (one video per output).")
    p.add_argument("run_dir", help="run folder (the --out of tools/train.py)")
    p.add_argument("--overlay-tracks", default=None,
                   help="tracks from tools/export_trajectories.py (npz, json, csv or ply), or a synthetic scene's "
                        "motion_gt.npz, drawn over the rgb frames")
    p.add_argument("--path", choices=RENDER_PATHS, default="spiral",
                   help="spiral / orbit: time sweeps 0->1; fixed-view: a train camera, time sweeps; "
                        "bullet-time: orbit at frozen --time (a spiral on forward-facing scenes, which cannot be "
                        "orbited); test: the --split cameras at their times (+ PNGs)")
    p.add_argument("--frames", type=int, default=60, help="number of frames (ignored by --path test)")
    p.add_argument("--fps", type=float, default=24.0, help="frames per second of the videos")
    p.add_argument("--time", type=float, default=0.5, help="frozen time of --path bullet-time, in [0, 1]")
    p.add_argument("--view", type=int, default=0, help="train camera index of --path fixed-view")
    p.add_argument("--scene", default=None, help="scene folder / .npz (default: the run config's scene)")
    p.add_argument("--downscale", type=float, default=None, help="image downscale (default: the run's)")
    p.add_argument("--split", default="test", help="split rendered by --path test")
    p.add_argument("--outputs", default="rgb,depth", help=f"comma-separated subset of {','.join(VIDEO_OUTPUTS)}")
    p.add_argument("--device", default="auto", type=_device, help="cpu, cuda, cuda:N or auto")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: the run's latest)")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/videos)")
    p.add_argument("--overwrite", action="store_true", help="replace videos (and PNGs) an earlier render wrote")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


@_user_errors
def main_render(argv: List[str]) -> int:
    """``tools/render.py``: videos ``<out>/<path>_<output>.mp4`` (``--path test``: ``<split>_<output>.mp4``
    plus PNGs in ``<out>/<split>/<output>/NNN.png``). Returns the exit code."""
    from pathlib import Path

    import imageio.v3 as iio

    import torch

    from ._io import replaced_on_success
    from .data import DatasetError
    from .geometry.paths import bullet_time_path, fixed_view_path, orbit_path, path_defaults, spiral_path
    from .motion.export import MotionFileError, is_ground_truth, load_tracks
    from .render.video import (KINEMATIC_OUTPUTS, VIDEO_OUTPUTS, available_memory, frames_memory, render_frames,
                               video_targets, write_video)

    setup_logging()
    parser = _render_parser()
    args = parser.parse_args(argv)
    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()]
    bad = [o for o in outputs if o not in VIDEO_OUTPUTS]
    if bad or not outputs:
        parser.error(f"--outputs: unknown {bad or 'empty list'}; choose from {','.join(VIDEO_OUTPUTS)}")
    _require_positive(parser, args, "frames")
    if not (math.isfinite(args.fps) and args.fps > 0):
        parser.error(f"--fps must be a finite number > 0, got {args.fps}")
    if not 0.0 <= args.time <= 1.0:
        parser.error("--time must be in [0, 1]")
    tracks = None
    if args.overlay_tracks:
        if "rgb" not in outputs:
            parser.error("--overlay-tracks draws over the rgb video: add rgb to --outputs")
        try:
            tracks = load_tracks(args.overlay_tracks)
        except MotionFileError as exc:
            return _error(f"--overlay-tracks {exc}")

    kinematic = [o for o in outputs if o in KINEMATIC_OUTPUTS]
    run, code = _open_run(args, f"it cannot render --outputs {','.join(kinematic)}; leave "
                                f"{'/'.join(KINEMATIC_OUTPUTS)} out of --outputs" if kinematic else "")
    if run is None:
        return code
    _note_untrained(run, kinematic, "its video shows zeros (black)")
    if tracks is not None and is_ground_truth(tracks) and run.model.space.is_ndc:
        # a scene's ground truth (motion_gt.npz, in the generator's frame; exports are in the run's): into the run's
        from .data.nsff import is_nsff_scene
        from .motion.export import gt_to_training_world

        if not {"velocity", "acceleration", "jerk", "query_points"} <= set(tracks):
            return _error(f"--overlay-tracks {args.overlay_tracks} holds object ids like a scene's motion_gt.npz "
                          f"but not its other arrays; draw tracks from tools/export_trajectories.py")
        home = _scene_folder(args.scene or run.cfg.data.scene, args.overlay_tracks)
        if not is_nsff_scene(home):
            return _error(f"--overlay-tracks {args.overlay_tracks}: a scene's ground truth is drawn on a forward-facing "
                          f"run in the run's frame, which its scene folder's poses_bounds.npy defines; {home} has "
                          f"none: pass the scene with --scene")
        gt_to_training_world(tracks, home)
    is_test = args.path == "test"
    try:
        scene = _load_run_scene(run.cfg, args.scene, args.downscale, [args.split] if is_test else ["train"])
        sp = scene.split(args.split if is_test else "train")
    except (DatasetError, KeyError) as exc:
        return _error(exc)
    if args.path == "fixed-view" and (bad_view := _view_error(args.view, sp)):
        return _error(bad_view)

    if args.path == "orbit" and run.model.space.is_ndc:
        return _error("--path orbit circles the scene, but this run is forward-facing (NDC rays): it has no views "
                      "from the side or behind; use --path spiral, fixed-view or bullet-time (a spiral there)")
    out_dir = Path(args.out) if args.out else run.run_dir / "videos"
    name = args.split if is_test else args.path
    targets = [t for o in outputs for t in ([out_dir / name / o] if is_test else [])
               + [path for _, path in video_targets(out_dir / f"{name}_{o}.mp4")]]
    if not args.overwrite and (earlier := [str(t) for t in targets if t.exists()]):
        return _error(f"{', '.join(earlier)} already written by an earlier render; pass --overwrite to replace "
                      f"{'it' if len(earlier) == 1 else 'them'}, or --out another folder")

    height, width = sp.height, sp.width
    n_frames = sp.num_frames if is_test else args.frames
    need, free = frames_memory(n_frames, height, width, outputs), available_memory()
    if free is not None and need > 0.8 * free:  # (frames are kept until the path is done: stop before making it)
        fit = int(n_frames * 0.8 * free / need)
        return _error(f"{n_frames} frames of {width}x{height} with --outputs {','.join(outputs)} need about "
                      f"{need / 2**30:.1f} GiB of memory while rendering, and {free / 2**30:.1f} GiB is available: "
                      + (f"render at most about {fit} frames (--frames), fewer --outputs at a time, or a larger "
                         f"--downscale" if not is_test else "render fewer --outputs at a time, or a larger --downscale"))
    if is_test:
        poses, times, intrinsics = sp.poses, sp.times, sp.intrinsics
    else:
        intrinsics = sp.intrinsics[0]
        d = path_defaults(sp.poses)
        if args.path == "orbit":
            poses, times = orbit_path(d["center"], d["radius"], d["elevation_deg"], args.frames, up=d["up"])
        elif args.path == "bullet-time" and run.model.space.is_ndc:  # no orbit of a forward-facing capture
            poses, times = spiral_path(sp.poses, args.frames)
            times = torch.full_like(times, args.time)
        elif args.path == "bullet-time":
            poses, times = bullet_time_path(d["center"], d["radius"], d["elevation_deg"], args.frames, args.time,
                                            up=d["up"])
        elif args.path == "spiral":
            poses, times = spiral_path(sp.poses, args.frames)
        else:  # fixed-view
            poses, times = fixed_view_path(sp.poses[args.view], args.frames)

    out_dir.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger("kinfield")
    log.info("rendering %d frames (%dx%d, path %s, outputs %s) from %s (step %d)", poses.shape[0], width, height,
             name, ",".join(outputs), run.checkpoint, run.step)
    frames = render_frames(run.model, poses, times, intrinsics, height, width, scene.background, outputs,
                           progress=not args.no_progress, desc=f"render {name}")
    if tracks is not None:  # (with rgb among the outputs: checked above)
        import numpy as np

        from .render.overlay import draw_tracks

        intr_all = intrinsics if intrinsics.dim() == 2 else intrinsics[None].expand(poses.shape[0], 4)
        frames["rgb"] = [draw_tracks(np.asarray(f), poses[i], intr_all[i], tracks, float(times[i]))
                         for i, f in enumerate(frames["rgb"])]
    written = {}
    for o in outputs:
        if is_test:
            png_dir = out_dir / name / o
            with replaced_on_success(png_dir) as tmp:  # no frame of an earlier render is left among these
                tmp.mkdir()
                for i, f in enumerate(frames[o]):
                    iio.imwrite(tmp / f"{i:03d}.png", f)
            written[f"{o}_png"] = str(png_dir)
        written[o] = str(write_video(frames[o], out_dir / f"{name}_{o}.mp4", args.fps))
    print(json.dumps(written, indent=2))
    return 0


@_user_errors
def main_eval(argv: List[str]) -> int:
    """``tools/eval.py``: re-render and score a split of a run (``evaluate_split``); prints the summary JSON."""
    from .config import ToolParser
    from .data import DatasetError
    from .train.evaluate import evaluate_split, read_metrics

    setup_logging()
    p = ToolParser(prog="tools/eval.py",
                   description="Re-render a split of a trained run and score it (PSNR, SSIM, LPIPS). "
                               "Writes RUN_DIR/metrics.json, RUN_DIR/metrics_<split>.csv and renders.")
    p.add_argument("run_dir", help="run folder (the --out of tools/train.py)")
    p.add_argument("--split", default="test", help="the split rendered and scored (test, val or train)")
    p.add_argument("--scene", default=None, help="scene folder / .npz (default: the run config's scene)")
    p.add_argument("--downscale", type=float, default=None, help="image downscale (default: the run's)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS (AlexNet)")
    p.add_argument("--device", default="auto", type=_device, help="cpu, cuda, cuda:N or auto")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: the run's latest)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)

    run, code = _open_run(args)
    if run is None:
        return code
    from pathlib import Path

    scene_path = Path(args.scene or run.cfg.data.scene).absolute()
    # another scene's scores would go into the run's metrics.json as its own: a --scene elsewhere is compared with the
    # scene the checkpoint was trained on (its signature)
    elsewhere = bool(args.scene and scene_path.resolve() != Path(run.cfg.data.scene).resolve())
    check = elsewhere and run.scene_signature is not None
    if elsewhere and not check:
        logging.getLogger("kinfield").warning("%s holds no scene signature (a run from before kinfield "
                                              "recorded them): whether --scene %s is the scene it was trained on "
                                              "cannot be checked; its scores are filed in %s as the run's",
                                              run.checkpoint, args.scene, run.run_dir / "metrics.json")
    try:
        scene = _load_run_scene(run.cfg, args.scene, args.downscale, [args.split] + (["train"] if check else []))
        scene.split(args.split)  # fails early (KeyError) when the split is absent
    except (DatasetError, KeyError) as exc:
        return _error(exc)
    if check:
        from .train.checkpoint import scene_signature, signature_mismatch

        differs = signature_mismatch(scene_signature(scene.split("train")), run.scene_signature)
        if differs:
            return _error(f"--scene {args.scene} is not the scene {run.run_dir} was trained on ({differs}): its "
                          f"scores would be written into {run.run_dir / 'metrics.json'} as the run's; evaluate "
                          f"the run on its own scene (leave --scene out, or give a copy of it)")
    extra = {"step": run.step, "checkpoint": str(run.checkpoint), "scene": str(scene_path)}
    use_lpips = not args.no_lpips
    prev = read_metrics(run.run_dir).get(args.split)
    if isinstance(prev, dict) and prev.get("step") == run.step and "train_time_s" in prev:
        extra["train_time_s"] = prev["train_time_s"]  # keep the training time of the same checkpoint
    summary = evaluate_split(run.model, scene, args.split, run.run_dir, use_lpips=use_lpips,
                             progress=not args.no_progress, extra=extra)
    print(json.dumps(summary, indent=2))
    return 0


@_user_errors
def main_export(argv: List[str]) -> int:
    """``tools/export_trajectories.py``: 3-D tracks through the kinematic field of a run."""
    from pathlib import Path

    import numpy as np

    from .config import ToolParser
    from .data import DatasetError
    from .motion import compute_trajectories, parse_times, read_points, sample_dynamic_points, write_trajectories
    from .motion.export import (ORDER_NAMES, TRAJECTORY_FORMATS, is_trajectory_file, outside_scene_box,
                                 trajectory_target)

    setup_logging()
    p = ToolParser(
        prog="tools/export_trajectories.py",
        description="Integrate points through a run's kinematic field (RK4, forward and backward from --time) and "
                    "write positions, velocity, acceleration and jerk per time (world units per unit dataset time).")
    p.add_argument("run_dir", help="run folder (the --out of tools/train.py)")
    p.add_argument("--points", default=None, help="N x 3 world points at --time (.npy or .txt), in the run's frame: "
                                                  "the scene's own for D-NeRF scenes, the loader's rescaled and "
                                                  "recentred one for forward-facing captures (as exported tracks "
                                                  "are); default: sample visible dynamic points from a rendered depth")
    p.add_argument("--time", type=float, default=0.5, help="time T0 of the query points (dataset time, [0, 1])")
    p.add_argument("--times", default="train", help="output times: 'train', a count N, or t1,t2,...")
    p.add_argument("--out", default=None, help="output file (default RUN_DIR/motion/tracks.<format>)")
    p.add_argument("--format", default=None, choices=TRAJECTORY_FORMATS, help="default: from --out suffix, else npz")
    p.add_argument("--overwrite", action="store_true", help="replace the --out file an earlier export wrote")
    p.add_argument("--n-points", type=int, default=256, help="points sampled when --points is not given")
    p.add_argument("--view", type=int, default=0, help="train camera used to sample points")
    p.add_argument("--substeps", type=int, default=4, help="RK4 steps per frame interval")
    p.add_argument("--scene", default=None, help="scene (default: the run config's); needed for --times train and sampling")
    p.add_argument("--downscale", type=float, default=None, help="image downscale of the depth render that samples "
                   "points (default: the run's)")
    p.add_argument("--device", default="auto", type=_device, help="cpu, cuda, cuda:N or auto")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: the run's latest)")
    args = p.parse_args(argv)
    _require_positive(p, args, "n_points", "substeps")
    if not 0.0 <= args.time <= 1.0:
        return _error(f"--time {args.time} is outside [0, 1]")
    try:  # the file numpy really writes (an npz gets the .npz suffix), and its format: checked before integrating
        out, fmt = trajectory_target(args.out or Path(args.run_dir) / "motion" / f"tracks.{args.format or 'npz'}",
                                     args.format)
    except ValueError as exc:
        return _error(f"--out {exc}")
    # (the path given too, before its suffix: RUN/m, a folder, would have become RUN/m.npz)
    if folder := next((f for f in (Path(args.out or out), out) if f.is_dir()), None):
        return _error(f"--out {folder} is a folder; give a file name (e.g. {folder / ('tracks.' + fmt)})")
    if out.exists() and not args.overwrite:
        return _error(f"{out} already written by an earlier export; pass --overwrite to replace it, or another --out")
    if out.exists() and not is_trajectory_file(out, fmt):
        return _error(f"{out} is not a {fmt} trajectory file of an earlier export, and --overwrite replaces only those: "
                      f"choose another --out (the file is left as it is)")
    run, code = _open_run(args, "there is no motion to export; train the run with --kin_enabled true")
    if run is None:
        return code
    need_scene = args.points is None or args.times == "train"
    scene = None
    try:
        if need_scene:
            scene = _load_run_scene(run.cfg, args.scene, args.downscale, ["train"])
        times = parse_times(args.times, scene, args.time)
        if args.points is not None:
            points = read_points(args.points)
            outside = outside_scene_box(run.model, points)
            if outside.any():
                box = [round(v, 3) for v in run.model.aabb.tolist()]
                i = int(outside.argmax())
                where = f"point {i}: {np.round(points[i], 3).tolist()}"
                if run.model.space.is_ndc:  # (the box is in NDC, the points in the run's world frame)
                    import torch

                    with torch.no_grad():
                        ndc = run.model.space.to_field(torch.as_tensor(points[i:i + 1], dtype=torch.float32,
                                                                       device=run.model.aabb.device))
                    where += f", in NDC {np.round(ndc[0].cpu().numpy(), 3).tolist()}"
                print(f"note: {int(outside.sum())} of the {len(points)} --points lie outside the run's scene box "
                      f"{box} ({'NDC' if run.model.space.is_ndc else 'world units'}; e.g. {where}): the kinematic "
                      f"field was not trained there, so their tracks are extrapolations" +
                      (" (--points are in the run's rescaled, recentred world frame, that of exported tracks)"
                       if run.model.space.is_ndc else ""), file=sys.stderr)
        else:
            sp = scene.split("train")
            if bad_view := _view_error(args.view, sp):
                return _error(bad_view)
            v = args.view
            points = sample_dynamic_points(run.model, sp.poses[v], sp.intrinsics[v], sp.height, sp.width, args.time,
                                           args.n_points, scene.background)
    except (DatasetError, KeyError, ValueError, FileNotFoundError, RuntimeError) as exc:
        return _error(exc)
    out.parent.mkdir(parents=True, exist_ok=True)  # (an --out that cannot be written fails now, not after integrating)
    if not os.access(out.parent, os.W_OK):
        return _error(f"--out {out}: the folder {out.parent} is not writable; write to another folder (--out)")
    locked = _note_untrained(run, ORDER_NAMES, "exported as zeros (listed as untrained_orders in npz/json files)")
    traj = compute_trajectories(run.model, points, args.time, np.asarray(times), substeps=args.substeps)
    path = write_trajectories(traj, out, fmt)
    T, N, _ = traj["positions"].shape
    print(json.dumps({"written": str(path), "n_points": N, "n_times": T, "query_time": args.time,
                      "untrained_orders": locked}, indent=2))
    return 0


@_user_errors
def main_eval_motion(argv: List[str]) -> int:
    """``tools/eval_motion.py``: score a run's motion against a synthetic scene's exact ground truth."""
    from pathlib import Path

    from .config import ToolParser
    from .motion import score_against_ground_truth
    from .motion.export import ORDER_NAMES, MotionFileError
    from .train.evaluate import update_metrics

    setup_logging()
    p = ToolParser(prog="tools/eval_motion.py",
                   description="Trajectory end-point error and v/a/j errors against motion_gt.npz; "
                               "merged into RUN_DIR/metrics.json under 'motion'.")
    p.add_argument("run_dir")
    p.add_argument("--gt", default=None, help="motion_gt.npz (default: <the run's scene>/motion_gt.npz)")
    p.add_argument("--substeps", type=int, default=4, help="RK4 steps per frame interval")
    p.add_argument("--device", default="auto", type=_device, help="cpu, cuda, cuda:N or auto")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: the run's latest)")
    args = p.parse_args(argv)
    _require_positive(p, args, "substeps")
    run, code = _open_run(args, "there is no motion to score; train the run with --kin_enabled true")
    if run is None:
        return code
    gt = Path(args.gt) if args.gt else Path(run.cfg.data.scene) / "motion_gt.npz"
    curves = {}
    try:  # the ground truth is read and checked before any integration
        scores = score_against_ground_truth(run.model, gt, substeps=args.substeps, curves=curves,
                                            scene_dir=_scene_folder(run.cfg.data.scene, gt))
    except MotionFileError as exc:
        return _error(f"--gt {exc}" if args.gt else f"the ground truth of the run's scene (no --gt given): {exc}")
    _note_untrained(run, ORDER_NAMES, "their errors are reported as null")
    scores["step"] = run.step
    update_metrics(run.run_dir, "motion", scores)
    curve_path = Path(run.run_dir) / "motion_epe_by_time.csv"
    _write_columns(curve_path, curves)
    print(json.dumps(scores, indent=2))
    print(f"end-point error over time (per object, and with no motion): {curve_path}", file=sys.stderr)
    return 0


def _write_columns(path, columns) -> None:
    """Equal-length 1-D arrays as a CSV with one column each (written to a temporary file, then renamed)."""
    import numpy as np

    from ._io import replaced_on_success

    names = list(columns)
    table = np.stack([np.asarray(columns[n], dtype=np.float64) for n in names], axis=1)
    with replaced_on_success(path) as tmp:
        np.savetxt(tmp, table, delimiter=",", header=",".join(names), comments="", fmt="%.6g")


@_user_errors
def main_plot(argv: List[str]) -> int:
    """``tools/plot.py``: PNG figures of a run (training curves, test views, motion error, tracks)."""
    from .config import ToolParser
    from .plots import PlotError, plot_run

    setup_logging()
    p = ToolParser(prog="tools/plot.py", description="Figures of a run folder into RUN_DIR/plots: "
                   "training.png (PSNR, loss terms, batch, learning rate / wall time), test_views.png, "
                   "motion_epe.png (after tools/eval_motion.py), tracks.png (exported tracks).")
    p.add_argument("run_dir", help="run folder (the --out of tools/train.py)")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/plots)")
    p.add_argument("--tracks", default=None, help="tracks from tools/export_trajectories.py, in any of its formats "
                                                  "(default: RUN_DIR/motion/tracks.npz, .ply, .json or .csv, the first "
                                                  "that exists)")
    p.add_argument("--smoothing", type=float, default=0.6, help="moving-average weight of the curves, in [0, 1)")
    args = p.parse_args(argv)
    if not 0.0 <= args.smoothing < 1.0:
        p.error("--smoothing must be in [0, 1)")
    try:
        written, problems = plot_run(args.run_dir, args.out, args.tracks, args.smoothing)
    except PlotError as exc:
        return _error(exc)
    for path in written:
        print(path)
    for problem in problems:
        _error(problem)
    return 2 if problems else 0


@_user_errors(out="--csv")
def main_compare(argv: List[str]) -> int:
    """``tools/compare.py``: a table of runs, their scores and the options in which they differ."""
    from pathlib import Path

    from .compare import SCORES, CompareError, compare_runs, markdown_report, sort_key_name, write_csv
    from .config import ToolParser

    setup_logging()
    p = ToolParser(prog="tools/compare.py", description="Runs side by side, as a Markdown table: step, training "
                   "minutes, image scores (metrics.json), motion scores (tools/eval_motion.py) and every option of "
                   "config.yaml whose value is not the same in all of them.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN", help="run folders (the --out of tools/train.py), e.g. runs/*, or a folder of "
                                                           "runs (runs/: every run in it)")
    p.add_argument("--split", default="test", help="the scored split whose image scores are shown")
    p.add_argument("--csv", default=None, help="also write the table to this CSV file")
    p.add_argument("--sort", default=None, choices=[sort_key_name(column) for column, _, _ in SCORES],
                   help="order the rows by this score, best first (highest PSNR / SSIM, lowest LPIPS / error)")
    p.add_argument("--mean-over-seeds", action="store_true",
                   help="runs that differ only in --seed make one row: each score as mean +- standard deviation")
    p.add_argument("--plot", default=None, help="also draw the runs' training curves on shared axes into this PNG "
                                                "(training and validation PSNR, the photometric loss by step and by "
                                                "training time; needs matplotlib)")
    args = p.parse_args(argv)
    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):
        return _error(f"--plot {args.plot}: give a file name ending in .png (or .pdf, .svg, .jpg)")
    try:
        table = compare_runs(args.run_dirs, args.split, mean_over_seeds=args.mean_over_seeds, sort_by=args.sort)
    except CompareError as exc:
        return _error(exc)
    print(markdown_report(table), flush=True)
    for note in table.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.csv:
        write_csv(args.csv, table.header, table.rows)
        print(f"table written to {args.csv}", file=sys.stderr)
    if args.plot:
        from .plots import PlotError, plot_runs

        try:
            written, problems = plot_runs(table.runs, table.run_names, args.plot)
        except PlotError as exc:
            return _error(exc)
        for problem in problems:
            print(f"note: {problem}", file=sys.stderr)
        print(f"figure written to {written}", file=sys.stderr)
    if table.missing:  # (the table is there, but a mistyped run must not pass unnoticed in a script)
        return _error("not found, so not in the table: " + ", ".join(map(str, table.missing)))
    return 0


@_user_errors
def main_demo(argv: List[str]) -> int:
    """``tools/demo.py``: synthetic demo scene -> training -> orbit video -> image and motion scores."""
    from pathlib import Path

    from .config import ToolParser
    from .data.synthetic import PRESETS, ensure_scene

    setup_logging()
    repo = Path(__file__).resolve().parents[1]
    p = ToolParser(prog="tools/demo.py", description=main_demo.__doc__,
                   epilog="Any other option (python tools/train.py --help) is passed to the training.")
    p.add_argument("--scene", default=str(repo / "assets" / "demo_scene"), help="where the demo scene is generated")
    p.add_argument("--config", default=str(repo / "configs" / "demo.yaml"), help="training config (YAML)")
    p.add_argument("--out", default="runs/demo", help="run folder: checkpoints, videos, metrics, tracks, figures")
    p.add_argument("--device", default="auto", type=_device,
                   help="cpu, cuda, cuda:N or auto: for training and every step after it")
    args, extra = p.parse_known_args(argv)
    device = ["--device", args.device]
    extra = device + extra  # (any other option goes to tools/train.py)
    if not Path(args.config).is_file():  # (before the scene is made)
        return _error(f"--config {args.config}: no such file (the shipped ones are in configs/)")
    try:
        scene = ensure_scene(args.scene, PRESETS["demo"])
    except FileExistsError as exc:
        return _error(f"--scene {exc}")
    log = logging.getLogger("kinfield")
    log.info("demo scene: %s", scene)
    code = main_train([str(scene), args.config, "--out", args.out] + extra)
    if code != 0:
        return code
    # velocity rather than the dynamic-only view: the demo config has no static field, so that view is the RGB one
    code = main_render([args.out, "--path", "orbit", "--frames", "48", "--outputs", "rgb,depth,velocity",
                        "--overwrite", *device])  # (a rerun of the demo replaces its own videos)
    if code != 0:
        return code
    gt = Path(scene) / "motion_gt.npz"
    if gt.is_file():
        code = main_eval_motion([args.out, "--gt", str(gt), *device])
        if code != 0:
            return code
    if main_export([args.out, "--time", "0.5", "--times", "train", "--overwrite", *device]) != 0:  # -> RUN/motion/tracks.npz
        log.warning("no 3-D tracks exported (see the error above); the other figures follow")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.info('figures skipped: pip install -e ".[plot]" (matplotlib), then python tools/plot.py %s', args.out)
    else:
        if main_plot([args.out]) != 0:  # (the run itself is done: a figure that fails does not fail the demo)
            log.warning("some figures were not drawn (see above)")
    log.info("demo finished: videos in %s/videos, metrics in %s/metrics.json, figures in %s/plots", args.out,
             args.out, args.out)
    _warn_if_cut_short(Path(args.out), log)
    return code


def _warn_if_cut_short(run_dir, log) -> None:
    """Repeat, as a run's last words, that its training stopped before its config's ``iters`` (the time cap)."""
    import yaml

    from .train.checkpoint import checkpoint_step, latest_checkpoint

    try:
        iters = int(yaml.safe_load((run_dir / "config.yaml").read_text())["iters"])
        last = latest_checkpoint(run_dir)
        step = checkpoint_step(last) if last else 0
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return
    if step < iters:
        log.warning("the training stopped at step %d of %d (--train_max_minutes, on a slower or busier machine than "
                    "the README's): these scores and videos are of a shorter run than the README's figures. "
                    "Continue it with the same command and a larger --train_max_minutes", step, iters)


@_user_errors
def main_preprocess(argv: List[str]) -> int:
    """``tools/preprocess.py``: a video (or a folder of frames) -> the NSFF layout (frames, LLFF poses from
    pycolmap SfM, sparse depth, optical flow with forward-backward masks, motion masks)."""
    from .config import ToolParser

    setup_logging()
    p = ToolParser(
        prog="tools/preprocess.py",
        description="Turn a video file or a folder of frames into the NSFF layout: images/, poses_bounds.npy "
                    "(LLFF, from SfM with pycolmap), sparse/, sparse_depth/, flow_i1/ (OpenCV DIS flow, "
                    "forward-backward masks), motion_masks/, preprocess.json.")
    p.add_argument("input", help="video file (mp4, mov, ...) or folder of frames in time order")
    p.add_argument("out_dir", help="output folder (must be empty unless --overwrite)")
    p.add_argument("--max-frames", type=int, default=None, help="keep at most this many frames (after --stride)")
    p.add_argument("--stride", type=int, default=1, help="keep every STRIDE-th source frame")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--resize-long-side", type=int, default=None, help="downscale so the long side has this many "
                                                                         "pixels (never upscales)")
    size.add_argument("--width", type=int, default=None, help="downscale to this width (never upscales)")
    p.add_argument("--camera-model", choices=["SIMPLE_PINHOLE", "SIMPLE_RADIAL"], default="SIMPLE_PINHOLE",
                   help="shared COLMAP camera; SIMPLE_RADIAL frames are undistorted before writing")
    p.add_argument("--focal", type=float, default=None, help="known focal length in output pixels (kept fixed)")
    p.add_argument("--matcher", choices=["auto", "exhaustive", "sequential"], default="auto",
                   help="auto: exhaustive up to 60 frames, sequential above")
    p.add_argument("--max-features", type=int, default=4096, help="SIFT features per frame")
    p.add_argument("--no-feature-masks", action="store_true", help="do not hide moving pixels from SfM")
    p.add_argument("--flow", choices=["dis", "farneback"], default="dis", help="optical flow method")
    p.add_argument("--flow-preset", choices=["ultrafast", "fast", "medium", "fine"], default=None,
                   help="DIS preset (default: fine up to 640 px, medium above)")
    p.add_argument("--fb-threshold", type=float, default=1.0,
                   help="forward-backward consistency threshold in pixels (plus 5%% of the flow length)")
    p.add_argument("--motion-threshold", type=float, default=None,
                   help="residual (pixels) above which flow counts as moving (default: max(1, 1%% of the long side))")
    p.add_argument("--threads", type=int, default=-1, help="threads for COLMAP and OpenCV (-1: all cores)")
    p.add_argument("--seed", type=int, default=0, help="random seed of COLMAP's RANSAC and mapper (same frames and seed: "
                   "the same poses)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs already in OUT_DIR")
    p.add_argument("--keep-work", action="store_true", help="keep the COLMAP database in OUT_DIR/sfm_work")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--verbose", action="store_true", help="show COLMAP's log")
    args = p.parse_args(argv)
    for name in ("max_frames", "resize_long_side", "width", "max_features"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.stride < 1:
        p.error("--stride must be >= 1")
    # (``not x > 0`` also refuses NaN; infinity is refused apart: each would void every flow mask or the SfM)
    if args.focal is not None and (not args.focal > 0 or math.isinf(args.focal)):
        p.error(f"--focal must be a finite number > 0 (pixels), got {args.focal}")
    if not args.fb_threshold >= 0 or math.isinf(args.fb_threshold):
        p.error(f"--fb-threshold must be a finite number >= 0 (pixels), got {args.fb_threshold}")
    if args.motion_threshold is not None and (not args.motion_threshold > 0 or math.isinf(args.motion_threshold)):
        p.error(f"--motion-threshold must be a finite number > 0 (pixels), got {args.motion_threshold}")

    from .preprocess import PreprocessError, PreprocessOptions, preprocess

    opts = PreprocessOptions(
        max_frames=args.max_frames, stride=args.stride, resize_long_side=args.resize_long_side, width=args.width,
        camera_model=args.camera_model, focal=args.focal, matcher=args.matcher, max_features=args.max_features,
        mask_features=not args.no_feature_masks, flow_method=args.flow, flow_preset=args.flow_preset,
        fb_abs_thresh=args.fb_threshold, motion_threshold=args.motion_threshold, num_threads=args.threads,
        seed=args.seed, overwrite=args.overwrite, keep_work=args.keep_work, progress=not args.no_progress,
        verbose=args.verbose)
    try:
        doc = preprocess(args.input, args.out_dir, opts)
    except PreprocessError as exc:
        return _error(exc)
    except OSError as exc:  # e.g. the output folder is not writable or the disk is full
        return _error(f"{exc}\n  fix: check that OUT_DIR is writable and the disk has space")
    except KeyboardInterrupt:
        return 130
    sfm = doc["sfm"]
    print(json.dumps({"out_dir": args.out_dir, "frames": doc["frame_count"], "size": doc["size"],
                      "focal": round(doc["focal"], 3), "registered_frames": sfm["registered_frames"],
                      "num_points3D": sfm["num_points3D"],
                      "mean_reprojection_error_px": round(sfm["mean_reprojection_error_px"], 4),
                      "timings_s": doc["timings_s"]}, indent=2))
    return 0
