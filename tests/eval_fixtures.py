"""Weight files, demo validation lists and script runs for the infer / validation / convert tests.

Weight files are made at test time by building a network with random weights (batch-norm
statistics and affine parameters randomised too, so that a wrong transposition or a wrong
channel shows) and saving it; nothing is downloaded.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import nnabla as nn
import numpy as np
from paths import DEMO, HANG_GUARD, REPO

from models import build_network
from utils.process.run import run
from utils.weights.files import network_parameters, write_parameters


def randomise_parameters(seed: int = 0) -> None:
    """Random BN statistics, affine parameters and biases (convolution weights already are).

    Affine weights get std 1/sqrt(fan-in), a spread of logits that tells the classes apart:
    the official N(0, 0.01) start of the MobileNet and EfficientNet classifiers gives nearly
    uniform probabilities."""
    rng = np.random.RandomState(seed)
    for name, v in nn.get_parameters(grad_only=False).items():
        if name.endswith("affine/W"):
            v.d = rng.randn(*v.shape) / np.sqrt(v.shape[0])
        elif name.endswith("/var"):
            v.d = rng.uniform(0.5, 1.5, v.shape)
        elif name.endswith(("/mean", "/beta", "/b")):
            v.d = rng.randn(*v.shape) * 0.1
        elif name.endswith("/gamma"):
            v.d = rng.uniform(0.5, 1.5, v.shape)


def make_weight_file(path: Path, arch: str, num_classes: int = 10, size: int = 32,
                     seed: int = 0) -> Path:
    """Build `arch` (NCHW, 3 channels) with random weights and save it; the scope is cleared."""
    nn.clear_parameters()
    nn.seed(seed)
    build_network(nn.Variable((1, 3, size, size)), num_classes, arch, test=True)
    randomise_parameters(seed)
    write_parameters(str(path), network_parameters())
    nn.clear_parameters()
    return path


def demo_val_images(count: int) -> List[Tuple[str, int]]:
    """(file name, class id) of the first `count` demo validation images."""
    labels = (DEMO / "val_ground_truth.txt").read_text().split()
    return [(f"ILSVRC2012_val_{i:08d}.JPEG", int(labels[i - 1])) for i in range(1, count + 1)]


def write_val_list(path: Path, images: Sequence[Tuple[str, int]]) -> Path:
    path.write_text("".join(f"{name} {label}\n" for name, label in images))
    return path


def run_script(script: str, *args: str, mpi_ranks: int = 0,
               check: bool = False) -> subprocess.CompletedProcess:
    """Run a top-level script as a user would, from the repository folder."""
    command = [sys.executable, str(REPO / script), *map(str, args)]
    if mpi_ranks:
        mpirun = Path(sys.executable).parent / "mpirun"
        command = [str(mpirun), "-n", str(mpi_ranks), *command]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env,
                            timeout=HANG_GUARD)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stderr}")
    return result


def run_main(main: Callable[[Sequence[str]], int], *args: object) -> int:
    """A script's main in this process, with the one-line error handling of the command."""
    return run(lambda: main([str(a) for a in args]))


def error_lines(stderr: str) -> List[str]:
    """stderr without NNabla's start-up log line."""
    return [line for line in stderr.splitlines() if "[nnabla][INFO]" not in line]
