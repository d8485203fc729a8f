"""How much memory this process can still take, and refusing work that would not fit."""
from __future__ import annotations

from typing import Optional

from .errors import UsageError

GIBIBYTE = 1 << 30


def available_memory() -> Optional[int]:
    """Bytes this process can still allocate: the system's available memory, or less under
    a container's (cgroup) limit; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as f, open(usage) as g:
                found.append(int(f.read()) - int(g.read()))  # "max" (no limit): ValueError
        except (OSError, ValueError):
            pass
    return min(found) if found else None


def check_batch_fits(need: int, available: Optional[int], what: str, remedy: str,
                     where: str = "in the input pipeline") -> None:
    """Refuse, before any work, a batch whose pixels alone exceed the memory there is (DALI
    ended with std::bad_alloc, NumPy with its _ArrayMemoryError, each with a traceback)."""
    if available is not None and need > available:
        raise UsageError(f"{what} need at least {need / GIBIBYTE:.1f} GiB {where}, more than "
                         f"the {max(available, 0) / GIBIBYTE:.1f} GiB of memory available: "
                         f"{remedy}")
