"""What watching a run costs: train.py's steady-state images/s with TensorBoard on (the
default) against --no-tensorboard, in the same run.

train.py runs as a user runs it (CPU, DALI decoding the demo JPEGs, no validation),
alternately with and without TensorBoard; a run's rate is that of its fastest epoch after
the first, from Iteration-time (train_batch.png and the first pipeline start fall in epoch
0; validation, checkpoints and plots fall between epochs, outside the timer). The curves
within the epoch get a point every --log-interval iterations (default 1, the most it can
cost; a run's own default is about 100 points an epoch). The rounds alternate and the best
of each is kept: on a shared CPU identical runs vary by ~10 %. Target: on / off >= 0.98. Run:
    .venv/bin/python benchmarks/bench_tensorboard.py [--arch resnet18 --repeats 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import train_rate, write_train_list  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="mobilenet_v3_small")
    p.add_argument("--iterations", type=int, default=30, help="iterations per epoch")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run")
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=32, help="spatial size")
    p.add_argument("--threads", type=int, default=1, help="DALI threads")
    p.add_argument("--log-interval", type=int, default=1, help="train.py --log-interval")
    p.add_argument("--repeats", type=int, default=4, help="alternating rounds, best kept")
    args = p.parse_args()
    rates: Dict[str, List[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train_list = folder / "train_list"
        write_train_list(train_list, args.iterations * args.batch_size)
        for r in range(args.repeats):
            for name, flags in (("on", []), ("off", ["--no-tensorboard"])):
                rates[name].append(train_rate(
                    args.arch, args.batch_size, args.size, train_list, folder / f"{name}{r}",
                    args.threads, extra=["--log-interval", str(args.log_interval), *flags],
                    epochs=args.epochs))
                print(f"round {r}: TensorBoard {name}: {rates[name][-1]:.1f} img/s",
                      file=sys.stderr)
    best = {k: max(v) for k, v in rates.items()}
    print(f"CPU, {os.cpu_count()} cores, {args.arch}, {args.size}x{args.size}, batch "
          f"{args.batch_size}, {args.iterations} iterations an epoch, a point every "
          f"{args.log_interval}, best epoch of {args.epochs - 1} x {args.repeats} runs")
    for name, values in rates.items():
        print(f"TensorBoard {name:<4}{best[name]:>8.1f} img/s  "
              f"[{', '.join(f'{v:.1f}' for v in values)}]")
    print(f"ratio on / off: {best['on'] / best['off']:.3f} (target >= 0.98)")


if __name__ == "__main__":
    main()
