"""The cost of stochastic depth and of distillation: the training step of train.py (the
graph of utils/train/step.py, forward, backward and the recipe's solver update, NNabla
re-seeded per iteration where the graph draws) with them against the same step without,
in one process on the same in-memory batches.

Variants: the plain step; `drop_path_rate` 0.05 (ResNet strikes back's) and 0.2; a teacher
of the student's own architecture and one of another (`--teacher-arch`), run in test mode
on each batch. The rounds alternate and the best of each is kept (on a shared CPU identical
runs vary by ~10 %); the ratio is to the plain step of the same round set. Run:
    .venv/bin/python benchmarks/bench_regularisation.py [--arch resnet18 -b 16 --size 32]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import nnabla as nn
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils.recipe.config import TrainConfig, load_config  # noqa: E402
from utils.recipe.solvers import recipe_solver  # noqa: E402
from utils.train.step import (  # noqa: E402
    Teacher,
    TrainingNetwork,
    accumulate_gradients,
    build_training_graph,
    iteration_seed,
)

CLASSES = 10


def step_rate(arch: str, config: TrainConfig, teacher: Optional[Teacher], batch: int,
              size: int, iterations: int, warmup: int = 3) -> float:
    """Images/s of the training step on in-memory batches."""
    nn.clear_parameters()
    nn.seed(0)
    rng = np.random.default_rng(0)
    batches = rng.standard_normal((4, batch, 3, size, size)).astype(np.float32)
    graph = build_training_graph(TrainingNetwork(arch, CLASSES, False, config, teacher=teacher),
                                 (batch, 3, size, size))
    graph.label.d = rng.integers(0, CLASSES, (batch, 1))
    graph.mask.d = 1
    solver = recipe_solver(config, "float", False, batch)
    solver.set_learning_rate(0.01)
    start = 0.0
    for i in range(warmup + iterations):
        if i == warmup:
            start = time.perf_counter()
        graph.image.d = batches[i % len(batches)]
        if graph.draws_random:
            nn.seed(iteration_seed(0, 0, 0, i))
        solver.zero_grad()
        accumulate_gradients(graph, solver, 1.0)
        solver.update()
    rate = batch * iterations / (time.perf_counter() - start)
    nn.clear_parameters()
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18", help="the student (a ResNet)")
    p.add_argument("--other-teacher", default="mobilenet_v3_small",
                   help="the teacher of another architecture")
    p.add_argument("-b", "--batch-size", type=int, default=16)
    p.add_argument("--size", type=int, default=32, help="spatial size")
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds, best kept")
    args = p.parse_args()
    base = load_config(REPO / "cfg" / "quickstart.yaml")
    variants = {
        "plain": (base, None),
        "drop_path 0.05": (dataclasses.replace(base, drop_path_rate=0.05), None),
        "drop_path 0.2": (dataclasses.replace(base, drop_path_rate=0.2), None),
        f"teacher {args.arch}": (base, args.arch),
        f"teacher {args.other_teacher}": (base, args.other_teacher),
    }
    rates: Dict[str, List[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (config, teacher_arch) in variants.items():
            teacher = Teacher(teacher_arch, "default") if teacher_arch else None
            rates[name].append(step_rate(args.arch, config, teacher, args.batch_size,
                                         args.size, args.iterations))
    print(f"CPU, {os.cpu_count()} cores, {args.arch} at {args.size}x{args.size}, batch "
          f"{args.batch_size}, {args.iterations} steps, best of {args.repeats} "
          "(all rounds in brackets)")
    plain = max(rates["plain"])
    print(f"{'variant':<32}{'img/s':>10}{'ratio':>8}")
    for name, values in rates.items():
        print(f"{name:<32}{max(values):>10.1f}{max(values) / plain:>8.3f}    "
              f"[{', '.join(f'{v:.1f}' for v in values)}]")


if __name__ == "__main__":
    main()
