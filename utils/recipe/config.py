"""Training recipes (cfg/*.yaml): strict loading into a frozen config, and atomic saving.

The key layout is the official one, so configs written for the official example load; ours
are optional additions. Each key is declared once, in `TrainConfig` and the sections it holds
(`utils.data.augmentation`, `utils.recipe.schedules`, in the vocabulary of `utils.recipe.fields`);
`utils.recipe.key_table` renders them as docs/recipe-keys.md's table.

An empty (or absent) cosine `args.epochs` is filled with the top-level `epochs`, itself
replaced by `epochs_override` (train.py's --epochs). Every mistake -- unknown or misspelt
key, wrong type, value out of bounds, missing key, unknown scheduler, malformed YAML, missing
file -- is a one-line `ConfigError` naming the file and, where it can, the key's line.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml
from pydantic import Field, TypeAdapter, ValidationError, model_validator
from typing_extensions import Annotated, Literal, get_args, get_origin

from ..process.atomic import atomic_write_text
from ..process.errors import UserError
from .augmentation import OFFICIAL, Augmentation, ProgressiveResizing
from .fields import (
    SAVED_WHEN_SET,
    FilledFrom,
    Integer,
    Number,
    as_data,
    bound_words,
    declared_key,
    keys,
    recipe,
    rule_error,
    type_words,
    union_choices,
    unwrap,
)
from .schedules import SCHEDULE_ALIASES, SCHEDULE_TYPES, SchedulerConfig, with_official_type
from .solvers import MomentumSolverSection, SolverSection

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_SWITCH_PROB = 0.5  # timm's mixup_switch_prob
# DeiT's soft distillation defaults (facebookresearch/deit main.py: --distillation-alpha 0.5,
# --distillation-tau 1.0).
DEFAULT_DISTILLATION_ALPHA = 0.5
DEFAULT_DISTILLATION_TEMPERATURE = 1.0
Loss = Literal["cross_entropy", "bce"]


class ConfigError(UserError, ValueError):
    """A training config that cannot be used; the message is one line naming the file."""


@recipe
class TrainConfig:
    """A validated training recipe; `epochs` and the cosine `lr_scheduler.args.epochs` are final.

    Each field declares a top-level key (see `utils.recipe.fields`). `source` (the file it was
    read from) is informational, not a key, and ignored by equality.
    """

    weight_decay: Annotated[Number, Field(
        ge=0, description="weight decay of the solver's kind (see solver), not on the "
                          "parameters of solver.exclude_from_decay")]
    momentum: Annotated[Number, Field(ge=0, lt=1, description="the momentum of the momentum, "
                                                              "nesterov and lars solvers")]
    epochs: Annotated[Integer, Field(ge=1, description="the run's length; train.py's --epochs "
                                                       "overrides it")]
    label_smoothing: Annotated[Number, Field(ge=0, lt=1, description="weight of the uniform-"
                                                                     "label term of the loss")]
    loss_scaling: Annotated[Number, Field(gt=0, description="static loss scale, in mixed "
                                                            "precision (-t half) only")]
    mixup: Annotated[Number, Field(ge=0, description="mixup's Beta(α, α); 0 disables it")]
    lr_scheduler: Annotated[SchedulerConfig, Field(description="the learning-rate schedule")]
    cutmix: Annotated[Number, Field(ge=0, description="CutMix's Beta(α, α); 0 disables it"),
                      SAVED_WHEN_SET] = 0.0
    mixup_switch_prob: Annotated[Number, Field(
        ge=0, le=1, description="with mixup and CutMix on: the probability that a batch is a "
                                "CutMix one"), SAVED_WHEN_SET] = DEFAULT_SWITCH_PROB
    augmentation: Annotated[Augmentation, Field(
        description="the training augmentation"), SAVED_WHEN_SET] = OFFICIAL
    progressive_resizing: Annotated[Optional[ProgressiveResizing], Field(
        description="FFCV's progressive resizing of the training images"),
        SAVED_WHEN_SET] = None
    val_resize: Annotated[Optional[Integer], Field(
        ge=8, description="the run's validation resizes the shorter side to this many pixels, "
                          "then takes the centre crop of --spatial-size (FixRes); absent: the "
                          "architecture's crop_pct"), SAVED_WHEN_SET] = None
    solver: Annotated[SolverSection, Field(
        description="the solver and its keys; weight_decay is coupled L2 for momentum and "
                    "nesterov, decoupled for adamw (w -= weight_decay * lr / base_lr * w a step: "
                    "PyTorch's weight_decay times base_lr) and lamb, inside the trust ratio "
                    "for lars"),
        SAVED_WHEN_SET] = MomentumSolverSection()
    loss: Annotated[Loss, Field(
        description="the training loss: cross_entropy (softmax), or bce (timm's binary "
                    "cross-entropy per class, on the same smoothed and mixed targets)"),
        SAVED_WHEN_SET] = "cross_entropy"
    bce_target_threshold: Annotated[Optional[Number], Field(
        ge=0, lt=1, description="loss bce: targets above it become 1, the others 0 (timm's "
                                "target_threshold); absent: the soft targets"),
        SAVED_WHEN_SET] = None
    drop_path_rate: Annotated[Number, Field(
        ge=0, lt=1, description="stochastic depth (ResNet family): the probability that the "
                                "last block's branch is dropped, linear from 0 at the first"),
        SAVED_WHEN_SET] = 0.0
    distillation_alpha: Annotated[Number, Field(
        ge=0, le=1, description="with train.py --teacher: the weight α of the distillation "
                                "term, (1 - α) · loss + α · T² · KL(teacher || student)"),
        SAVED_WHEN_SET] = DEFAULT_DISTILLATION_ALPHA
    distillation_temperature: Annotated[Number, Field(
        gt=0, description="with --teacher: the temperature T of both softmaxes of the "
                          "distillation term"),
        SAVED_WHEN_SET] = DEFAULT_DISTILLATION_TEMPERATURE
    source: str = dataclasses.field(default="", compare=False, init=False)

    @model_validator(mode="after")
    def _threshold_of_bce(self) -> TrainConfig:
        """The target threshold is a setting of the BCE loss only."""
        if self.bce_target_threshold is not None and self.loss != "bce":
            raise rule_error(f"is a setting of loss bce; loss {self.loss} ignores it: remove "
                             "it or choose bce", "bce_target_threshold")
        return self

    @model_validator(mode="before")
    @classmethod
    def _fill_from_the_top_level(cls, data: Any) -> Any:
        """An empty or absent schedule argument marked `FilledFrom` (the cosine `epochs`) takes
        the top-level key's value."""
        if not isinstance(data, dict):
            return data
        section = with_official_type(data.get("lr_scheduler"))
        name = section.get("type") if isinstance(section, dict) else None
        if not isinstance(name, str) or name not in SCHEDULE_TYPES \
                or not isinstance(section.get("args"), dict):
            return data
        args = dict(section["args"])
        for key, declared in _schedule_of(SCHEDULE_TYPES[name]).__pydantic_fields__.items():
            for marker in declared.metadata:
                if isinstance(marker, FilledFrom) and args.get(key) is None \
                        and data.get(marker.key) is not None:
                    args[key] = data[marker.key]
        return {**data, "lr_scheduler": {**section, "args": args}}

    def to_dict(self) -> Dict[str, Any]:
        """Plain YAML-ready data in the official key layout (what `save_config` writes); our
        optional keys only when set."""
        return as_data(self)

    def with_epochs(self, epochs: int) -> TrainConfig:
        """This recipe for a run of `epochs` epochs (-e, which a resumed run may change): a
        schedule argument filled from the top-level `epochs` (`FilledFrom`) follows them
        where it equalled them."""
        schedule = self.lr_scheduler.args
        follows = {name: epochs for name, declared in type(schedule).__pydantic_fields__.items()
                   if getattr(schedule, name) == self.epochs and any(
                       isinstance(m, FilledFrom) and m.key == "epochs" for m in declared.metadata)}
        scheduler = dataclasses.replace(self.lr_scheduler,
                                        args=dataclasses.replace(schedule, **follows))
        config = dataclasses.replace(self, epochs=epochs, lr_scheduler=scheduler)
        object.__setattr__(config, "source", self.source)  # (not a key: not replaced)
        return config


