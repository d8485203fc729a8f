"""Links of the repository's Markdown pages: relative files must exist, #anchors must name
a heading of the page they point into (GitHub's anchor rule)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Set


def github_anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(page: Path) -> Set[str]:
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)}


def broken_links(page: Path) -> List[str]:
    """The links (and images) of `page` that lead nowhere; external URLs are not checked."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and (linked.suffix != ".md" or anchor not in anchors_of(linked)):
            broken.append(target)
    return broken
