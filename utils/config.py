"""Training recipes (cfg/*.yaml): strict loading into a frozen config, and atomic saving.

The key layout is the official one, so configs written for the official example load:

    weight_decay, momentum, epochs, label_smoothing, loss_scaling, mixup: numbers
    cutmix: 0, mixup_switch_prob: 0.5   # optional, ours: CutMix's alpha, and with both on
                                        # the probability that a batch is a CutMix one
    lr_scheduler:
      type: EpochStepLearningRateScheduler | EpochCosineLearningRateScheduler
            (the short forms EpochStep / EpochCosine are accepted)
      args: the schedule's arguments (see utils.lr_schedules), e.g. base_lr, warmup_epochs
      per_iteration: false   # optional, ours: evaluate the schedule at fractional epochs
    progressive_resizing: {start: 128, end: 224, start_epoch: 0, end_epoch: 80}  # optional
    augmentation:            # optional, ours (defaults: the official augmentation)
      random_area: [0.08, 1.0]          # of the random-resized crop
      random_aspect_ratio: [0.75, 1.333]
      policy: none   # or randaugment (with n, m), trivialaugment, autoaugment

An empty (or absent) cosine `args.epochs` is filled with the top-level `epochs`, itself
replaced by `epochs_override` (train.py's --epochs). Every mistake -- unknown or misspelt
key, wrong type, missing key, unknown scheduler, malformed YAML, missing file -- is a
one-line `ConfigError` naming the file.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import yaml

from .atomic import atomic_write_text
from .augmentation import OFFICIAL, POLICIES, Augmentation, ProgressiveResizing
from .batch_mixing import DEFAULT_SWITCH_PROB
from .errors import UserError
from .lr_schedules import SCHEDULE_ALIASES, SCHEDULE_TYPES, SchedulerConfig

PathLike = Union[str, "os.PathLike[str]"]


class ConfigError(UserError, ValueError):
    """A training config that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class TrainConfig:
    """A validated training recipe; `epochs` and the cosine `lr_scheduler.args.epochs` are final.

    `source` (the file it was read from) is informational and ignored by equality.
    """

    weight_decay: float
    momentum: float
    epochs: int
    label_smoothing: float
    loss_scaling: float
    mixup: float
    lr_scheduler: SchedulerConfig
    augmentation: Augmentation = OFFICIAL
    cutmix: float = 0.0
    mixup_switch_prob: float = DEFAULT_SWITCH_PROB
    progressive_resizing: Optional[ProgressiveResizing] = None
    source: str = field(default="", compare=False)

    def to_dict(self) -> Dict[str, Any]:
        """Plain YAML-ready data in the official key layout (what `save_config` writes)."""
        args = dataclasses.asdict(self.lr_scheduler.args)
        args = {key: list(v) if isinstance(v, tuple) else v for key, v in args.items()}
        data = {
            **{name: getattr(self, name) for name in _TOP_LEVEL},
            "lr_scheduler": {
                "type": self.lr_scheduler.type,
                "args": args,
                "per_iteration": self.lr_scheduler.per_iteration,
            },
        }
        for name, (_, default) in _OPTIONAL_TOP_LEVEL.items():  # ours: only when set
            if getattr(self, name) != default:
                data[name] = getattr(self, name)
        if self.progressive_resizing is not None:
            data["progressive_resizing"] = dataclasses.asdict(self.progressive_resizing)
        if self.augmentation != OFFICIAL:  # (absent from the official recipes and runs)
            data["augmentation"] = {k: list(v) if isinstance(v, tuple) else v
                                    for k, v in dataclasses.asdict(self.augmentation).items()}
        return data


class _Invalid(Exception):
    """A problem found while validating; `load_config` prefixes the file name."""


# PyYAML follows YAML 1.1, where a float needs a dot: `1e-4` would load as a string. This
# loader replaces the float resolver with one that also accepts exponent-only forms.
class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        """Refuse a key given twice in one mapping, which YAML forbids: PyYAML keeps the last
        value silently, so an edit of the first one would change nothing."""
        first: Dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may override
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                mark = first.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: PyYAML names it below
                continue
            if mark is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (first on line {mark.line + 1})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_FLOAT_TAG = "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"'{key}' must be a number, got {_describe(value)}")
    if not math.isfinite(value):
        raise _Invalid(f"'{key}' must be finite, got {value!r}")
    return float(value)


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"'{key}' must be an integer, got {_describe(value)}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"'{key}' must be true or false, got {_describe(value)}")
    return value


def _int_tuple(value: Any, key: str) -> Tuple[int, ...]:
    if not isinstance(value, list):
        raise _Invalid(f"'{key}' must be a list of integers, got {_describe(value)}")
    return tuple(_int(item, f"{key}[{i}]") for i, item in enumerate(value))


