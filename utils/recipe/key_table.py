"""The table of recipe keys in docs/recipe-keys.md, rendered from their declarations
(`config.py`, `fields.py`), so that the two cannot differ (a test compares them):

    python -m utils.recipe.key_table                      # print the table
    python -m utils.recipe.key_table docs/recipe-keys.md  # rewrite it between the page's markers
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Dict, List, Sequence

import utils.process.startup  # noqa: F401  (first: silences NNabla's import-time INFO line)

from typing_extensions import Literal, get_args, get_origin

from ..process.atomic import atomic_write_text
from ..process.errors import UsageError
from ..process.run import run
from .config import TrainConfig
from .fields import (
    FilledFrom,
    Ordered,
    bound_words,
    declared_key,
    keys,
    type_words,
    union_choices,
    unwrap,
)
from .schedules import SCHEDULE_ALIASES

KEY_TABLE_BEGIN = ("<!-- recipe keys: generated from the declarations by "
                   "`python -m utils.recipe.key_table docs/recipe-keys.md`; do not edit -->")
KEY_TABLE_END = "<!-- end of recipe keys -->"


@dataclasses.dataclass(frozen=True)
class _Row:
    key: str
    type: str
    default: str
    allowed: str
    description: str
    label: str = ""  # the schedule a key belongs to, when not to all


def _value_words(value: Any) -> str:
    if value is None:
        return "absent (off)"
    if dataclasses.is_dataclass(value):
        return "its keys' defaults"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(_value_words, value)) + "]"
    return str(value)


def _allowed_words(core: Any, metadata: Sequence[Any]) -> str:
    rules = [getattr(m, "func", None) for m in metadata]
    ordered = [rule.words for rule in rules if isinstance(rule, Ordered)]
    if ordered:
        return ordered[0]
    if get_origin(core) is Literal:
        return ", ".join(map(str, get_args(core)))
    if get_origin(core) is tuple and get_args(core)[-1] is Ellipsis:
        words = bound_words(*unwrap(get_args(core)[0]))
        return f"each {words}" if words else ""
    words = bound_words(core, metadata)
    return words[len("in "):] if words.startswith("in ") else words


def _rows(section: type, prefix: str) -> List[_Row]:
    rows: List[_Row] = []
    for field in keys(section):
        declared = section.__pydantic_fields__[field.name]
        core, metadata = declared_key(section, field.name)
        key, description = prefix + field.name, declared.description or ""
        filled = [m.key for m in metadata if isinstance(m, FilledFrom)]
        default = f"the top-level `{filled[0]}`" if filled else \
            "required" if declared.is_required() else _value_words(declared.default)
        if dataclasses.is_dataclass(core) or union_choices(core):
            rows.append(_Row(key, "mapping", default, "", description))
            rows += _union_rows(core, key + ".") if union_choices(core) else _rows(core, key + ".")
        else:
            rows.append(_Row(key, type_words(core)[0], default, _allowed_words(core, metadata),
                             description))
    return rows


def _union_rows(union: Any, prefix: str) -> List[_Row]:
    """The keys of the sections of a union (the schedules): one row for a key all declare
    alike, else one per section, labelled with its short type; `type` lists the types."""
    short = {official: alias for alias, official in SCHEDULE_ALIASES.items()}
    choices = union_choices(union)
    order: List[str] = []  # the keys, each after the previous key of its first section
    found: Dict[str, List[_Row]] = {}
    for name, section in choices.items():
        at = 0
        for row in _rows(section, prefix):
            if row.key not in found:
                order.insert(at, row.key)
                found[row.key] = []
            found[row.key].append(dataclasses.replace(row, label=short.get(name, name)))
            at = order.index(row.key) + 1
    rows = []
    for key in order:
        alike = found[key]
        if key == prefix + "type":
            names = [f"{name} (or {short[name]})" if name in short else name for name in choices]
            rows.append(dataclasses.replace(alike[0], default="required", label="",
                                            allowed=", ".join(names)))
        elif len(alike) == len(choices) and \
                len({dataclasses.replace(row, label="") for row in alike}) == 1:
            rows.append(dataclasses.replace(alike[0], label=""))
        else:
            rows += alike
    return rows


def key_table() -> str:
    """The recipe keys as a Markdown table (key, type, default, allowed values, description),
    rendered from their declarations: the table of docs/recipe-keys.md."""
    lines = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    lines += [f"| `{r.key}`{f' ({r.label})' if r.label else ''} | {r.type} | {r.default} | "
              f"{r.allowed} | {r.description} |" for r in _rows(TrainConfig, "")]
    return "\n".join(lines) + "\n"


def with_key_table(text: str) -> str:
    """`text` (the keys page) with the table between its markers replaced by `key_table()`."""
    begin, end = text.find(KEY_TABLE_BEGIN), text.find(KEY_TABLE_END)
    if begin < 0 or end < begin:
        raise UsageError(f"the markers of the table of recipe keys are missing: "
                         f"'{KEY_TABLE_BEGIN}' then '{KEY_TABLE_END}'")
    return text[:begin] + KEY_TABLE_BEGIN + "\n" + key_table() + text[end:]


def _main(argv: Sequence[str]) -> int:
    """No argument: print the table; a file (docs/recipe-keys.md): rewrite the table in it."""
    if len(argv) > 1:
        raise UsageError("usage: python -m utils.recipe.key_table [docs/recipe-keys.md]")
    if not argv:
        print(key_table(), end="")
        return 0
    with open(argv[0], encoding="utf-8") as stream:
        text = stream.read()
    atomic_write_text(argv[0], with_key_table(text))
    return 0


if __name__ == "__main__":
    sys.exit(run(lambda: _main(sys.argv[1:])))
