"""The GPU stack's checks (utils/process/gpu_stack.py) and the NCCL communicator's set-up
(utils/process/comm.py)
on a machine without a GPU.

How each defect is reached without a GPU:
- pip's MPICH under a GPU context: the real 2-rank `mpirun` of this machine's set-up builds the
  NCCL communicator; before, NNabla raised a traceback (no communicator registered), now the
  launch stops with one line before MPI starts.
- two MPI libraries, a missing libmpi.so or NCCL: the extension's own search order run over
  folders made here (`extension_libmpi`, `extension_libnccl`), and the decision on the results.
- an NCCL world that is not MPI's, and the initial broadcast under `-t half`: NNabla's
  communicator needs CUDA, so a stand-in takes its place in a real 2-rank MPI world; it casts
  what it sends to its context's type as NNabla's does (`NdArray.cast` in place, on NNabla's
  real CPU half context), which is what rounded the float32 master weights before.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from paths import REPO

from utils.process.gpu_stack import (
    extension_libmpi,
    extension_libnccl,
    library_name,
    loaded_libmpi,
    loader_finds,
    missing_libraries,
    nccl_mpi_problem,
    nccl_world_problem,
)

OPEN_MPI = "Open MPI v4.1.2, package: Debian OpenMPI, ident: 4.1.2, repo rev: v4.1.2, Nov 24, 2021"
MPICH = "MPICH Version:      5.0.2\nMPICH Release date: unreleased development copy\n"
MPIRUN = str(Path(sys.executable).parent / "mpirun")


def files(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def test_openmpi_home_comes_first_then_the_loader_then_fixed_paths(tmp_path):
    files(tmp_path, "ompi/lib/libmpi.so", "ld/libmpi.so", "cache/libmpi.so")
    cache = {"libmpi.so": str(tmp_path / "cache/libmpi.so")}
    env = {"OMPI_HOME": str(tmp_path / "ompi"), "LD_LIBRARY_PATH": str(tmp_path / "ld")}
    assert extension_libmpi(env, cache) == str(tmp_path / "ompi/lib/libmpi.so")
    assert extension_libmpi({**env, "OMPI_HOME": str(tmp_path / "none")}, cache) == \
        str(tmp_path / "ld/libmpi.so")
    assert extension_libmpi({}, cache) == str(tmp_path / "cache/libmpi.so")
    fixed = {"/opt/openmpi/lib/libmpi.so"}
    assert extension_libmpi({}, {}, fixed.__contains__) == "/opt/openmpi/lib/libmpi.so"
    assert extension_libmpi({}, {}, lambda path: False) is None


def test_only_the_unversioned_name_counts_for_mpi(tmp_path):
    """The extension opens `libmpi.so`: Open MPI's runtime package has only libmpi.so.40."""
    files(tmp_path, "lib/libmpi.so.40")
    assert extension_libmpi({"LD_LIBRARY_PATH": str(tmp_path / "lib")}, {},
                            lambda p: p.startswith(str(tmp_path)) and os.path.exists(p)) is None


def test_nccl_is_found_by_either_name_in_each_place(tmp_path):
    files(tmp_path, "home/lib/libnccl.so.2", "ld/libnccl.so.2")
    inside = lambda p: p.startswith(str(tmp_path)) and os.path.exists(p)  # noqa: E731
    assert extension_libnccl({"NCCL_HOME": str(tmp_path / "home")}, {}, inside) == \
        str(tmp_path / "home/lib/libnccl.so.2")
    assert extension_libnccl({"LD_LIBRARY_PATH": str(tmp_path / "ld")}, {}, inside) == \
        str(tmp_path / "ld/libnccl.so.2")
    system = {"/usr/local/lib/libnccl.so.2"}
    assert extension_libnccl({}, {}, system.__contains__) == "/usr/local/lib/libnccl.so.2"
    assert extension_libnccl({}, {}, lambda p: False) is None


