"""What NNabla's CUDA extension needs on a machine, found the way the extension finds it.

nnabla-ext-cuda120 1.39.0 links CUDA 12's runtime libraries and cuDNN 8 (its
`libnnabla_cuda-120_8.so` names them), and opens two more libraries when it starts
(`dl_mpi.cpp`, `dl_nccl.cpp` in nnabla-ext-cuda): an `libmpi.so` whose Open MPI symbols it
looks up, and NCCL's `libnccl.so`. Without both it registers no multi-GPU communicator, and
with an `libmpi.so` other than the one mpi4py runs, each rank's NCCL world is a world of its
own. The run-time check (`nccl_mpi_problem`, called by `comm.py` before MPI starts) and
`python -m utils.process.gpu_stack` (run by `scripts/setup.sh --gpu` and
`scripts/gpu_smoke.sh`) both use what is here, so what the set-up reports is what the
training will meet.

    python -m utils.process.gpu_stack    # one line per piece; status 1 when the GPU cannot be used
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, Dict, List, Mapping, Optional, Tuple

GPU_DOC = "see docs/gpu.md"

# The libraries the extension's shared object needs (its DT_NEEDED entries), with where
# they come from; the nvidia/cuda:12.0.1-cudnn8-runtime image of the Dockerfile has them all.
EXTENSION_LIBRARIES: Dict[str, str] = {
    "libcuda.so.1": "the NVIDIA driver (525 or newer for CUDA 12.0)",
    "libcudart.so.12": "the CUDA 12 runtime (cuda-libraries-12-0)",
    "libcublas.so.12": "cuBLAS for CUDA 12 (cuda-libraries-12-0)",
    "libcusolver.so.11": "cuSOLVER for CUDA 12 (cuda-libraries-12-0)",
    "libcurand.so.10": "cuRAND for CUDA 12 (cuda-libraries-12-0)",
    "libcufft.so.11": "cuFFT for CUDA 12 (cuda-libraries-12-0)",
    "libcudnn.so.8": "cuDNN 8 for CUDA 12 (libcudnn8)",
}
# Where the extension looks for them when its first tries fail (dl_mpi.cpp, dl_nccl.cpp).
MPI_FALLBACKS = ("/usr/lib64/libmpi.so", "/usr/lib/libmpi.so", "/opt/openmpi/lib/libmpi.so")
NCCL_NAMES = ("libnccl.so", "libnccl.so.2")
NCCL_FALLBACK_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/lib64", "/lib", "/lib64",
                      "/usr/local/lib64", "/usr/local/lib")
# The dynamic loader's own last resort on x86-64 Linux, after LD_LIBRARY_PATH and its cache.
LOADER_DEFAULT_DIRS = ("/lib", "/usr/lib", "/lib64", "/usr/lib64")

Exists = Callable[[str], bool]


def loader_cache() -> Dict[str, str]:
    """File name -> path, as the dynamic loader's cache (`ldconfig -p`) lists them."""
    for ldconfig in ("ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        try:
            listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True,
                                     check=False).stdout
        except OSError:
            continue
        cache: Dict[str, str] = {}
        for line in listing.splitlines()[1:]:
            name, arrow, path = line.strip().partition(" => ")
            if arrow and "x86-64" in name:
                cache.setdefault(name.split()[0], path.strip())
        return cache
    return {}


def loader_finds(name: str, env: Mapping[str, str], cache: Mapping[str, str],
                 exists: Exists = os.path.exists) -> Optional[str]:
    """The file `dlopen(name)` opens: LD_LIBRARY_PATH, the loader's cache, its default folders."""
    for folder in env.get("LD_LIBRARY_PATH", "").split(":"):
        if folder and exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    if name in cache:
        return cache[name]
    for folder in LOADER_DEFAULT_DIRS:
        if exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def extension_libmpi(env: Mapping[str, str], cache: Mapping[str, str],
                     exists: Exists = os.path.exists) -> Optional[str]:
    """The MPI library NNabla's CUDA extension opens: `$OMPI_HOME/lib/libmpi.so`, then what
    the loader finds for `libmpi.so`, then three fixed paths (None: it finds none)."""
    home = env.get("OMPI_HOME")
    if home and exists(os.path.join(home, "lib", "libmpi.so")):
        return os.path.join(home, "lib", "libmpi.so")
    found = loader_finds("libmpi.so", env, cache, exists)
    if found:
        return found
    return next((path for path in MPI_FALLBACKS if exists(path)), None)


def extension_libnccl(env: Mapping[str, str], cache: Mapping[str, str],
                      exists: Exists = os.path.exists) -> Optional[str]:
    """The NCCL library NNabla's CUDA extension opens (`$NCCL_HOME/lib`, the loader, then the
    system's library folders; None: it finds none)."""
    home = env.get("NCCL_HOME")
    if home:
        for name in NCCL_NAMES:
            if exists(os.path.join(home, "lib", name)):
                return os.path.join(home, "lib", name)
    for name in NCCL_NAMES:
        found = loader_finds(name, env, cache, exists)
        if found:
            return found
    return next((os.path.join(folder, name) for folder in NCCL_FALLBACK_DIRS
                 for name in NCCL_NAMES if exists(os.path.join(folder, name))), None)


def loaded_libmpi(maps: str = "/proc/self/maps") -> Optional[str]:
    """The MPI library this process has loaded (mpi4py's), resolved to its real file."""
    with open(maps) as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if os.path.basename(path).startswith("libmpi.so"):
                return os.path.realpath(path)
    return None


def library_name(library_version: str) -> str:
    """'MPICH 5.0.2' or 'Open MPI v4.1.2' from MPI_Get_library_version's text."""
    first = library_version.splitlines()[0] if library_version else "an unknown MPI"
    return " ".join(first.replace("Version:", "").split(",")[0].split())


