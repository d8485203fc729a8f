"""scripts/gpu_smoke.sh: its steps run for real on the CPU (`--cpu`: -c cpu, NCHW, two MPI
ranks for two GPUs), each one's check included; on this machine without a GPU the GPU mode
stops at once with one line. What only a GPU can show (cuDNN, NCCL, DALI's GPU decoding) is
left to whoever first runs it there (docs/gpu.md)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO

from utils.process.context import gpu_available

pytestmark = pytest.mark.slow  # eight short trainings and evaluations

STEPS = ["stack", "lists", "float32", "half", "ema", "resume", "two_ranks", "validation",
         "benchmark"]


def smoke(*args: str, steps: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_smoke.sh"), *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "GPU_SMOKE_STEPS": steps})


def test_every_step_runs_and_is_checked_on_the_cpu(tmp_path):
    result = smoke("--cpu", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    table = result.stdout.split("step        seconds  status\n")[1].splitlines()
    statuses = {line.split()[0]: line.split(None, 2)[2] for line in table[:len(STEPS)]}
    assert list(statuses) == STEPS
    assert statuses.pop("stack") == "skipped: --cpu"
    assert set(statuses.values()) == {"ok"}
    # What the checks rest on, read back here: the resumed run continued the first...
    resume_log = (tmp_path / "logs" / "resume.log").read_text()
    assert re.search(r"resuming from \S+half/checkpoints/\S+ \(epoch 1", resume_log)
    assert (tmp_path / "half" / "param_002.h5").stat().st_size > 0
    # ... the two ranks formed one world, the EMA was written, validation scored the set.
    assert "2 ranks" in (tmp_path / "logs" / "two_ranks.log").read_text()
    assert list((tmp_path / "ema").glob("param_ema_*.h5"))
    scored = json.loads((tmp_path / "validation.json").read_text())
    assert 0 <= scored["top1_error"] <= 1 and scored["num_images"] == 40


def test_a_failing_step_is_reported_and_fails_the_script(tmp_path):
    """The lists step cannot write into a file; only the steps asked for run."""
    (tmp_path / "lists").write_text("in the way\n")
    result = smoke("--cpu", str(tmp_path), steps="lists")
    assert result.returncode == 1
    assert re.search(r"^lists +\d+ +FAILED \(see \S+/logs/lists.log\)$", result.stdout, re.M)
    assert re.search(r"^half +0 +skipped: not in GPU_SMOKE_STEPS$", result.stdout, re.M)
    assert not (tmp_path / "half").exists()


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU")
def test_the_gpu_mode_without_a_gpu_says_so_in_one_line(tmp_path):
    result = smoke(str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_smoke: no GPU that NNabla's CUDA "
                                                   "extension can use here")


def test_it_runs_from_a_checkout_without_venv_as_in_the_docker_image(tmp_path):
    """The image has no .venv (.dockerignore leaves it out; its environment's python and
    Open MPI's mpirun are on the PATH) but has the demo data: the script takes `python`."""
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and not any(p.startswith(("data", "scripts")) for p in ignored)
    copy = tmp_path / "image"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "tmp.*"))
    bin_dir = str(Path(sys.executable).parent)
    result = subprocess.run(["bash", str(copy / "scripts" / "gpu_smoke.sh"), "--cpu",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "GPU_SMOKE_STEPS": "lists",
                                 "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stdout
    assert re.search(r"^lists +\d+ +ok$", result.stdout, re.M)
    assert (tmp_path / "out" / "lists" / "train_small").read_text().count("\n") == 63
