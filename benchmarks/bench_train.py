"""train.py's steady-state images/s against a bare NNabla training loop, and 2 ranks vs 1.

1. train.py is run as a user runs it (CPU, DALI decoding the demo JPEGs, no validation) for
   two epochs; its steady state is epoch 1's seconds per iteration from Iteration-time
   (epoch 0 pays the first-iteration allocations and the pipeline start; checkpoints and
   plots fall between epochs, outside the timer).
2. In this process, the same network, batch and input size run the bare loop
   `x.d = batch; loss.forward(); zero_grad; loss.backward(); weight_decay; update` with
   nnabla's Momentum solver on batches already in memory, a few warm-up steps excluded.
   The ratio (1) / (2) is what train.py's machinery costs (target >= 0.95).
3. train.py under `mpirun -n 2` with the same per-rank batch and twice the images (the
   same iterations per epoch): its global images/s against the 1-rank run's. NNabla's CPU
   backend is single-threaded, so ranks are the only way to use a second core.

The rounds alternate and the best of each is kept: on a shared CPU identical runs vary by
~10 %. Run:
    .venv/bin/python benchmarks/bench_train.py [--archs resnet18 --iterations 12 -b 32]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import build_network  # noqa: E402
from utils.outputs.monitor import read_series, series_path  # noqa: E402

DEMO_TRAIN = REPO / "data" / "demo" / "train"
DEFAULT_ITERATIONS = {"mobilenet_v3_small": 30, "resnet18": 10}


def write_train_list(path: Path, count: int) -> None:
    """`count` demo images, classes interleaved (repeating the set if it is too small)."""
    classes = sorted(os.listdir(DEMO_TRAIN))
    per_class = [sorted(os.listdir(DEMO_TRAIN / c)) for c in classes]
    rows = []
    for i in range(count):
        c = i % len(classes)
        files = per_class[c]
        rows.append(f"{classes[c]}/{files[(i // len(classes)) % len(files)]} {c}\n")
    path.write_text("".join(rows))


def run_train(arch: str, batch: int, size: int, train_list: Path, monitor: Path,
              threads: int, ranks: int = 1, extra: Sequence[str] = (), epochs: int = 2
              ) -> float:
    """Run train.py as a user runs it (no validation; `extra`: more flags); return the CPU
    seconds its processes took."""
    command = [sys.executable, str(REPO / "train.py"), "-a", arch, "-b", str(batch),
               "--spatial-size", str(size), "-C", str(REPO / "cfg" / "quickstart.yaml"),
               "-e", str(epochs), "-T", str(DEMO_TRAIN), "--train-list", str(train_list),
               "--num-classes", "10", "-v", "0", "-s", "1000", "--keep-checkpoints", "1",
               "--dali-num-threads", str(threads), "-m", str(monitor), *extra]
    if ranks > 1:
        command = [str(Path(sys.executable).parent / "mpirun"), "-n", str(ranks), *command]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True,
                   env={**os.environ, "MPLBACKEND": "Agg"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def train_rate(arch: str, batch: int, size: int, train_list: Path, monitor: Path,
               threads: int, ranks: int = 1, extra: Sequence[str] = (), epochs: int = 2
               ) -> float:
    """Global images/s of train.py's fastest epoch after the first (of `epochs`)."""
    run_train(arch, batch, size, train_list, monitor, threads, ranks, extra, epochs)
    rows = read_series(series_path(str(monitor), "Iteration-time"))
    seconds_per_iteration = min(seconds for epoch, seconds in rows if epoch >= 1)
    return batch * ranks / seconds_per_iteration


def bare_rate(arch: str, batch: int, size: int, iterations: int, warmup: int = 3) -> float:
    """Images/s of the bare training step on in-memory batches, in this process."""
    nn.clear_parameters()
    nn.seed(0)
    rng = np.random.default_rng(0)
    batches = rng.standard_normal((4, batch, 3, size, size)).astype(np.float32)
    x = nn.Variable((batch, 3, size, size))
    label = nn.Variable((batch, 1))
    label.d = rng.integers(0, 10, (batch, 1))
    pred, _ = build_network(x, 10, arch, test=False)
    loss = F.mean(F.softmax_cross_entropy(pred, label))
    solver = S.Momentum(0.01, 0.9)
    solver.set_parameters(nn.get_parameters())
    start = 0.0
    for i in range(warmup + iterations):
        if i == warmup:
            start = time.perf_counter()
        x.d = batches[i % len(batches)]
        loss.forward(clear_no_need_grad=True)
        solver.zero_grad()
        loss.backward(clear_buffer=True)
        solver.weight_decay(5e-5)
        solver.update()
    rate = batch * iterations / (time.perf_counter() - start)
    nn.clear_parameters()
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=list(DEFAULT_ITERATIONS))
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations per epoch (default: 30 for mobilenet_v3_small, 10 for "
                        "resnet18, 20 otherwise)")
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=32, help="spatial size")
    p.add_argument("--threads", type=int, default=1, help="DALI threads per process")
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds, best kept")
    p.add_argument("--no-mpi", action="store_true", help="skip the 2-rank measurement")
    args = p.parse_args()
    b = args.batch_size
    results: Dict[str, Dict[str, List[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for arch in args.archs:
            iterations = args.iterations or DEFAULT_ITERATIONS.get(arch, 20)
            one, two = folder / f"{arch}_1", folder / f"{arch}_2"
            write_train_list(one, iterations * b)
            write_train_list(two, 2 * iterations * b)
            rates: Dict[str, List[float]] = {"train.py": [], "bare loop": [], "2 ranks": []}
            for r in range(args.repeats):
                rates["train.py"].append(train_rate(arch, b, args.size, one,
                                                   folder / f"m_{arch}_{r}", args.threads))
                rates["bare loop"].append(bare_rate(arch, b, args.size, iterations))
                if not args.no_mpi:
                    rates["2 ranks"].append(train_rate(arch, b, args.size, two,
                                                       folder / f"m2_{arch}_{r}",
                                                       args.threads, ranks=2))
            results[arch] = {k: v for k, v in rates.items() if v}
            print(f"{arch}: done ({iterations} iterations per epoch)", file=sys.stderr)

    print(f"CPU, {os.cpu_count()} cores, {args.size}x{args.size}, batch {b} per process, "
          f"DALI threads {args.threads}, best of {args.repeats} (all runs in brackets)")
    print(f"{'arch':<20}{'train.py img/s':>16}{'bare img/s':>12}{'ratio':>8}"
          f"{'2 ranks img/s':>16}{'speed-up':>10}")
    for arch, rates in results.items():
        best = {k: max(v) for k, v in rates.items()}
        line = (f"{arch:<20}{best['train.py']:>16.1f}{best['bare loop']:>12.1f}"
                f"{best['train.py'] / best['bare loop']:>8.3f}")
        if "2 ranks" in best:
            line += f"{best['2 ranks']:>16.1f}{best['2 ranks'] / best['train.py']:>10.2f}"
        print(line)
        for name, values in rates.items():
            print(f"    {name:<10} [{', '.join(f'{v:.1f}' for v in values)}]")
    print("target: train.py / bare loop >= 0.95")


if __name__ == "__main__":
    main()
