"""The shape of the repository as the README states it: the layout section names every module
and script, imports go downward only, and the fast subset of the suite is what test.sh runs."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO

SCRIPTS = sorted(p.name for p in REPO.glob("*.py"))
UTILS = sorted(p.name for p in (REPO / "utils").glob("*.py") if p.name != "__init__.py")


def imported_modules(path: Path) -> set:
    """Top-level packages and project modules a file imports ("." imports as "utils")."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(path.parent.name if node.level else (node.module or "").split(".")[0])
    return found


def test_the_layout_section_names_every_script_and_utils_module():
    section = (REPO / "docs" / "layout.md").read_text()
    missing = [name for name in SCRIPTS + UTILS if f"`{name}`" not in section]
    assert missing == [], f"docs/layout.md does not name {missing}"


def test_imports_go_downward_only():
    scripts = {p[:-3] for p in SCRIPTS}
    for path in (REPO / "models").glob("*.py"):
        assert not imported_modules(path) & {"utils", *scripts}, path.name
    for path in (REPO / "utils").glob("*.py"):
        assert not imported_modules(path) & scripts, path.name


def test_the_fast_subset_leaves_out_only_tests_marked_slow():
    result = subprocess.run(["bash", "scripts/test.sh", "--fast", "--collect-only", "-q"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    counts = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", result.stdout)
    assert counts, result.stdout[-2000:]
    selected, total, deselected = map(int, counts.groups())
    assert selected + deselected == total and selected > 0 and deselected > 0
    assert "test time: " in result.stdout and "(fast subset)" in result.stdout
    marked = subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "--collect-only",
         "-q", "-m", "slow"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert f"{deselected} tests collected" in marked.stdout or \
        f"{deselected}/{total} tests collected" in marked.stdout, marked.stdout[-2000:]


# The official train.py's flags (nnabla-examples imagenet, args.py and train.py).
OFFICIAL_TRAIN_FLAGS = {
    "--device-id", "--type-config", "--context", "--arch", "--num-classes", "--channel-last",
    "--spatial-size", "--batch-size", "--epochs", "--monitor-path", "--val-interval",
    "--model-save-interval", "--model-load-path", "--train-config", "--finetune",
    "--train-dir", "--train-list", "--val-dir", "--val-list", "--dali-num-threads",
    "--dali-prefetch-queue", "--dali-nvjpeg-memory-padding-mb", "--help",
}


def test_the_readme_lists_the_differences_from_the_official_example(capsys):
    import train

    section = (REPO / "docs" / "differences.md").read_text()
    for fact in ("256×256", "--model-load-path` without `--finetune`", "`np.int`",
                 "cfg/finetune10_per_iteration"):
        assert fact in section, fact
    with pytest.raises(SystemExit, match="^0$"):  # help printed
        train.parse_args(["--help"])
    ours = set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", capsys.readouterr().out))
    extra = sorted(ours - OFFICIAL_TRAIN_FLAGS)
    assert extra and [f for f in extra if f"`{f}`" not in section] == []


def test_no_utils_class_is_over_200_lines_or_takes_over_8_parameters():
    """Issue 25's measure of parts small enough to read: a class that grows past it has two
    jobs (a record of options is a frozen dataclass, whose fields are not parameters here)."""
    found = []
    for path in sorted((REPO / "utils").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            lines = node.end_lineno - node.lineno + 1
            if lines > 200:
                found.append(f"{path.name}: class {node.name} has {lines} lines")
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    count = len(item.args.args) - 1 + len(item.args.kwonlyargs)
                    if count > 8:
                        found.append(f"{path.name}: {node.name}() takes {count} parameters")
    assert found == []
