"""obsolete/README.md, the guide for users of the official example's older scripts, stays true.

Every command of this repository that it quotes (`<script>.py` followed by flags, in inline
code or in a code block) must name an existing script, and each flag must be one that the
script's `--help` lists. Recipe files and keys it names must exist, and its links to its own
sections must resolve.
"""
from __future__ import annotations

import re
import subprocess
import sys
from functools import lru_cache
from typing import Dict, List, Tuple

import pytest
import yaml
from markdown_links import broken_links
from paths import REPO

README = REPO / "obsolete" / "README.md"
# The scripts of the old generation, named by the guide but absent from this repository.
OLD_SCRIPTS = {
    "classification", "multi_device_multi_process_classification", "create_cache",
    "model_inference", "imagenet_data", "tiny_imagenet_data", "model_resnet", "args",
}  # fmt: skip
RECIPE_KEYS = ("weight_decay", "epochs", "label_smoothing", "base_lr", "decay_at", "warmup_epochs")


def code_snippets(markdown: str) -> List[str]:
    """Contents of fenced code blocks (continuation lines joined) and of inline code spans."""
    snippets: List[str] = []
    outside: List[str] = []
    for i, part in enumerate(re.split(r"^```[^\n]*\n", markdown, flags=re.M)):
        if i % 2 == 1:  # inside a fence
            snippets += re.sub(r"\\\n\s*", " ", part).splitlines()
        else:
            outside.append(part)
    snippets += re.findall(r"`([^`\n]+)`", "\n".join(outside))
    return snippets


def script_commands(snippets: List[str]) -> List[Tuple[str, List[str]]]:
    """(script name, flags) for every `<name>.py <args...>` of the snippets."""
    found: List[Tuple[str, List[str]]] = []
    for snippet in snippets:
        snippet = snippet.split(" #", 1)[0]
        pattern = r"(?:^|\s)([\w./-]*/)?(\w+)\.py\b((?:\s+[^\s|;&<>]+)*)"
        for match in re.finditer(pattern, snippet):
            folder = match.group(1) or ""
            if folder and not folder.endswith("/repo/"):  # a module (utils/…), not a script
                continue
            flags = [w for w in match.group(3).split() if re.match(r"^--?[A-Za-z]", w)]
            found.append((match.group(2), flags))
    return found


@lru_cache(maxsize=None)
def help_text(script: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / f"{script}.py"), "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"{script}.py --help failed:\n{result.stderr[-2000:]}"
    return result.stdout


def test_every_old_script_is_mapped() -> None:
    text = README.read_text()
    missing = [name for name in sorted(OLD_SCRIPTS) if f"`{name}.py" not in text]
    assert missing == [], f"obsolete/README.md does not mention {missing}"


@pytest.mark.slow
def test_quoted_commands_use_existing_scripts_and_flags() -> None:
    commands = script_commands(code_snippets(README.read_text()))
    ours = [(name, flags) for name, flags in commands if name not in OLD_SCRIPTS]
    assert len(ours) > 20, "expected the guide to quote this repository's commands"
    wanted: Dict[str, set] = {}
    for name, flags in ours:
        assert (REPO / f"{name}.py").is_file(), f"obsolete/README.md names missing {name}.py"
        wanted.setdefault(name, set()).update(flags)
    problems = []
    for name, flags in sorted(wanted.items()):
        text = help_text(name)
        for flag in sorted(flags):
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                problems.append(f"{name}.py {flag}")
    assert problems == [], f"flags the scripts do not have: {problems}"


def test_named_recipes_and_keys_exist() -> None:
    text = README.read_text()
    recipes = sorted(set(re.findall(r"cfg/[\w.-]+\.yaml", text)))
    assert recipes, "expected the guide to name a recipe"
    for recipe in recipes:
        assert (REPO / recipe).is_file(), f"{recipe} named in obsolete/README.md does not exist"
    step90 = yaml.safe_load((REPO / "cfg" / "step90.yaml").read_text())
    keys = set(step90) | set(step90["lr_scheduler"]["args"])
    for key in RECIPE_KEYS:
        assert re.search(rf"`[^`\n]*\b{key}\b[^`\n]*`", text) and key in keys, key
    assert step90["lr_scheduler"]["type"] in text
    assert float(step90["lr_scheduler"]["args"]["base_lr"]) == pytest.approx(0.1 / 256)


def test_section_links_resolve() -> None:
    assert re.search(r"\]\(#[^)]+\)", README.read_text()), "the guide links its sections"
    assert broken_links(README) == []


def test_linked_from_the_front_page() -> None:
    assert "](obsolete/README.md)" in (REPO / "README.md").read_text()


def old_flag_row(text: str, flag: str) -> str:
    [row] = [line for line in text.splitlines() if line.startswith(f"| `{flag}`")
             or line.startswith(f"| `-a`, `{flag}`")]
    return row


def test_old_flags_that_have_a_counterpart_now_name_it() -> None:
    """The guide once said 'none' for gradient accumulation and the crop area, which the
    repository has (issue 30 item 6): each old flag with a counterpart names it."""
    text = README.read_text()
    row = old_flag_row(text, "--accum-grad")
    assert "`train.py --accumulate-steps`" in row and "| none |" not in row
    assert "--accumulate-steps" in help_text("train")
    row = old_flag_row(text, "--random-area")
    assert "`augmentation.random_area`" in row and "| none |" not in row
    keys = (REPO / "docs" / "recipe-keys.md").read_text()
    assert "| `augmentation.random_area` |" in keys
    assert "refused" in [line for line in text.splitlines()
                         if line.startswith("| `-d`, `--device-id`")][0]
    tiny = text.split("## Tiny ImageNet", 1)[1].split("\n## ", 1)[0]
    assert "val_by_class" not in tiny and "create_input_files.py -T tiny-imagenet-200/train" in tiny
