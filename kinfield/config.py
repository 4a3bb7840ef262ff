"""Configuration: per-module dataclasses flattened into one configargparse parser.

Every option is declared once, as a dataclass field next to the code that uses it. Nested fields
become flat snake_case keys with their group as prefix (``static_grid_n_levels``,
``render_occupancy_resolution``); a few everyday options have short names (``--out``, ``--iters``,
``--device``, ``--seed``, ``--downscale``, ``--resume``). Precedence: command line > config file >
defaults. Unknown keys, in a file or on the command line, are errors.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import configargparse
import yaml

from .fields import FieldConfig, KinematicConfig
from .losses.kinematic import KinConfig
from .losses.photometric import PHOTOMETRIC_LOSSES
from .losses.priors import PriorConfig
from .nn import HashGridConfig
from .render import RenderConfig


@dataclass
class DataConfig:
    scene: str = field(default="", metadata={"key": "scene", "help": "dataset folder or .npz file"})
    downscale: float = field(default=1.0, metadata={"key": "downscale", "help": "image downscale factor (area)"})
    background: Tuple[float, float, float] = field(default=(1.0, 1.0, 1.0), metadata={"key": "background", "help": "RGB background in [0, 1]"})
    random_background: bool = field(default=True, metadata={"help": "composite training pixels with alpha on a random colour"})


@dataclass
class TrainConfig:
    out: str = field(default="runs/default", metadata={"key": "out", "help": "run directory"})
    iters: int = field(default=2000, metadata={"key": "iters", "help": "training steps"})
    device: str = field(default="auto", metadata={"key": "device", "help": "cpu, cuda (or cuda:N) or auto"})
    seed: int = field(default=0, metadata={
        "key": "seed", "help": "random seed of Python, NumPy and torch (initialisation, ray batches, random draws)"})
    resume: str = field(default="auto", metadata={"key": "resume", "help": "auto (latest checkpoint in --out), none, or a checkpoint path"})
    max_minutes: float = field(default=0.0, metadata={"help": "stop training after this much training time, in minutes (wall time without the periodic validation of --train_val_every; 0 = no limit)"})
    rays: int = field(default=1024, metadata={
        "help": "rays per step at the start, then adapted to --train_target_samples within [--train_min_rays, "
                "--train_max_rays] (with --train_target_samples 0: every step)"})
    min_rays: int = field(default=256, metadata={
        "help": "fewest rays per step the adapted ray count goes down to (with --train_target_samples > 0)"})
    max_rays: int = field(default=8192, metadata={
        "help": "most rays per step the adapted ray count goes up to (with --train_target_samples > 0)"})
    target_samples: int = field(default=65536, metadata={"help": "samples per step the ray count adapts to (0 = fixed rays)"})
    dynamic_ray_fraction: float = field(default=0.0, metadata={"help": "share of each batch drawn where the model last saw dynamic content (a per-pixel map, see dynamic_ray_map; these rays come first, so the kinematic warps use them); from kin_start on"})
    dynamic_ray_prior: float = field(default=0.25, metadata={"help": "dynamic probability assumed for pixels no batch has visited yet"})
    dynamic_ray_map: str = field(default="probability", metadata={"help": "what the map of --train_dynamic_ray_fraction records from kin_start on: 'probability' (each ray's dynamic probability) or 'motion' (the displacement per frame the kinematic field renders on the warp rays, 1 at --train_motion_map_cells finest dynamic-grid cells; for a dynamic field that also holds still content, e.g. with --model_use_static false)"})
    motion_map_cells: float = field(default=0.25, metadata={"help": "displacement per frame, in finest dynamic-grid cells, that --train_dynamic_ray_map motion counts as fully moving"})
    lr_grid: float = field(default=1e-2, metadata={
        "help": "learning rate of the dynamic field's hash grid (the static and kinematic grids: times "
                "--train_lr_static_factor / --train_lr_kinematic_factor)"})
    lr_net: float = field(default=1e-2, metadata={
        "help": "learning rate of the dynamic field's MLPs and the normal regressor (the static and kinematic MLPs: "
                "times --train_lr_static_factor / --train_lr_kinematic_factor)"})
    lr_static_factor: float = field(default=1.0, metadata={"help": "static field learning rates relative to lr_grid/lr_net (the reference: 0.1, so moving content goes to the faster dynamic field)"})
    lr_kinematic_factor: float = field(default=1.0, metadata={"help": "kinematic field (grid and head) learning rates relative to lr_grid/lr_net (its gradients are sparse and noisy: a lower rate averages them)"})
    lr_final_ratio: float = field(default=0.1, metadata={"help": "lr at the last step relative to the start (exponential decay)"})
    warmup: int = field(default=50, metadata={
        "help": "learning rates ramp up linearly over this many first steps (0 or 1 = no warm-up)"})
    weight_decay_net: float = field(default=1e-6, metadata={
        "help": "Adam weight decay (L2) of the static and dynamic field MLPs and the normal regressor (none on the "
                "grids and the kinematic head)"})
    loss: str = field(default="mse", metadata={"help": f"photometric loss: {', '.join(PHOTOMETRIC_LOSSES)}"})
    log_every: int = field(default=25, metadata={
        "help": "write a row of metrics.jsonl (and, without --train_progress, a log line) every this many steps"})
    save_every: int = field(default=500, metadata={
        "help": "save a checkpoint to <out>/ckpts every this many steps (and at the end, and when interrupted)"})
    keep_ckpts: int = field(default=3, metadata={"help": "newest checkpoints kept in <out>/ckpts (0 = all)"})
    val_every: int = field(default=0, metadata={"help": "every this many steps, score --train_val_views evenly spaced views of --train_val_split (PSNR and SSIM, logged to metrics.jsonl as val/psnr and val/ssim; the time it takes is not counted as training time); 0 = off"})
    val_views: int = field(default=4, metadata={
        "help": "views (at most, evenly spaced) each periodic validation scores (0 = no periodic validation)"})
    val_split: str = field(default="val", metadata={"help": "split of the periodic validation (the --train_eval_split when the scene has none of that name)"})
    eval_split: str = field(default="test", metadata={"help": "split rendered and scored at the end ('' = none)"})
    eval_lpips: bool = field(default=True, metadata={
        "help": "also score LPIPS (AlexNet) at the end, when its weights are found (false: PSNR and SSIM only)"})
    eval_max_views: int = field(default=0, metadata={"help": "score at most this many evenly spaced views of the split at the end (0 = all; tools/eval.py scores all)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    tensorboard: bool = field(default=True, metadata={
        "help": "mirror the logged values (metrics.jsonl) to TensorBoard event files in RUN/tb/ when the tensorboard "
                "package is installed (pip install tensorboard; tensorboard --logdir RUN/tb)"})


@dataclass
class ModelConfig:
    use_static: bool = field(default=True, metadata={"help": "use the static field F_ST besides F_DY"})


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    static: FieldConfig = field(default_factory=lambda: FieldConfig(grid=HashGridConfig()))
    dynamic: FieldConfig = field(default_factory=lambda: FieldConfig(grid=HashGridConfig(base_resolution=8)))
    render: RenderConfig = field(default_factory=RenderConfig)
    kin: KinConfig = field(default_factory=KinConfig)
    kinematic: KinematicConfig = field(default_factory=KinematicConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)


def _flat_fields(cls, prefix: str = "", path: Tuple[str, ...] = ()):
    """Yield ``(key, path, field, type)`` for every leaf field of a nested config dataclass."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _flat_fields(tp, f"{prefix}{f.name}_", path + (f.name,))
        else:
            yield f.metadata.get("key", f"{prefix}{f.name}"), path + (f.name,), f, tp