def test_the_loader_order(tmp_path):
    files(tmp_path, "a/libx.so", "b/libx.so")
    env = {"LD_LIBRARY_PATH": f"{tmp_path / 'missing'}::{tmp_path / 'b'}:{tmp_path / 'a'}"}
    assert loader_finds("libx.so", env, {"libx.so": "/cached"}) == str(tmp_path / "b/libx.so")
    assert loader_finds("libx.so", {}, {"libx.so": "/cached"}) == "/cached"


def test_mpich_is_refused_with_what_to_install():
    problem = nccl_mpi_problem(MPICH, "/venv/lib/libmpi.so.12", "/usr/lib/libmpi.so",
                               "/usr/lib/libnccl.so.2")
    assert problem.startswith("multi-GPU training needs Open MPI")
    assert "MPICH 5.0.2 (/venv/lib/libmpi.so.12)" in problem
    assert "setup.sh --gpu" in problem and "Open MPI's mpirun" in problem
    assert "\n" not in problem


def test_open_mpi_with_its_own_libmpi_and_nccl_passes(tmp_path):
    files(tmp_path, "lib/libmpi.so.40")
    (tmp_path / "lib/libmpi.so").symlink_to("libmpi.so.40")
    assert nccl_mpi_problem(OPEN_MPI, str(tmp_path / "lib/libmpi.so.40"),
                            str(tmp_path / "lib/libmpi.so"), "/usr/lib/libnccl.so.2") is None


def test_two_mpi_libraries_are_refused(tmp_path):
    files(tmp_path, "system/libmpi.so", "hpcx/libmpi.so.40")
    problem = nccl_mpi_problem(OPEN_MPI, str(tmp_path / "hpcx/libmpi.so.40"),
                               str(tmp_path / "system/libmpi.so"), "/usr/lib/libnccl.so.2")
    assert problem.startswith("two MPI libraries in one process")
    assert str(tmp_path / "system/libmpi.so") in problem and "OMPI_HOME" in problem


@pytest.mark.parametrize("missing", ["libmpi", "nccl"])
def test_a_missing_library_says_what_to_install(missing):
    problem = nccl_mpi_problem(OPEN_MPI, "/usr/lib/libmpi.so.40",
                               None if missing == "libmpi" else "/usr/lib/libmpi.so.40",
                               None if missing == "nccl" else "/usr/lib/libnccl.so.2",
                               realpath=lambda p: p)
    wanted = "libopenmpi-dev" if missing == "libmpi" else "libnccl2"
    assert wanted in problem and "docs/gpu.md" in problem


def test_library_names():
    assert library_name(MPICH) == "MPICH 5.0.2"
    assert library_name(OPEN_MPI) == "Open MPI v4.1.2"


def test_worlds_compared():
    assert nccl_world_problem(1, 4, 1, 4) is None
    problem = nccl_world_problem(3, 4, 0, 1)
    assert problem.startswith("NNabla's NCCL communicator sees rank 0 of 1 where MPI has "
                              "rank 3 of 4")


def test_ldd_misses_are_read():
    ldd = ("\tlinux-vdso.so.1 (0x00007ffd)\n\tlibcuda.so.1 => not found\n"
           "\tlibcudnn.so.8 => not found\n\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x7f)\n")
    assert missing_libraries(ldd) == ["libcuda.so.1", "libcudnn.so.8"]


