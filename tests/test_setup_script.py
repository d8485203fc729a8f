"""scripts/setup.sh finds a CPython NNabla supports by itself, or says what to install.

Each test runs a copy of the script in its own folder (so it makes its own `.venv`) with a
PATH holding only the basic tools and the interpreters the test puts there, and a pyenv root
of the test's making. Requirements are empty and pip never reaches an index.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO

pytestmark = pytest.mark.slow  # every test here runs scripts end to end

# What setup.sh calls besides the interpreters it looks for.
TOOLS = ("bash", "cat", "cut", "basename", "dirname", "ls", "mkdir", "rm", "sort", "tr",
         "sha256sum")
REAL_PYTHON = os.path.realpath(sys.executable)  # the 3.8-3.10 interpreter behind the venv
REAL_VERSION = "{}.{}".format(*sys.version_info[:2])
NO_PYTHON_MESSAGE = "setup: no CPython 3.8-3.10 found"


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def forwarding(path: Path, target: str) -> Path:
    """An interpreter entry point that runs `target` (as a pyenv version's bin/python would)."""
    return executable(path, f'#!/bin/sh\nexec "{target}" "$@"\n')


@pytest.fixture
def checkout(tmp_path):
    """A folder with setup.sh, empty requirement files, a bare PATH and an empty pyenv root."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", root / "scripts")
    for name in ("requirements.txt", "requirements-dev.txt", "requirements-export.txt",
                 "requirements-tensorboard.txt"):
        (root / name).write_text("# nothing to install in this test\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (tmp_path / "pyenv" / "versions").mkdir(parents=True)
    return root


def setup(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    tmp = root.parent
    environment = {"PATH": str(tmp / "bin"), "HOME": str(tmp), "PIP_NO_INDEX": "1",
                   "PYENV_ROOT": str(tmp / "pyenv"), **env}
    return subprocess.run(["bash", str(root / "scripts" / "setup.sh"), *args], env=environment,
                          capture_output=True, text=True, timeout=300)


def test_without_a_supported_python_it_says_what_to_install(checkout):
    # An interpreter NNabla has no wheels for, a program answering anything, and a pyenv shim
    # that fails when run.
    executable(checkout.parent / "bin" / "python3.11", "#!/bin/sh\necho 'Python 3.11.2'\n")
    executable(checkout.parent / "bin" / "python3", "#!/bin/sh\necho 3.10\n")
    executable(checkout.parent / "bin" / "python3.10",
               "#!/bin/sh\necho \"pyenv: python3.10: command not found\" >&2\nexit 127\n")
    result = setup(checkout)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(NO_PYTHON_MESSAGE)
    assert "pyenv install 3.10" in lines[0] and "PYTHON=" in lines[0]
    assert not (checkout / ".venv").exists()


def test_a_python_that_is_not_supported_is_refused_by_name(checkout):
    result = setup(checkout, PYTHON="/nonexistent/python3.10")
    assert result.returncode == 1
    assert "PYTHON=/nonexistent/python3.10 is not a working CPython 3.8-3.10" in result.stderr
    assert setup(checkout, "--cuda").returncode == 2


def test_it_finds_the_newest_pyenv_version_after_a_failing_shim(checkout):
    executable(checkout.parent / "bin" / "python3.10", "#!/bin/sh\nexit 127\n")
    versions = checkout.parent / "pyenv" / "versions"
    for version in ("3.10.2", "3.10.10", "3.9.18"):
        forwarding(versions / version / "bin" / "python", REAL_PYTHON)
    result = setup(checkout, "--dev")
    assert result.returncode == 0, result.stderr
    wanted = f"creating .venv with {versions}/3.10.10/bin/python (Python {REAL_VERSION})"
    assert wanted in result.stdout
    assert "installing requirements.txt requirements-dev.txt requirements-tensorboard.txt" \
        in result.stdout
    venv_python = checkout / ".venv" / "bin" / "python"
    assert subprocess.run([str(venv_python), "-c", "import sys; assert sys.prefix != "
                           "sys.base_prefix"], check=False).returncode == 0
    # Set up again, with fewer extras: nothing to create, nothing to install.
    again = setup(checkout)
    assert again.returncode == 0 and again.stdout == ""
    # A changed requirements file is installed again, and only that one is named.
    (checkout / "requirements-dev.txt").write_text("# changed\n")
    changed = setup(checkout, "--dev")
    assert changed.returncode == 0 and changed.stdout.strip() == (
        "setup: installing requirements-dev.txt")
    # The TensorBoard server alone, named once when two options ask for it.
    (checkout / "requirements-tensorboard.txt").write_text("# changed too\n")
    server = setup(checkout, "--tensorboard", "--dev")
    assert server.returncode == 0 and server.stdout.strip() == (
        "setup: installing requirements-tensorboard.txt")


def test_python_on_the_path_comes_before_pyenv(checkout):
    forwarding(checkout.parent / "bin" / "python3.10", REAL_PYTHON)
    forwarding(checkout.parent / "pyenv" / "versions" / "3.10.99" / "bin" / "python",
               REAL_PYTHON)
    result = setup(checkout)
    assert result.returncode == 0, result.stderr
    assert f"creating .venv with {checkout.parent}/bin/python3.10" in result.stdout


def test_an_unversioned_python3_is_used_when_it_is_supported(checkout):
    forwarding(checkout.parent / "bin" / "python3", REAL_PYTHON)
    result = setup(checkout)
    assert result.returncode == 0, result.stderr
    wanted = f"creating .venv with {checkout.parent}/bin/python3 (Python {REAL_VERSION})"
    assert wanted in result.stdout


def test_dev_as_root_installs_the_system_test_packages_dpkg_lacks(checkout):
    """With apt (here a stand-in recording its calls) and root, --dev installs what
    tests/test_slurm.py and tests/test_two_hosts.py need and dpkg does not list as installed;
    a plain set-up does not."""
    if os.geteuid() != 0:
        pytest.skip("setup.sh installs system packages only as root")
    bin_dir = checkout.parent / "bin"
    forwarding(bin_dir / "python3.10", REAL_PYTHON)
    (bin_dir / "grep").symlink_to(shutil.which("grep"))
    calls = checkout.parent / "apt-get.calls"
    executable(bin_dir / "apt-get", f'#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >> {calls}\n')
    executable(bin_dir / "dpkg-query",  # arguments: -W -f=${Status} <package>
               '#!/bin/sh\n[ "$3" = iproute2 ] && printf "install ok installed"\n')
    plain = setup(checkout)
    assert plain.returncode == 0, plain.stderr
    assert not calls.exists()
    dev = setup(checkout, "--dev")
    assert dev.returncode == 0, dev.stderr
    wanted = "slurm-wlm munge libpmix-dev openssh-server"
    assert f"setup: apt-get installing {wanted}\n" in dev.stdout
    assert calls.read_text() == f" update -qq\nnoninteractive install -qq -y {wanted}\n"


def test_gpu_installs_all_but_pip_mpich_then_reports_the_stack(checkout):
    """--gpu installs requirements.txt without pip's MPICH (which cannot serve NNabla's
    multi-GPU communicator) and ends with the stack check, failing when it fails. The check
    itself (utils/process/gpu_stack.py, tests/test_gpu_stack.py) needs NNabla and mpi4py, which this
    empty environment has not: a stand-in prints a row and returns the status asked."""
    bin_dir = checkout.parent / "bin"
    forwarding(bin_dir / "python3.10", REAL_PYTHON)
    (bin_dir / "grep").symlink_to(shutil.which("grep"))
    (checkout / "requirements.txt").write_text("mpich==5.0.2\n")  # no index: uninstallable
    (checkout / "requirements-gpu.txt").write_text("# the extension: not installed here\n")
    (checkout / "utils" / "process").mkdir(parents=True)
    executable(checkout / "utils" / "process" / "gpu_stack.py",
               "import os, sys\nprint('stand-in row')\n"
               "sys.exit(int(os.environ['STACK_STATUS']))\n")
    for package in ("utils", "utils/process"):
        (checkout / package / "__init__.py").write_text("")
    plain = setup(checkout, STACK_STATUS="0")
    assert plain.returncode != 0 and "mpich" in plain.stderr  # the line --gpu leaves out
    gpu = setup(checkout, "--gpu", STACK_STATUS="0")
    assert gpu.returncode == 0, gpu.stderr
    assert "setup: the GPU stack (python -m utils.process.gpu_stack):\nstand-in row\n" in gpu.stdout
    missing = setup(checkout, "--gpu", STACK_STATUS="1")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith(
        "setup: NNabla's CUDA extension is installed but cannot run here until the pieces "
        "marked MISSING are installed")