def _parse_bool(s: str) -> bool:
    v = str(s).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise configargparse.ArgumentTypeError(f"expected a boolean (true/false), got {s!r}")


def _parse_float(s) -> float:
    """A float option: a finite number (a NaN or infinite value, e.g. YAML's ``.nan``, is an error here rather than
    NaNs later in training)."""
    try:
        v = float(s)
    except (TypeError, ValueError):
        raise configargparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not math.isfinite(v):
        raise configargparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
    return v


def _seq_parser(inner):
    def parse(s):
        if isinstance(s, (list, tuple)):
            return tuple(inner(v) for v in s)
        s = str(s).strip().strip("[]()")
        return tuple(inner(v) for v in s.replace(",", " ").split()) if s else ()
    return parse


def _arg_type(tp):
    origin = typing.get_origin(tp)
    if origin in (tuple, list, Sequence, typing.Sequence) or tp in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis] or [float]
        return _seq_parser(_parse_float if args[0] is float else args[0])
    if tp is bool:
        return _parse_bool
    if tp is float:
        return _parse_float
    return tp


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


class _ShortErrors:
    """Parser errors that end in one short usage line (the options are for ``--help``) and name the closest option of
    a misspelt one; mixed into an ``argparse.ArgumentParser`` (every tool) or a configargparse one (training)."""

    def _error_message(self, message: str) -> str:
        import difflib

        if message.startswith("unrecognized arguments:"):
            known = [s for action in self._actions for s in action.option_strings if s.startswith("--")]
            def closest(word):  # an option it begins (options are never abbreviated), else the nearest spelling
                return ([k for k in known if k.startswith(word)] + difflib.get_close_matches(word, known, n=1,
                                                                                              cutoff=0.75))[:1]

            hints = [f"{word} (did you mean {close[0]}?)" for word in message.split(":", 1)[1].split()
                     if word.startswith("--") for close in [closest(word.split("=")[0])] if close]
            if hints:
                message += "; " + ", ".join(hints)
        return message

    def error(self, message):  # (the usage line without the option list says where that list is; --help shows it)
        usage = self.format_usage().rstrip("\n")
        self.exit(2, f"{usage} (--help lists the options)\n{self.prog}: error: {self._error_message(message)}\n")


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, unless the help already says it, or there is none to say (``None``; a
    flag's ``False``)."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False or not action.option_strings:
            return text
        return super()._get_help_string(action)


class ToolParser(_ShortErrors, argparse.ArgumentParser):
    """The parser of a tool (``tools/*.py``): defaults shown in ``--help``, no abbreviated options, and errors that end
    in one usage line: the positional arguments, then ``[options]``."""

    def __init__(self, prog: str, description: str, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsShown)
        super().__init__(prog=prog, description=description, allow_abbrev=False, **kwargs)

    def format_usage(self) -> str:
        if self.usage is not None:
            return super().format_usage()
        positional = " ".join(a.metavar or a.dest.upper() for a in self._actions if not a.option_strings)
        return f"usage: {self.prog} {positional} [options]\n"


class _OptionParser(_ShortErrors, configargparse.ArgumentParser):
    """configargparse's parser of the training options, whose errors (:class:`_ShortErrors`) also name the config file
    a bad value comes from."""

    config_file_keys: Tuple[str, Set[str]] = ("", set())  # (config file, the options only it gives)

    def _error_message(self, message: str) -> str:
        message = super()._error_message(message)
        file, keys = self.config_file_keys
        bad = re.match(r"argument --(\w+)", message)
        if bad and bad.group(1) in keys:
            message += f" (from the config file {file}: fix its {bad.group(1)} line)"
        return message


def build_parser(description: str = "kinfield", usage: Optional[str] = None) -> configargparse.ArgumentParser:
    """The parser of every option in :class:`Config` (plus ``-c/--config``); ``usage``: the one line its errors show
    (default: the program's name and ``--help``)."""
    p = _OptionParser(
        description=description,
        usage=usage or "%(prog)s [--config FILE] [--option value ...]",
        config_file_parser_class=configargparse.YAMLConfigFileParser,
        formatter_class=configargparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # else a truncated key (``train_ray: 64``) silently sets ``train_rays``
    )
    p.add_argument("-c", "--config", is_config_file=True, help="YAML config file")
    defaults = Config()
    groups: Dict[str, Any] = {}
    for key, path, f, tp in _flat_fields(Config):
        g = groups.setdefault(path[0], p.add_argument_group(path[0]))
        value = defaults
        for name in path:
            value = getattr(value, name)
        # (an option without a description still shows its default: a blank help would hide both)
        help_text = f.metadata.get("help", "default: %(default)s")
        if isinstance(value, (tuple, list)):  # "*": an empty list is a value too (save_config writes ``[]``)
            g.add_argument(f"--{key}", type=_arg_type(typing.get_args(tp)[0] if typing.get_args(tp) else float),
                           nargs="*", default=list(value), help=help_text)
        else:
            g.add_argument(f"--{key}", type=_ARG_TYPES.get(key, _arg_type(tp)), default=value, help=help_text)
    return p


def _parse_device(s: str) -> str:
    v = str(s).strip().lower()
    if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
        return v
    raise configargparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or auto, got {s!r}")


def _parse_photometric_loss(s: str) -> str:
    v = str(s).strip().lower()
    if v in PHOTOMETRIC_LOSSES:
        return v
    raise configargparse.ArgumentTypeError(f"expected {', '.join(PHOTOMETRIC_LOSSES[:-1])} or "
                                           f"{PHOTOMETRIC_LOSSES[-1]}, got {s!r}")


# options with a fixed set of values, checked while parsing (before anything is written to the run folder)
_ARG_TYPES = {"device": _parse_device, "train_loss": _parse_photometric_loss}


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"{key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def check_config_file(path) -> List[str]:
    """Refuse, naming ``path``, the key and the fix, what configargparse would take silently or report without the
    file: YAML errors, a key given twice, an unknown key (with the closest option), a key with no value (it would
    keep the default), a YAML boolean where an option takes text (``split: no`` reads as ``False``), a list where an
    option takes one value, and bytes that are not UTF-8. Returns the options the file sets. Raises SystemExit."""
    import difflib

    try:
        doc = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:  # (its marks name the text "<unicode string>": the file is named here instead)
        where = str(exc).replace('in "<unicode string>", ', "")
        raise SystemExit(f"config file {path}: {where}") from None
    except UnicodeDecodeError as exc:
        line = Path(path).read_bytes()[:exc.start].count(b"\n") + 1
        raise SystemExit(f"config file {path}: line {line} is not UTF-8 text (byte {exc.object[exc.start]:#04x}); save "
                         f"the file as UTF-8") from None
    if doc is None:
        return []
    if not isinstance(doc, dict):
        raise SystemExit(f"config file {path}: expected 'option: value' lines (a YAML mapping), got a "
                         f"{type(doc).__name__}")
    types = {key: tp for key, _, _, tp in _flat_fields(Config)}
    for key, value in doc.items():
        if key not in types:
            close = difflib.get_close_matches(str(key), list(types), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SystemExit(f"config file {path}: unknown option {key!r}{hint}; python tools/train.py --help lists them")
        if value is None:
            raise SystemExit(f"config file {path}: {key} has no value; give one, or delete the line to keep the default")
        tp = types[key]
        is_list = typing.get_origin(tp) in (tuple, list, Sequence, typing.Sequence) or tp in (tuple, list)
        if isinstance(value, (list, dict)) and not is_list:
            one = value[0] if isinstance(value, list) and len(value) == 1 else "VALUE"
            raise SystemExit(f"config file {path}: {key} takes one value, got {value!r}; write {key}: {one}")
        if types[key] is str and isinstance(value, bool):
            raise SystemExit(f"config file {path}: {key}: YAML reads the bare word as the boolean {value}; quote the "
                             f"text (\"{'yes' if value else 'no'}\") or give '' for none")
    return list(doc)


def config_from_namespace(ns) -> Config:
    """Build a :class:`Config` from a parsed namespace (flat keys)."""
    values = vars(ns)

    def build(cls, prefix_path: Tuple[str, ...]):
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                kwargs[f.name] = build(tp, prefix_path + (f.name,))
            else:
                key = f.metadata.get("key", "_".join(prefix_path + (f.name,)))
                v = values[key]
                kwargs[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)

    return build(Config, ())


def parse_args(argv: Optional[List[str]] = None, description: str = "kinfield") -> Config:
    """Parse ``argv`` (config file + overrides) into a :class:`Config`."""
    return config_from_namespace(build_parser(description).parse_args(argv))


def _train_parser() -> configargparse.ArgumentParser:
    return build_parser("kinfield training: tools/train.py SCENE CONFIG [--option value ...]",
                        usage="python tools/train.py SCENE CONFIG [--option value ...]")


def parse_train_args(argv: List[str]) -> Config:
    """``SCENE CONFIG [overrides]`` as taken by ``tools/train.py``."""
    if len(argv) >= 1 and argv[0] in ("-h", "--help"):
        _train_parser().print_help()
        raise SystemExit(0)
    argv = list(argv)
    if len(argv) >= 2 and not argv[0].startswith("-") and argv[1].startswith("--config="):  # (what --help lists)
        argv[1:2] = [argv[1].split("=", 1)[1]]
    elif len(argv) >= 3 and not argv[0].startswith("-") and argv[1] in ("-c", "--config"):
        argv[1:3] = [argv[2]]
    if len(argv) < 2 or argv[0].startswith("-") or argv[1].startswith("-"):
        raise SystemExit("usage: python tools/train.py SCENE CONFIG [--option value ...]\n"
                         "  SCENE: a D-NeRF scene folder, a forward-facing capture (tools/preprocess.py output) or a .npz "
                         "file; CONFIG: a YAML file from configs/")
    scene, cfg_file = argv[0], argv[1]
    if not Path(cfg_file).is_file():
        swapped = Path(scene).suffix in (".yaml", ".yml") and Path(scene).is_file()
        raise SystemExit(f"config file not found: {cfg_file} (the shipped ones are in configs/)"
                         + ("; the arguments are SCENE CONFIG, in that order" if swapped else ""))
    from_file = check_config_file(cfg_file)
    parser = _train_parser()
    given = {a[2:].split("=")[0] for a in argv[2:] if a.startswith("--")}
    parser.config_file_keys = (cfg_file, set(from_file) - given)
    cfg = config_from_namespace(parser.parse_args(["--config", cfg_file, "--scene", scene] + list(argv[2:])))
    # the scene as an absolute path (also one given as --scene): the tools read the run's config from other folders
    cfg.data.scene = str(Path(cfg.data.scene).expanduser().absolute())
    return cfg


def to_flat_dict(cfg: Config) -> Dict[str, Any]:
    """``{flat key: value}`` of every option (tuples as lists), the format of a config file."""
    out = {}
    for key, path, _, _ in _flat_fields(Config):
        v = cfg
        for name in path:
            v = getattr(v, name)
        out[key] = list(v) if isinstance(v, tuple) else v
    return out


def from_flat_dict(flat: Dict[str, Any], strict: bool = True) -> Config:
    """Inverse of :func:`to_flat_dict` (missing keys take their defaults).

    ``strict=False`` (opening a saved run) skips keys this version no longer has, with a warning,
    so a run from an older version still renders, evaluates and exports.
    """
    ns = build_parser().parse_args([])
    unknown = []
    for k, v in flat.items():
        if not hasattr(ns, k):
            if strict:
                raise KeyError(f"unknown config key {k!r}")
            unknown.append(k)
            continue
        setattr(ns, k, v)
    if unknown:
        import logging

        logging.getLogger("kinfield").warning("ignoring options this version does not have: %s", ", ".join(unknown))
    return config_from_namespace(ns)


def save_config(cfg: Config, path) -> None:
    """Write the resolved config as YAML (re-parses to the same values with ``--config``)."""
    Path(path).write_text(yaml.safe_dump(to_flat_dict(cfg), sort_keys=False))
