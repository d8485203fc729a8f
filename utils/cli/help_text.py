"""The shape every script's --help shares: its docstring, its flags in named groups, then
one or two examples and the files it writes; and the short flags that the official scripts
use for different things, each one's help naming its other meanings.

Light on purpose (argparse and textwrap only): plot_curves.py and create_input_files.py use
it without importing NNabla.
"""
from __future__ import annotations

import argparse
import shlex
import textwrap
from typing import Dict, List, Optional, Sequence, Tuple

# Short flags of the official scripts that mean different things in different scripts:
# (script, what the flag is there) for each; every such flag's help ends with `elsewhere`.
SHORT_FLAG_MEANINGS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "-V": (("train.py", "the validation folder"), ("validation.py", "the validation folder"),
           ("create_input_files.py", "the validation labels file")),
    "-T": (("train.py", "the folder the training list is relative to"),
           ("validation.py", "the folder the training list is relative to"),
           ("create_input_files.py", "the training folder to list")),
    "-m": (("train.py", "the monitor path (output folder)"),
           ("convert_parameter_format.py", "the memory layout")),
    "-o": (("benchmark.py", "the CSV file"), ("export.py", "the model files"),
           ("create_input_files.py", "the output folder"),
           ("plot_curves.py", "the output folder")),
}
HELP_WIDTH = 88  # the epilog's line length, that of argparse's help at its default width


def elsewhere(flag: str, meaning: str) -> str:
    """'; -V elsewhere: the validation labels file (create_input_files.py)': what the short
    `flag` means in the scripts where it is not `meaning`."""
    others: Dict[str, List[str]] = {}
    for script, what in SHORT_FLAG_MEANINGS[flag]:
        if what != meaning:
            others.setdefault(what, []).append(script)
    return f"; {flag} elsewhere: " + "; ".join(
        f"{what} ({', '.join(scripts)})" for what, scripts in others.items())


def add_group(parser: argparse.ArgumentParser, title: str,
              description: Optional[str] = None) -> argparse._ArgumentGroup:
    """A named group of flags; its `description` (what this script does with them) wrapped
    as the flags' help is."""
    text = description and textwrap.fill(description, HELP_WIDTH - 2, break_on_hyphens=False)
    return parser.add_argument_group(title, text)


def script_parser(doc: str, examples: Sequence[str], writes: str) -> argparse.ArgumentParser:
    """A script's parser: its docstring first; after the flags, one or two `examples` (long
    ones continued with a backslash) and the files it `writes`, so that every --help ends
    with a command to start from."""
    epilog = ("examples:\n" + "".join(f"  {continued(e)}\n" for e in examples) + "\n"
              + textwrap.fill(f"files written: {writes}", HELP_WIDTH, subsequent_indent="  ",
                              break_on_hyphens=False))
    return ScriptParser(description=doc, epilog=epilog,
                        formatter_class=argparse.RawDescriptionHelpFormatter)


class ScriptParser(argparse.ArgumentParser):
    """argparse's parser, with the arguments it does not know quoted as a shell would, so
    that an empty one (`--json ''`) or one with spaces shows (argparse joined them bare: the
    line ended in "unrecognized arguments: " with nothing after it)."""

    def parse_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                   namespace: Optional[argparse.Namespace] = None) -> argparse.Namespace:
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error("unrecognized arguments: " + " ".join(map(shlex.quote, unknown)))
        return parsed


def continued(command: str) -> str:
    """`command` in lines that fit the help, continued with a backslash; a flag stays on the
    line of its value."""
    words: List[str] = []
    for word in command.split(" "):
        if words and words[-1].startswith("-") and " " not in words[-1] \
                and not word.startswith("-"):
            words[-1] += " " + word
        else:
            words.append(word)
    lines = [words[0]]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) > HELP_WIDTH - 8:
            lines.append(word)
        else:
            lines[-1] += " " + word
    return " \\\n      ".join(lines)