_ADAPTER = TypeAdapter(TrainConfig)


def _schedule_of(section: type) -> type:
    """The schedule class (`args`) of an `lr_scheduler` section class."""
    return section.__pydantic_fields__["args"].annotation


class _NullKey(yaml.YAMLError):
    """A mapping key YAML reads as null (`null:`, `~:`, `: value`), which pydantic named
    'None', without its line."""

    def __init__(self, node: yaml.Node):
        super().__init__()
        self.line = node.start_mark.line + 1
        self.text = node.value if isinstance(node, yaml.ScalarNode) else ""


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
            if key is None:
                raise _NullKey(key_node)
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


# --- A pydantic error in the recipe's words: the key, what is wrong with it, and its line. ---

_Path = List[Union[str, int]]


@dataclasses.dataclass
class _Place:
    """Where a pydantic error location points in the file."""

    path: _Path = dataclasses.field(default_factory=list)  # keys and list indexes
    section: type = TrainConfig                          # the section holding path[-1]
    core: Any = TrainConfig                              # the type declared at path
    metadata: List[Any] = dataclasses.field(default_factory=list)
    schedule: Optional[str] = None                       # the lr_scheduler type on the way


def _place(loc: Sequence[Union[str, int]]) -> _Place:
    place = _Place()
    for element in loc:
        choices = union_choices(place.core)
        if element in choices:  # the union's tag, not a key of the file
            place.core, place.schedule = choices[element], str(element)
            continue
        if dataclasses.is_dataclass(place.core):
            place.section = place.core
            place.core, place.metadata = declared_key(place.core, str(element)) \
                if element in place.core.__pydantic_fields__ else (None, [])
        elif get_origin(place.core) is tuple and isinstance(element, int):
            items = get_args(place.core)
            item = items[0] if items[-1] is Ellipsis else items[min(element, len(items) - 1)]
            place.core, place.metadata = unwrap(item)
        else:
            place.core, place.metadata = None, []
        place.path.append(element)
    return place


