"""Links of the repository's Markdown pages: relative files must exist, #anchors must name
a heading of the page they point into (GitHub's anchor rule, repeated headings numbered)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Set


def github_anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(markdown: str) -> List[str]:
    """The headings of a page, outside fenced code blocks."""
    outside = re.split(r"^```[^\n]*\n", markdown, flags=re.M)[::2]
    return re.findall(r"^#+ (.+)$", "\n".join(outside), flags=re.M)


def anchors_of(page: Path) -> Set[str]:
    found: Set[str] = set()
    for heading in headings(page.read_text()):
        anchor, n = github_anchor(heading), 0
        while (anchor if n == 0 else f"{anchor}-{n}") in found:
            n += 1
        found.add(anchor if n == 0 else f"{anchor}-{n}")
    return found


def links_of(page: Path) -> List[str]:
    """The targets of a page's links and images, outside code."""
    text = re.sub(r"`[^`\n]*`", "", page.read_text())
    return re.findall(r"\]\(([^)\s]+)\)", text)


def broken_links(page: Path) -> List[str]:
    """The links (and images) of `page` that lead nowhere; external URLs are not checked."""
    broken = []
    for target in links_of(page):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and (linked.suffix != ".md" or anchor not in anchors_of(linked)):
            broken.append(target)
    return broken
