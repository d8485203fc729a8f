"""What watching a run costs: train.py's steady-state images/s with TensorBoard on (the
default) against --no-tensorboard, in the same run of this script.

train.py runs as a user runs it (CPU, DALI decoding the demo JPEGs, no validation),
alternately with and without TensorBoard, each for 1 and for --epochs epochs. Two measures:

- wall clock: a run's fastest epoch after the first, from Iteration-time (train_batch.png
  and the pipeline start fall in epoch 0; checkpoints and plots between epochs, outside the
  timer); the best run of each kind. On a CPU shared with other work this varies by tens of
  per cent from run to run;
- CPU time, which other work on the machine changes less: the CPU seconds of the long run
  less those of the 1-epoch run (start-up, first epoch) are the steady-state epochs' own,
  TensorBoard's event writes included; the median over rounds;
- what TensorBoard adds to each point of the curves, measured in this process (the
  output sink's iteration event with and without the event file, CPU time), against a training
  iteration's CPU time: the ratio a noiseless machine would show.

The curves within the epoch get a point every --log-interval iterations (default 1, the most
it can cost; a run's own default is about 100 points an epoch). Target: on / off >= 0.98.
    .venv/bin/python benchmarks/bench_tensorboard.py [--arch resnet18 --repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import REPO, run_train, train_rate, write_train_list  # noqa: E402

sys.path.insert(0, str(REPO))

from utils.outputs.sink import IterationPoint, output_sink  # noqa: E402

KINDS = {"on": [], "off": ["--no-tensorboard"]}


def point_seconds(folder: Path, board: bool, points: int = 2000) -> float:
    """CPU seconds of one point of the curves within the epoch (series lines, and with
    `board` the TensorBoard scalars, written in this thread)."""
    folder.mkdir()
    outputs = output_sink(str(folder), 0, lambda line: None)
    outputs.start_session(0, 0, resumed=False, tensorboard=board)
    start = time.process_time()
    for step in range(1, points + 1):
        outputs.iteration(IterationPoint(step, 0.5, 0.25, 1e-3, 80.0))
    outputs.close()
    return (time.process_time() - start) / points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="mobilenet_v3_small")
    p.add_argument("--iterations", type=int, default=30, help="iterations per epoch")
    p.add_argument("--epochs", type=int, default=4, help="epochs of the long runs")
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=32, help="spatial size")
    p.add_argument("--threads", type=int, default=1, help="DALI threads")
    p.add_argument("--log-interval", type=int, default=1, help="train.py --log-interval")
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds")
    args = p.parse_args()
    wall: Dict[str, List[float]] = {k: [] for k in KINDS}
    cpu: Dict[str, List[float]] = {k: [] for k in KINDS}  # images per CPU second
    steady_images = (args.epochs - 1) * args.iterations * args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train_list = folder / "train_list"
        write_train_list(train_list, args.iterations * args.batch_size)
        common = (args.arch, args.batch_size, args.size, train_list)
        for r in range(args.repeats):
            for kind, flags in KINDS.items():
                extra = ["--log-interval", str(args.log_interval), *flags]
                short = run_train(*common, folder / f"{kind}{r}-short", args.threads,
                                  extra=extra, epochs=1)
                long_run = folder / f"{kind}{r}"
                before = os.times()
                wall[kind].append(train_rate(*common, long_run, args.threads, extra=extra,
                                             epochs=args.epochs))
                after = os.times()
                seconds = after.children_user + after.children_system - \
                    before.children_user - before.children_system
                cpu[kind].append(steady_images / (seconds - short))
                print(f"round {r}: TensorBoard {kind}: {wall[kind][-1]:.1f} img/s (wall), "
                      f"{cpu[kind][-1]:.1f} img per CPU s", file=sys.stderr)
        added = point_seconds(folder / "points-on", True) - \
            point_seconds(folder / "points-off", False)
    print(f"CPU, {os.cpu_count()} cores, {args.arch}, {args.size}x{args.size}, batch "
          f"{args.batch_size}, {args.iterations} iterations an epoch, a point every "
          f"{args.log_interval} iteration(s), {args.repeats} rounds")
    for kind in KINDS:
        print(f"TensorBoard {kind:<4} wall {max(wall[kind]):>7.1f} img/s "
              f"[{', '.join(f'{v:.1f}' for v in wall[kind])}]   CPU "
              f"{statistics.median(cpu[kind]):>7.1f} img/CPU-s "
              f"[{', '.join(f'{v:.1f}' for v in cpu[kind])}]")
    iteration = args.batch_size / statistics.median(cpu["off"])  # CPU s per iteration
    predicted = iteration / (iteration + added / args.log_interval)
    print(f"TensorBoard adds {1e3 * added:.2f} ms CPU per point; an iteration takes "
          f"{1e3 * iteration:.0f} ms CPU")
    print(f"ratio on / off: wall {max(wall['on']) / max(wall['off']):.3f}, CPU "
          f"{statistics.median(cpu['on']) / statistics.median(cpu['off']):.3f}, per point "
          f"{predicted:.4f} (target >= 0.98)")


if __name__ == "__main__":
    main()
