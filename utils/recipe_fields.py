"""The vocabulary in which the recipe keys (cfg/*.yaml) are declared, each once.

A recipe section is a frozen pydantic dataclass (`recipe`); each of its fields declares a key:
its type (`Number`, `Integer`, `Flag`, a `Literal`, a tuple, a section), its default, its
bounds and a one-line description (`Field(ge=..., description=...)`), and, where a rule spans
the parts of a value, `Ordered`. `utils.config` reads these declarations to load a recipe, to
word its errors, to write it back (`as_data`) and to render the README's table of keys.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Optional, Tuple

from annotated_types import Ge, Gt, Le, Lt
from pydantic import AllowInfNan, ConfigDict, Strict
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError
from typing_extensions import Annotated

# Strict scalars: YAML's `"0.9"` or `true` is not a number, `90.0` not an integer (an integer
# is a number, and is stored as a float).
Number = Annotated[float, Strict(), AllowInfNan(False)]
Integer = Annotated[int, Strict()]
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