def _dotted(path: _Path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" if i else p
                   for i, p in enumerate(path))


def _hint(value: Any, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(value), valid, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _plural(noun: str) -> str:
    return noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" \
        else noun + "s"


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


_UNKNOWN_KEY = ("unexpected_keyword_argument", "extra_forbidden", "invalid_key")
_OUT_OF_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _problem(error: Dict[str, Any], place: _Place, key: str) -> str:
    """One pydantic error in our words (the file and line are added by the caller)."""
    kind, value = error["type"], error["input"]
    if kind == "missing":
        return f"missing or empty required key '{key}'"
    if kind in _UNKNOWN_KEY:
        valid = [f.name for f in keys(place.section)]
        where = f"'{_dotted(place.path[:-1])}'" if len(place.path) > 1 else "the top level"
        if place.schedule and place.section not in SCHEDULE_TYPES.values():
            where += f" of {place.schedule}"
        return (f"unknown key '{place.path[-1]}' in {where}{_hint(place.path[-1], valid)}; "
                f"valid keys: {', '.join(valid)}")
    if kind == "union_tag_not_found":
        return f"missing or empty required key '{key}.type'"
    if kind == "union_tag_invalid":
        valid = list(union_choices(place.core))
        if place.path == ["lr_scheduler"]:
            valid += SCHEDULE_ALIASES
        return (f"unknown {key} type {value['type']!r}{_hint(value['type'], valid)}; "
                f"valid types: {', '.join(valid)}")
    if kind == "literal_error":
        valid = [str(v) for v in get_args(place.core)]
        return (f"unknown {key} {value!r}{_hint(value, valid)}; valid "
                f"{_plural(str(place.path[-1]))}: {', '.join(valid)}")
    if kind == "rule":
        return f"'{key}' {error['msg']}"
    if kind == "finite_number":
        return f"'{key}' must be finite, got {value!r}"
    if kind in _OUT_OF_BOUNDS:
        return f"'{key}' must be {bound_words(place.core, place.metadata)}, got {value!r}"
    subject = f"'{key}'" if place.path else "the config"
    return f"{subject} must be {type_words(place.core)[1]}, got {_describe(value)}"


def _line(node: Optional[yaml.Node], path: _Path) -> Optional[int]:
    """The line (1-based) of the last key of `path` found in the composed YAML file."""
    line = None
    for element in path:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value
                     if isinstance(k, yaml.ScalarNode) and k.value == str(element)]
            if not found:
                break
            key_node, node = found[-1]
            line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(element, int) \
                and element < len(node.value):
            node = node.value[element]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _message(path: str, exc: ValidationError, node: Optional[yaml.Node],
             overridden: bool) -> str:
    """The one line of a failed validation: the file, the line of the key when known, the
    first problem (an unknown key first: a misspelt key is also a missing one)."""
    errors = exc.errors()
    error = next((e for e in errors if e["type"] in _UNKNOWN_KEY), errors[0])
    place = _place(error["loc"])
    if error["type"] == "rule" and "key" in error.get("ctx", {}):
        place = _place([*error["loc"], error["ctx"]["key"]])
    key = _dotted(place.path)
    if overridden and place.path == ["epochs"]:  # the value came from train.py's --epochs
        return f"{path}: {_problem(error, place, '--epochs')}"
    # The line of the offending key (a scheduler's `type`, of the union's tag).
    line = _line(node, [*place.path, "type"] if error["type"].startswith("union_tag")
                 else place.path)
    where = path if line is None else f"{path}, line {line}"
    return f"{where}: {_problem(error, place, key)}"


