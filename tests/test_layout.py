"""The shape of the repository as docs/layout.md states it: utils/ as packages by concern whose
imports go one way, the layout page naming every module and script, and the fast subset of the
suite being what test.sh runs."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Set

import pytest
from paths import REPO

SCRIPTS = sorted(p.name for p in REPO.glob("*.py"))
UTILS = REPO / "utils"
# The packages of utils/, lowest first: a module may import its own package and those before it.
PACKAGE_ORDER = ("process", "labels", "weights", "deploy", "recipe", "data", "eval", "outputs",
                 "train", "cli")
PACKAGES = sorted(p.parent.name for p in UTILS.glob("*/__init__.py"))
MODULES = sorted(str(p.relative_to(UTILS)) for p in UTILS.glob("*/*.py") if p.name != "__init__.py")


def imported_modules(path: Path, source: Optional[str] = None) -> Set[str]:
    """The dotted names a file imports (`source`, or the file's text), relative imports
    resolved against its package."""
    found = set()
    package = list(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            if not node.module:  # `from . import x`
                found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_utils_is_packages_each_saying_what_it_owns():
    top = sorted(p.name for p in UTILS.glob("*.py"))
    assert len(top) <= 3, top
    assert sorted(PACKAGES) == sorted(PACKAGE_ORDER)
    for package in PACKAGES:
        doc = ast.get_docstring(ast.parse((UTILS / package / "__init__.py").read_text()))
        assert doc and len(doc.splitlines()[0]) <= 80, package


def test_the_layout_page_names_every_script_package_and_module():
    page = (REPO / "docs" / "layout.md").read_text()
    names = SCRIPTS + [f"{p}/" for p in PACKAGES] + MODULES
    missing = [name for name in names if f"`{name}`" not in page]
    assert missing == [], f"docs/layout.md does not name {missing}"


def package_violations(path: Path, source: Optional[str] = None) -> List[str]:
    """The imports of a utils module that go against PACKAGE_ORDER."""
    own = PACKAGE_ORDER.index(path.parent.name)
    found = []
    for module in sorted(imported_modules(path, source)):
        parts = module.split(".")
        if parts[0] in {p[:-3] for p in SCRIPTS}:
            found.append(f"{path.relative_to(REPO)} imports the script {module}")
        if parts[0] == "utils" and len(parts) > 1 and PACKAGE_ORDER.index(parts[1]) > own:
            found.append(f"{path.relative_to(REPO)} imports {module}, a later package")
    return found


def test_imports_go_one_way():
    scripts = {p[:-3] for p in SCRIPTS}
    for path in (REPO / "models").glob("*.py"):
        assert not {m.split(".")[0] for m in imported_modules(path)} & {"utils", *scripts}, path
    found = [line for path in sorted(UTILS.glob("*/*.py")) for line in package_violations(path)]
    assert found == []


def test_the_order_check_sees_an_upward_import():
    """The check above names a relative or absolute import of a later package, and not an
    import of the module's own package or an earlier one."""
    probe = UTILS / "labels" / "probe.py"
    source = ("from ..train.spec import RunSpec\nfrom .file_list import FileList\n"
              "from ..process.errors import UserError\nimport utils.eval.losses\n")
    assert package_violations(probe, source) == [
        "utils/labels/probe.py imports utils.eval.losses, a later package",
        "utils/labels/probe.py imports utils.train.spec, a later package"]


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
    for path in sorted(UTILS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            lines = node.end_lineno - node.lineno + 1
            if lines > 200:
                found.append(f"{path.relative_to(UTILS)}: class {node.name} has {lines} lines")
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    count = len(item.args.args) - 1 + len(item.args.kwonlyargs)
                    if count > 8:
                        found.append(f"{path.relative_to(UTILS)}: {node.name}() takes "
                                     f"{count} parameters")
    assert found == []
