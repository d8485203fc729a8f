"""The documentation's shape (issue 30): a short front page from which every page and each
walkthrough is one click away, and links that all lead somewhere. The pages' commands are run
by test_readme_commands.py.

docs/gpu.md is written apart (the GPU stack); the pages link it as an expected target, and
these tests fail until it exists.
"""
from __future__ import annotations

import importlib
import re

import pytest
from markdown_links import broken_links, links_of
from paths import REPO

DOCS = sorted((REPO / "docs").rglob("*.md"))
PAGES = [REPO / "README.md", *DOCS, REPO / "results" / "README.md",
         REPO / "data" / "demo" / "README.md", REPO / "obsolete" / "README.md"]
WALKTHROUGHS = ("quickstart", "train-resnet50", "evaluate-published", "finetune", "slurm")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_links_lead_somewhere(page):
    assert broken_links(page) == []


def test_the_front_page_is_short_and_links_every_page():
    text = (REPO / "README.md").read_text()
    assert len(re.findall(r"\S+", text)) < 1500
    linked = {(REPO / t.split("#")[0]).resolve() for t in links_of(REPO / "README.md")}
    assert [p.relative_to(REPO) for p in DOCS if p not in linked] == []
    assert (REPO / "obsolete" / "README.md").resolve() in linked
    for name in WALKTHROUGHS:
        assert REPO / "docs" / "walkthroughs" / f"{name}.md" in DOCS, name


def test_the_front_page_has_a_task_table_leading_to_the_walkthroughs():
    text = (REPO / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "](docs/" in line]
    assert len(rows) >= 10
    for name in WALKTHROUGHS:
        assert any(f"(docs/walkthroughs/{name}.md" in row for row in rows), name
    for row in rows:  # task | command | page
        assert len(row.strip("|").split(" | ")) == 3, row


def test_each_walkthrough_says_what_it_needs_gives_and_costs():
    for name in WALKTHROUGHS:
        text = (REPO / "docs" / "walkthroughs" / f"{name}.md").read_text()
        sections = re.findall(r"^## (.+)$", text, flags=re.M)
        assert {"Prerequisites", "Expected result", "What next"} <= set(sections), name
        assert re.search(r"^## The commands?$", text, flags=re.M), name
        assert "Time" in text or " s after" in text, name
        for command in re.findall(r"^ {4}((?:mpirun -n \d+ )?python train\.py.*(?:\n {8}.*)*)",
                                  text, flags=re.M):
            assert " -m " in command, f"{name}: a training command without a fixed -m"


def test_the_recipe_key_generator_names_its_page():
    text = (REPO / "docs" / "recipe-keys.md").read_text()
    assert "python -m utils.recipe.key_table docs/recipe-keys.md" in text


def help_of(script: str, capsys) -> str:
    module = importlib.import_module(script)
    with pytest.raises(SystemExit, match="^0$"):  # help printed
        module.parse_args(["--help"])
    return capsys.readouterr().out


def test_the_short_flag_table_is_what_the_scripts_say(capsys):
    """Each pairing of a short flag and a long one in the troubleshooting table is one the
    script's --help shows."""
    text = (REPO / "docs" / "troubleshooting.md").read_text()
    table = text.split("## The same short flag", 1)[1].split("\n## ", 1)[0]
    columns = ["train", "validation", "create_input_files"]
    pairs = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not re.fullmatch(r"`-\w`", cells[0]):
            continue
        short = cells[0].strip("`")
        for script, cell in zip(columns, cells[1:4]):
            if cell and not cell.startswith("("):
                pairs.append((script, short, re.search(r"`(--[\w-]+)`", cell).group(1)))
        for script, long in re.findall(r"`(\w+)\.py`: `(--[\w-]+)`", cells[4]):
            pairs.append((script, short, long))
    assert len(pairs) >= 10
    helps = {script: help_of(script, capsys) for script in {p[0] for p in pairs}}
    metavar = r"( (?:\{[^}]*\}|[^,\n])+)?"  # FILE [FILE ...], {nchw,nhwc}
    wrong = [p for p in pairs if not re.search(rf"\s{p[1]}{metavar}, {p[2]}\b", helps[p[0]])]
    assert wrong == []