# key -> (converter, condition on the converted value, the condition in words)
_Rule = Tuple[Callable[[Any, str], Any], Callable[[Any], bool], str]
_TOP_LEVEL: Dict[str, _Rule] = {
    "weight_decay": (_float, lambda v: v >= 0, ">= 0"),
    "momentum": (_float, lambda v: 0 <= v < 1, "in [0, 1)"),
    "epochs": (_int, lambda v: v >= 1, ">= 1"),
    "label_smoothing": (_float, lambda v: 0 <= v < 1, "in [0, 1)"),
    "loss_scaling": (_float, lambda v: v > 0, "> 0"),
    "mixup": (_float, lambda v: v >= 0, ">= 0 (0 disables mixup)"),
}
# Ours, absent from the official recipes: (rule, default).
_OPTIONAL_TOP_LEVEL: Dict[str, Tuple[_Rule, Any]] = {
    "cutmix": ((_float, lambda v: v >= 0, ">= 0 (0 disables CutMix)"), 0.0),
    "mixup_switch_prob": ((_float, lambda v: 0 <= v <= 1, "in [0, 1]"), DEFAULT_SWITCH_PROB),
}
_SCHEDULER_KEYS = ("type", "args", "per_iteration")
_ARGS: Dict[str, _Rule] = {
    "base_lr": (_float, lambda v: v > 0, "> 0"),
    "epochs": (_int, lambda v: v >= 1, ">= 1"),
    "warmup_epochs": (_int, lambda v: v >= 0, ">= 0"),
    "decay_at": (_int_tuple, lambda v: all(e >= 0 for e in v), "a list of epochs >= 0"),
    "decay_rate": (_float, lambda v: v > 0, "> 0"),
    "legacy_warmup": (_bool, lambda v: True, ""),
}


def _check(rules: Mapping[str, _Rule], key: str, value: Any, where: str) -> Any:
    convert, condition, words = rules[key]
    converted = convert(value, where)
    if not condition(converted):
        raise _Invalid(f"'{where}' must be {words}, got {value!r}")
    return converted


def _reject_unknown(section: Mapping[str, Any], valid: Iterable[str], where: str) -> None:
    valid = list(valid)
    for key in section:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _Invalid(
                f"unknown key '{key}' in {where}{hint}; valid keys: {', '.join(valid)}"
            )


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"{where} must be a mapping of keys to values, got {_describe(value)}")
    return value


def _parse_scheduler(section: Any, epochs: int) -> SchedulerConfig:
    section = _mapping(section, "'lr_scheduler'")
    _reject_unknown(section, _SCHEDULER_KEYS, "'lr_scheduler'")
    for key in ("type", "args"):
        if key not in section:
            raise _Invalid(f"missing required key 'lr_scheduler.{key}'")
    name = section["type"]
    name = SCHEDULE_ALIASES.get(name, name) if isinstance(name, str) else None
    if name not in SCHEDULE_TYPES:
        names = ", ".join([*SCHEDULE_TYPES, *SCHEDULE_ALIASES])
        raise _Invalid(f"unknown lr_scheduler type {section['type']!r}; valid types: {names}")
    cls = SCHEDULE_TYPES[name]
    args = dict(_mapping(section["args"] or {}, "'lr_scheduler.args'"))
    fields = dataclasses.fields(cls)
    _reject_unknown(args, [f.name for f in fields], f"'lr_scheduler.args' of {name}")
    if any(f.name == "epochs" for f in fields) and args.get("epochs") is None:
        args["epochs"] = epochs
    checked: Dict[str, Any] = {}
    for f in fields:
        value = args.get(f.name)
        if value is None:
            if f.default is dataclasses.MISSING:
                raise _Invalid(f"missing or empty required key 'lr_scheduler.args.{f.name}'")
            continue
        checked[f.name] = _check(_ARGS, f.name, value, f"lr_scheduler.args.{f.name}")
    per_iteration = _bool(section.get("per_iteration", False), "lr_scheduler.per_iteration")
    return SchedulerConfig(args=cls(**checked), per_iteration=per_iteration)


def _range(value: Any, key: str, condition: Callable[[float, float], bool], words: str
           ) -> Tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise _Invalid(f"'{key}' must be a list [low, high], got {_describe(value)}")
    low, high = (_float(v, key) for v in value)
    if not condition(low, high):
        raise _Invalid(f"'{key}' must be {words}, got {value!r}")
    return low, high


