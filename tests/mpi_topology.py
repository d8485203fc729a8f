"""The machine's processor topology as an hwloc XML file, for HWLOC_XMLFILE. Without that
variable, MPICH's Hydra (mpirun and its proxies) writes the topology to a new
/tmp/hydra_hwloc_xmlfile_* on every start, a path it does not take from TMPDIR, and leaves it
there whenever a test kills the launcher (kill -9, a timeout): dozens a day. Given the file,
Hydra reads it and writes none."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

# Run as the one rank: its parent, Hydra's proxy, holds its topology file open.
COPY_PROXYS_FILE = """
import os, shutil, sys
from mpi4py import MPI
fds = f"/proc/{os.getppid()}/fd"
targets = []
for fd in os.listdir(fds):
    try:
        targets.append(os.readlink(os.path.join(fds, fd)))
    except OSError:
        pass
shutil.copy(next(t for t in targets if "/hydra_hwloc_xmlfile_" in t), sys.argv[1])
"""


def machine_topology(folder: Path) -> Optional[Path]:
    """`folder`/topology.xml, copied from the file one `mpirun -n 1` writes for itself (and
    removes when it ends); None without the environment's mpirun or if that fails."""
    mpirun = Path(sys.executable).parent / "mpirun"
    if not mpirun.is_file():
        return None
    out = folder / "topology.xml"
    result = subprocess.run([str(mpirun), "-n", "1", sys.executable, "-c", COPY_PROXYS_FILE,
                             str(out)], capture_output=True, text=True, timeout=120)
    return out if result.returncode == 0 and out.is_file() else None