def test_the_mpi_library_mpi4py_loaded_is_found():
    code = ("import mpi4py; mpi4py.rc.initialize = False; from mpi4py import MPI; "
            "from utils.process.gpu_stack import loaded_libmpi; print(loaded_libmpi())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert os.path.basename(out).startswith("libmpi.so") and os.path.isfile(out)
    assert out == os.path.realpath(out)
    assert loaded_libmpi() is None or os.path.isfile(loaded_libmpi())


def run_two_ranks(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    """`body` on two ranks of this machine's mpirun; NNabla's start-up INFO lines (which the
    scripts silence at their start) left out of stderr."""
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(body))
    result = subprocess.run([MPIRUN, "-n", "2", sys.executable, str(script)], cwd=REPO,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    result.stderr = "".join(line for line in result.stderr.splitlines(keepends=True)
                            if "[nnabla][INFO]" not in line)
    return result


def test_a_gpu_launch_with_pip_mpich_stops_with_one_line_before_mpi_starts(tmp_path):
    """The README's set-up (pip MPICH) under a GPU context: the NCCL communicator's path."""
    result = run_two_ranks(tmp_path, """
        import sys
        from utils.process.comm import create_communicator
        from utils.process.errors import UsageError
        from utils.process.launch import read_launch
        try:
            create_communicator(read_launch(), "cudnn", ctx=None)
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    """)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: multi-GPU training needs Open MPI")
    assert "MPICH" in lines[0]


STAND_IN = """
    import sys
    import numpy as np
    import nnabla as nn
    import nnabla.communicators
    from nnabla.ext_utils import get_extension_context
    import utils.process.comm as comm
    from utils.process.errors import UsageError
    from utils.process.launch import read_launch

    HALF = get_extension_context("cpu", type_config="half")

    class NcclStandIn:
        '''NNabla's MultiProcessDataParallelCommunicator as its source behaves, on the CPU:
        the world comes from its own MPI library; every array it sends or reduces is cast in
        place to its context's type first.'''
        def __init__(self, ctx):
            self.ctx = ctx
        def init(self):
            from mpi4py import MPI
            self.mpi = MPI.COMM_WORLD
            self.rank, self.size = WORLD(self.mpi)
        def bcast(self, arrays, src=0, inplace=False):
            for a in arrays:
                a.cast(np.float16, self.ctx)
                data = a.get_data("r", np.float16).copy()
                self.mpi.Bcast(data, root=src)
                a.get_data("w", np.float16)[...] = data

    nnabla.communicators.MultiProcessDataParallelCommunicator = NcclStandIn
    # What the checks of the library need (Open MPI, NNabla finding the same libmpi) cannot
    # be met by this machine's MPICH: taken as met, to reach what comes after them.
    comm.NcclCommunicator._library_problem = lambda self, version: None
"""


def test_an_nccl_world_that_is_not_mpis_is_refused(tmp_path):
    result = run_two_ranks(tmp_path, STAND_IN + """
    WORLD = lambda mpi: (0, 1)  # each rank alone, as an Open MPI inside MPICH ranks is
    try:
        comm.create_communicator(read_launch(), "cudnn", HALF)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print("trained alone")
    """)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "trained alone" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: NNabla's NCCL communicator sees rank 0 of 1 where MPI "
                               "has rank 0 of 2")


def test_the_initial_broadcast_keeps_float32_master_weights_under_half(tmp_path):
    result = run_two_ranks(tmp_path, STAND_IN + """
    WORLD = lambda mpi: (mpi.Get_rank(), mpi.Get_size())
    nn.set_default_context(HALF)
    c = comm.create_communicator(read_launch(), "cudnn", HALF)
    fine = np.float32(1 + 2 ** -13)  # float16 rounds it to 1
    value = fine if c.rank == 0 else np.float32(7)
    params = {"w": nn.Variable.from_numpy_array(np.full((3, 2), value, np.float32))}
    c.broadcast_parameters(params)
    got = params["w"].data.get_data("r", np.float32)
    import os  # (a file each: the two ranks' stdout lines can interleave)
    with open(os.path.join(os.path.dirname(__file__), f"rank{c.rank}"), "w") as f:
        f.write(f"{float(got[0, 0] - 1) * 2 ** 13} {got.dtype}")
    """)
    assert result.returncode == 0, result.stderr
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["1.0 float32"] * 2