# --- Reading, checking and saving a recipe file. ---


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


def _read_yaml(path: str) -> Tuple[Any, Optional[yaml.Node]]:
    """The file's data and its composed node tree (whose marks give the keys' lines)."""
    try:
        with open(path, encoding="utf-8") as stream:
            loader = _Loader(stream)  # a SafeLoader subclass
            try:
                node = loader.get_single_node()
                return (None if node is None else loader.construct_document(node)), node
            finally:
                loader.dispose()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: config file is not UTF-8 text: {exc.reason}") from None
    except _NullKey as exc:
        raise ConfigError(f"{path}, line {exc.line}: key {exc.text!r} is YAML's null, not a "
                          "name: remove it, or quote it") from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None


def _without_empty(data: Any) -> Any:
    """The data with empty values (`key:` alone) left out: an empty key is an absent one."""
    if isinstance(data, dict):
        return {k: _without_empty(v) for k, v in data.items() if v is not None}
    return data


def load_config(path: PathLike, epochs_override: Optional[int] = None) -> TrainConfig:
    """Read and validate a training recipe; `epochs_override` (train.py's --epochs) then
    replaces the top-level `epochs`: the file's own `epochs` is checked first, so that a
    wrong one is reported even when -e would replace it."""
    path = os.fspath(path)
    data, node = _read_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: the config is empty")
    data = _without_empty(data)
    as_written = data
    if epochs_override is not None and isinstance(data, dict) and "epochs" not in data:
        as_written = {**data, "epochs": epochs_override}  # (-e fills an absent epochs)
    try:
        config = _ADAPTER.validate_python(as_written)
    except ValidationError as exc:
        raise ConfigError(_message(path, exc, node, as_written is not data)) from None
    if epochs_override is not None and as_written is data:  # a valid file, -e replacing
        try:
            config = _ADAPTER.validate_python({**data, "epochs": epochs_override})
        except ValidationError as exc:
            raise ConfigError(_message(path, exc, node, True)) from None
    object.__setattr__(config, "source", path)  # not a key of the file: set after validation
    return config


def config_from_data(data: Dict[str, Any], source: str) -> TrainConfig:
    """A recipe from its `to_dict()` data (a run's saved identity); `source` names it in the
    one-line error."""
    try:
        config = _ADAPTER.validate_python(_without_empty(data))
    except ValidationError as exc:
        raise ConfigError(_message(source, exc, None, False)) from None
    object.__setattr__(config, "source", source)
    return config


def save_config(config: TrainConfig, path: PathLike) -> None:
    """Write the effective config as YAML that `load_config` reads back equal.

    Written atomically (utils.process.atomic); missing parent directories are created.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    header = f"# Effective training configuration (from {config.source or 'memory'}).\n"
    text = header + yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)
    atomic_write_text(path, text)


__all__ = ["ConfigError", "TrainConfig", "config_from_data", "load_config", "recipe_warnings",
           "save_config"]