def _parse_augmentation(section: Any) -> Augmentation:
    section = _mapping(section, "'augmentation'")
    _reject_unknown(section, [f.name for f in dataclasses.fields(Augmentation)],
                    "'augmentation'")
    values: Dict[str, Any] = {}
    if section.get("random_area") is not None:
        values["random_area"] = _range(section["random_area"], "augmentation.random_area",
                                       lambda lo, hi: 0 < lo <= hi <= 1, "0 < low <= high <= 1")
    if section.get("random_aspect_ratio") is not None:
        values["random_aspect_ratio"] = _range(
            section["random_aspect_ratio"], "augmentation.random_aspect_ratio",
            lambda lo, hi: 0 < lo <= hi, "0 < low <= high")
    if section.get("policy") is not None:
        policy = section["policy"]
        if policy not in POLICIES:
            close = difflib.get_close_matches(str(policy), POLICIES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _Invalid(f"unknown augmentation.policy {policy!r}{hint}; valid policies: "
                           f"{', '.join(POLICIES)}")
        values["policy"] = policy
    for key, low, high in (("n", 1, 10), ("m", 0, 30)):
        if section.get(key) is not None:
            values[key] = _int(section[key], f"augmentation.{key}")
            if not low <= values[key] <= high:
                raise _Invalid(f"'augmentation.{key}' must be in {low}..{high}, got "
                               f"{values[key]}")
            # Only RandAugment reads n and m. (A saved config holds the defaults whatever the
            # policy, so those are accepted: they change nothing.)
            policy = values.get("policy", OFFICIAL.policy)
            if policy != "randaugment" and values[key] != getattr(OFFICIAL, key):
                raise _Invalid(f"'augmentation.{key}' is a setting of policy randaugment; "
                               f"policy {policy} ignores it: remove it or choose randaugment")
    return Augmentation(**values)


def _parse_resizing(section: Any) -> ProgressiveResizing:
    section = _mapping(section, "'progressive_resizing'")
    names = [f.name for f in dataclasses.fields(ProgressiveResizing)]
    _reject_unknown(section, names, "'progressive_resizing'")
    values = {}
    for name in names:
        if section.get(name) is None:
            raise _Invalid(f"missing or empty required key 'progressive_resizing.{name}'")
        values[name] = _int(section[name], f"progressive_resizing.{name}")
    if min(values["start"], values["end"]) < 8:
        raise _Invalid("'progressive_resizing' sizes must be >= 8 pixels")
    if not 0 <= values["start_epoch"] <= values["end_epoch"]:
        raise _Invalid("'progressive_resizing' needs 0 <= start_epoch <= end_epoch")
    return ProgressiveResizing(**values)


def _parse(data: Any, epochs_override: Optional[int]) -> Dict[str, Any]:
    if data is None:
        raise _Invalid("the config is empty")
    data = _mapping(data, "the config")
    _reject_unknown(data, [*_TOP_LEVEL, *_OPTIONAL_TOP_LEVEL, "lr_scheduler", "augmentation",
                           "progressive_resizing"], "the top level")
    if epochs_override is not None:
        data = {**data, "epochs": _check(_TOP_LEVEL, "epochs", epochs_override, "--epochs")}
    values: Dict[str, Any] = {}
    for key in [*_TOP_LEVEL, "lr_scheduler"]:
        if data.get(key) is None:
            raise _Invalid(f"missing or empty required key '{key}'")
        if key != "lr_scheduler":
            values[key] = _check(_TOP_LEVEL, key, data[key], key)
    values["lr_scheduler"] = _parse_scheduler(data["lr_scheduler"], values["epochs"])
    for key, (rule, _) in _OPTIONAL_TOP_LEVEL.items():
        if data.get(key) is not None:
            values[key] = _check({key: rule}, key, data[key], key)
    if data.get("augmentation") is not None:
        values["augmentation"] = _parse_augmentation(data["augmentation"])
    if data.get("progressive_resizing") is not None:
        values["progressive_resizing"] = _parse_resizing(data["progressive_resizing"])
    return values


def recipe_warnings(config: TrainConfig) -> List[str]:
    """What in a valid recipe the run it drives will not do: a warm-up or a progressive
    resizing that does not end within the run's epochs (meant, perhaps, in a run shortened
    with --epochs to try a recipe out; said once, at the start)."""
    warnings = []
    epochs, where = config.epochs, config.source or "the config"
    warmup = getattr(config.lr_scheduler.args, "warmup_epochs", 0)
    if warmup >= epochs:
        warnings.append(f"warning: {where}: the warm-up of {warmup} epochs covers the whole "
                        f"run of {epochs}: the learning rate never leaves it")
    resizing = config.progressive_resizing
    if resizing is not None and resizing.end_epoch >= epochs and \
            resizing.resolution(epochs - 1) != resizing.resolution(resizing.end_epoch):
        warnings.append(f"warning: {where}: progressive resizing reaches "
                        f"{resizing.resolution(resizing.end_epoch)} px at "
                        f"epoch {resizing.end_epoch}, after the run's last epoch "
                        f"({epochs - 1}), which trains at {resizing.resolution(epochs - 1)} px")
    return warnings


def _read_yaml(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.load(stream, Loader=_Loader)  # a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: config file is not UTF-8 text: {exc.reason}") from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None


def load_config(path: PathLike, epochs_override: Optional[int] = None) -> TrainConfig:
    """Read and validate a training recipe; `epochs_override` replaces the top-level `epochs`."""
    path = os.fspath(path)
    data = _read_yaml(path)
    try:
        values = _parse(data, epochs_override)
    except _Invalid as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return TrainConfig(**values, source=path)


def save_config(config: TrainConfig, path: PathLike) -> None:
    """Write the effective config as YAML that `load_config` reads back equal.

    Written atomically (utils.atomic); missing parent directories are created.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    header = f"# Effective training configuration (from {config.source or 'memory'}).\n"
    text = header + yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)
    atomic_write_text(path, text)


__all__ = ["ConfigError", "TrainConfig", "load_config", "recipe_warnings", "save_config"]
