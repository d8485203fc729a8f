"""Imported first by every script that uses NNabla, before any other import of NNabla (an
import section of its own, see pyproject.toml, keeps it there).

NNabla announces itself when imported: an "Initializing CPU extension..." line at INFO on
stderr, above `--help`, every usage error and every one-line user error, and once per rank
under MPI; nothing the user asked for. Its logger is raised to WARNING for the import only,
so the scripts' own INFO logs (which go through the same logger) still show.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def quiet_nnabla_info() -> Iterator[None]:
    """Hide NNabla's INFO lines within the block (its imports and extension loads)."""
    logger = logging.getLogger("nnabla")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


with quiet_nnabla_info():
    import nnabla  # noqa: F401