def nccl_mpi_problem(library_version: str, mpi4py_library: Optional[str],
                     extension_library: Optional[str], nccl_library: Optional[str],
                     realpath: Callable[[str], str] = os.path.realpath) -> Optional[str]:
    """Why NNabla's NCCL communicator cannot join the MPI world mpi4py runs (None: it can).

    `library_version`: mpi4py's MPI library's own text; `mpi4py_library`: its file;
    `extension_library`/`nccl_library`: the files the extension opens (`extension_libmpi`,
    `extension_libnccl`)."""
    if not library_version.startswith("Open MPI"):
        return (f"multi-GPU training needs Open MPI: NNabla's NCCL communicator works only "
                f"through Open MPI's libmpi.so, but mpi4py here runs "
                f"{library_name(library_version)}"
                f"{f' ({mpi4py_library})' if mpi4py_library else ''}; install Open MPI with "
                "its libmpi.so and remove pip's mpich from the environment (`bash "
                f"scripts/setup.sh --gpu` does both), then launch with Open MPI's mpirun "
                f"({GPU_DOC})")
    if extension_library is None:
        return ("NNabla's CUDA extension finds no libmpi.so ($OMPI_HOME/lib, the loader's "
                "paths, /usr/lib64, /usr/lib, /opt/openmpi/lib), so it has no multi-GPU "
                "communicator: install Open MPI's development package (libopenmpi-dev) or set "
                f"OMPI_HOME to the Open MPI folder whose lib/ holds libmpi.so ({GPU_DOC})")
    if mpi4py_library and realpath(extension_library) != realpath(mpi4py_library):
        return (f"two MPI libraries in one process: NNabla's CUDA extension opens "
                f"{realpath(extension_library)} but mpi4py runs {realpath(mpi4py_library)}, "
                "so each rank's NCCL world would hold that rank alone; set OMPI_HOME to the "
                f"Open MPI that mpi4py runs (its lib/ must hold libmpi.so) ({GPU_DOC})")
    if nccl_library is None:
        return ("NNabla's CUDA extension finds no NCCL (libnccl.so.2 in $NCCL_HOME/lib or the "
                "system's library folders), so it has no multi-GPU communicator: install "
                f"NCCL 2 for CUDA 12 (libnccl2) or set NCCL_HOME ({GPU_DOC})")
    return None


def nccl_world_problem(mpi_rank: int, mpi_size: int, nccl_rank: int,
                       nccl_size: int) -> Optional[str]:
    """Why the NCCL communicator's world is not MPI's (None: it is the same world)."""
    if (nccl_rank, nccl_size) == (mpi_rank, mpi_size):
        return None
    return (f"NNabla's NCCL communicator sees rank {nccl_rank} of {nccl_size} where MPI has "
            f"rank {mpi_rank} of {mpi_size}: the extension runs another MPI library than the "
            "launcher's, and each rank would train alone with the global batch's learning rate; "
            f"launch with the mpirun of the Open MPI that mpi4py runs ({GPU_DOC})")


def missing_libraries(ldd_output: str) -> List[str]:
    """The libraries `ldd` reports as "not found"."""
    return [line.split()[0] for line in ldd_output.splitlines() if "=> not found" in line]


def extension_object() -> Optional[str]:
    """The installed extension's shared object (None: the extension is not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("nnabla_ext")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "cuda")
    objects = sorted(name for name in os.listdir(folder) if name.startswith("libnnabla_cuda")) \
        if os.path.isdir(folder) else []
    return os.path.join(folder, objects[0]) if objects else None


def stack_report(env: Mapping[str, str] = os.environ) -> List[Tuple[str, bool, str]]:
    """(piece, usable, detail) for each piece of the GPU stack on this machine."""
    cache = loader_cache()
    rows: List[Tuple[str, bool, str]] = []
    extension = extension_object()
    if extension is None:
        rows.append(("NNabla's CUDA extension", False,
                     "not installed: bash scripts/setup.sh --gpu (requirements-gpu.txt)"))
    else:
        ldd = subprocess.run(["ldd", extension], capture_output=True, text=True, check=False)
        missing = missing_libraries(ldd.stdout)
        rows.append(("NNabla's CUDA extension", True, extension))
        for soname, source in EXTENSION_LIBRARIES.items():
            rows.append((soname, soname not in missing,
                         "found" if soname not in missing else f"missing: install {source}"))
    import mpi4py

    mpi4py.rc.initialize = False
    try:
        from mpi4py import MPI
    except RuntimeError as e:  # mpi4py finds no MPI library at all
        rows.append(("multi-GPU (Open MPI + NCCL)", False,
                     f"{str(e).splitlines()[0]}: install Open MPI (openmpi-bin, "
                     f"libopenmpi-dev) ({GPU_DOC})"))
        return rows
    version, nccl = MPI.Get_library_version(), extension_libnccl(env, cache)
    problem = nccl_mpi_problem(version, loaded_libmpi(), extension_libmpi(env, cache), nccl)
    rows.append(("multi-GPU (Open MPI + NCCL)", problem is None,
                 problem or f"{library_name(version)}, NCCL {nccl}"))
    return rows


def main() -> int:
    rows = stack_report()
    width = max(len(piece) for piece, _, _ in rows)
    for piece, usable, detail in rows:
        print(f"{piece:<{width}}  {'ok     ' if usable else 'MISSING'}  {detail}")
    single_gpu = all(usable for piece, usable, _ in rows if not piece.startswith("multi-GPU"))
    return 0 if single_gpu else 1


if __name__ == "__main__":
    sys.exit(main())
