"""The vocabulary in which the recipe keys (cfg/*.yaml) are declared, each once.

A recipe section is a frozen pydantic dataclass (`recipe`); each of its fields declares a key:
its type (`Number`, `Integer`, `Flag`, a `Literal`, a tuple, a section), its default, its
bounds and a one-line description (`Field(ge=..., description=...)`), and, where a rule spans
the parts of a value, `Ordered`. `utils.recipe.config` reads these declarations to load a recipe, to
word its errors and to write it back (`as_data`); `utils.recipe.key_table` to render the table
of keys in docs/recipe-keys.md.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, List, Optional, Tuple, Union

from annotated_types import Ge, Gt, Le, Lt
from pydantic import AfterValidator, AllowInfNan, ConfigDict, Strict
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError
from typing_extensions import Annotated, Literal, get_args, get_origin

# Every integer key is a count (epochs, an epoch, RandAugment's n): at most INTEGER_LIMIT, as
# train.py's count flags (--epochs among them), so that it stays exact where it becomes
# float64 (TensorBoard's HParams, the schedules) and any run's step count within int64.
INTEGER_LIMIT = 2**31 - 1


def _within_limit(value: int) -> int:
    """An integer key's common bound (not in the table of keys: no recipe comes near it)."""
    if value > INTEGER_LIMIT:
        raise PydanticCustomError("rule", "must be at most {limit}, got {got}",
                                  {"limit": INTEGER_LIMIT, "got": value})
    return value


# Strict scalars: YAML's `"0.9"` or `true` is not a number, `90.0` not an integer (an integer
# is a number, and is stored as a float).
Number = Annotated[float, Strict(), AllowInfNan(False)]
Integer = Annotated[int, Strict(), AfterValidator(_within_limit)]
Flag = Annotated[bool, Strict()]

# A section of a recipe: frozen (hashable, compared by value) and strict about its keys.
recipe = functools.partial(dataclass, frozen=True, config=ConfigDict(extra="forbid"))


class SavedWhenSet:
    """Marks a key that `as_data` writes only when it differs from its default: the keys
    added after the official layout, so that configs saved (and run identities recorded)
    before a key existed stay as they were."""


SAVED_WHEN_SET = SavedWhenSet()


@dataclasses.dataclass(frozen=True)
class FilledFrom:
    """Marks a key that, empty or absent, takes the value of top-level key `key`."""

    key: str


@dataclasses.dataclass(frozen=True)
class Ordered:
    """The rule of a `[low, high]` pair: `low_above < low <= high (<= high_at_most)`.

    An after-validator (in `Annotated`); `words` is the rule as the errors and the table say it.
    """

    low_above: float = 0.0
    high_at_most: Optional[float] = None

    @property
    def words(self) -> str:
        upper = "" if self.high_at_most is None else f" <= {self.high_at_most:g}"
        return f"{self.low_above:g} < low <= high{upper}"

    def __call__(self, value: Tuple[float, float]) -> Tuple[float, float]:
        low, high = value
        if not (self.low_above < low <= high
                and (self.high_at_most is None or high <= self.high_at_most)):
            got = [int(v) if v.is_integer() else v for v in value]  # integers without a dot
            raise PydanticCustomError("rule", "must be {words}, got {got}",
                                      {"words": self.words, "got": repr(got)})
        return value


def rule_error(message: str, key: Optional[str] = None) -> PydanticCustomError:
    """A recipe rule broken by a section's values; `key` names the key within the section
    that the message is about (for the file's line), the section itself when None."""
    return PydanticCustomError("rule", message, {} if key is None else {"key": key})


def bound_words(core: Any, metadata: Any) -> str:
    """The bounds of a key of type `core` in words: '>= 0', 'in [0, 1)', 'in 1..10' (of an
    integer), '' if none."""
    found: Dict[type, Any] = {type(m): m for m in metadata if isinstance(m, (Ge, Gt, Le, Lt))}
    low = found.get(Ge) or found.get(Gt)
    high = found.get(Le) or found.get(Lt)
    value = {Ge: lambda m: m.ge, Gt: lambda m: m.gt, Le: lambda m: m.le, Lt: lambda m: m.lt}
    if low is not None and high is not None:
        lo, hi = value[type(low)](low), value[type(high)](high)
        if core is int and isinstance(low, Ge) and isinstance(high, Le):
            return f"in {lo}..{hi}"
        return f"in {'[' if isinstance(low, Ge) else '('}{lo:g}, {hi:g}" \
               f"{']' if isinstance(high, Le) else ')'}"
    sign = {Ge: ">=", Gt: ">", Le: "<=", Lt: "<"}
    return " and ".join(f"{sign[type(m)]} {value[type(m)](m):g}" for m in (low, high)
                        if m is not None)


def keys(section: type) -> Tuple[dataclasses.Field, ...]:
    """The keys of a section in the order a file lists them (`type` first)."""
    fields = [f for f in dataclasses.fields(section) if f.init]
    return tuple(sorted(fields, key=lambda f: f.name != "type"))


def as_data(value: Any) -> Any:
    """Plain YAML-ready data of a section (tuples as lists), its keys in their file order."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {}
        for f in keys(type(value)):
            item = getattr(value, f.name)
            declared = type(value).__pydantic_fields__[f.name]
            if SAVED_WHEN_SET in declared.metadata and item == declared.default:
                continue
            data[f.name] = as_data(item)
        return data
    if isinstance(value, tuple):
        return [as_data(item) for item in value]
    return value


# --- The declarations read back: what a key is, for the errors and the table of keys. ---


def unwrap(annotation: Any) -> Tuple[Any, List[Any]]:
    """A declared type without its `Annotated` layers and `Optional`, and their metadata."""
    metadata: List[Any] = []
    while True:
        if get_origin(annotation) is Annotated:
            annotation, *extra = get_args(annotation)
            for item in extra:  # a Field() inside Annotated carries its bounds as metadata
                metadata.extend(getattr(item, "metadata", None) or [item])
        elif get_origin(annotation) is Union and type(None) in get_args(annotation):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        else:
            return annotation, metadata


def declared_key(section: type, name: str) -> Tuple[Any, List[Any]]:
    """The type and metadata (bounds, markers, validators) declared for key `name`."""
    field = section.__pydantic_fields__[name]
    core, metadata = unwrap(field.annotation)
    return core, [*field.metadata, *metadata]


def union_choices(core: Any) -> Dict[str, type]:
    """A discriminated union of sections: `type` value -> section (else empty)."""
    if get_origin(core) is not Union:
        return {}
    return {member.__pydantic_fields__["type"].default: member for member in get_args(core)}


def type_words(core: Any) -> Tuple[str, str]:
    """(for the table, for an error after 'must be') of a declared type."""
    if core is float:
        return "number", "a number"
    if core is int:
        return "integer", "an integer"
    if core is bool:
        return "true or false", "true or false"
    if get_origin(core) is Literal:
        return "name", "one of " + ", ".join(map(str, get_args(core)))
    if get_origin(core) is tuple:
        items = get_args(core)
        if items[-1] is Ellipsis:
            noun = type_words(unwrap(items[0])[0])[0]
            return f"list of {noun}s", f"a list of {noun}s"
        return "[low, high]", "a list [low, high]"
    return "mapping", "a mapping of keys to values"
