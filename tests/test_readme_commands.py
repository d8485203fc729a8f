"""Every command the README shows is checked against the scripts it calls.

Each `python <script>.py ...` line (also after `mpirun ...`) must parse with that script's own
argument parser, and each `bash scripts/...` line must name an existing script. The commands
that can run here without ImageNet or published weights run in the quickstart and in the
end-to-end tests; this test keeps the rest from rotting.
"""
import importlib
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_commands():
    """Shell commands of the README's indented code blocks, continuation lines joined."""
    commands, current = [], ""
    for line in (REPO / "README.md").read_text().splitlines():
        if not line.startswith("    ") or line.lstrip().startswith("|"):
            current = ""
            continue
        text = line.strip().split("  #")[0].strip()
        current = f"{current} {text}".strip() if current else text
        if current.endswith("\\"):
            current = current[:-1].strip()
            continue
        if re.match(r"(python|mpirun|bash) ", current):
            commands.append(current)
        current = ""
    return commands


def test_the_readme_shows_commands():
    assert len(readme_commands()) >= 15


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command, capsys):
    argv = shlex.split(command)
    if argv[0] == "bash":
        assert (REPO / argv[1]).is_file(), command
        return
    start = argv.index("python")
    script, args = argv[start + 1], argv[start + 2:]
    assert script.endswith(".py") and (REPO / script).is_file(), command
    module = importlib.import_module(script[:-3])
    try:
        module.parse_args(args)
    except SystemExit as e:
        pytest.fail(f"{command!r} does not parse: {capsys.readouterr().err.strip()} ({e})")
