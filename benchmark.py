r"""Measure each network's speed and size: inference and training images/s, parameters, MACs.

For every architecture (default: all of them) at its native input size (or --spatial-size):

- infer img/s: the test-mode network's forward pass (batch-norm running statistics, no
  dropout), as validation.py and infer.py run it;
- train img/s: the training step on the same batch, built by the code train.py runs: forward
  of the training graph with the recipe's loss (-C, default cfg/cos90.yaml), backward, the
  gradient all-reduce (under mpirun) and the recipe's solver update with weight decay;
- parameters (trainable values) and multiply-accumulates per image of the convolutions and
  fully-connected layers, counted from the network's graph (utils/weights/stats.py).

The batches are random and already in memory, so the rates are the network's and not the
data pipeline's. --warmup steps are run and not timed (first-use allocations), then
--iterations steps are timed, fewer once --max-seconds have passed. Under `mpirun -n N`, -b
is per process and the rates are the sums over the processes. The table goes to stdout,
the same rows to the CSV (-o). NNabla's CPU backend runs NCHW only, so --channel-last needs
a GPU; on the CPU -t half runs in float (the precision column says which ran), and a
network whose training step would not fit in the available memory is not trained (its
rate is left empty, and the log says what it would need).
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable, List, Optional, Sequence, Tuple

import utils.process.startup  # noqa: F401  (first: silences NNabla's import-time INFO line)

import nnabla as nn
import numpy as np

from models import build_network, get_architecture
from utils.cli import flags as cli
from utils.cli import help_text
from utils.deploy.export import DEFAULT_OPSET, build_inference_graph, export, sample_images
from utils.deploy.onnx_runtime import OnnxNetwork, threads_for
from utils.deploy.quantize import QUANTIZE_OPSET, quantize_model
from utils.eval.evaluation import build_evaluation_graph
from utils.process.atomic import atomic_write_text, check_output_file
from utils.process.comm import Communicator
from utils.process.errors import OutputError, UsageError
from utils.process.memory import GIBIBYTE, available_memory, check_batch_fits
from utils.process.progress import Progress
from utils.process.run import run
from utils.process.runtime import Runtime, setup_runtime
from utils.recipe.config import TrainConfig, load_config
from utils.recipe.schedules import build_schedule
from utils.recipe.solvers import recipe_solver
from utils.train.step import (
    TrainingNetwork,
    accumulate_gradients,
    apply_update,
    build_training_graph,
    check_layout,
    input_shape,
)
from utils.weights.stats import ModelStats, model_stats


def seconds(text: str) -> float:
    """argparse type: a duration >= 0 (nan would never end a measurement early)."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


ONNX_RUNTIMES = ("onnxruntime", "onnxruntime-int8")  # (their rows follow NNabla's)
CALIBRATION_BATCHES = 4  # of -b random images, for the INT8 model's ranges

EXAMPLES = (
    "python benchmark.py -a resnet50 mobilenet_v2 -b 8 -c cpu",
    "mpirun -n 2 python benchmark.py -a resnet50 -b 64 -t half --channel-last",
)
WRITES = "the -o CSV (default benchmark.csv), rewritten as each network is measured"


def build_parser() -> argparse.ArgumentParser:
    p = help_text.script_parser(__doc__, EXAMPLES, WRITES)
    arch = cli.add_arch_flags(p, required=False, several=True,
                              description="-a takes one or more networks (default: all).")
    cli.add_spatial_size_flag(arch)
    cli.add_channel_last_flag(arch)
    g = help_text.add_group(p, "what to measure",
                            "The training step uses the loss, mixup and solver of -C.")
    cli.add_batch_size_flag(g, 32)
    cli.add_train_config_flag(g)
    g.add_argument("--warmup", type=cli.non_negative_int, default=1, metavar="N",
                   help="untimed steps before each measurement (default: %(default)s)")
    g.add_argument("--iterations", type=cli.positive_int, default=5, metavar="N",
                   help="timed steps of each measurement (default: %(default)s)")
    g.add_argument("--max-seconds", type=seconds, default=60.0, metavar="SECONDS",
                   help="end a measurement's timing after the step that passes this many "
                        "seconds, so the largest networks cost a few steps "
                        "(default: %(default)g)")
    g.add_argument("--runtimes", nargs="+", choices=cli.NETWORK_RUNTIMES, default=["nnabla"],
                   help="what runs the networks, one row each: nnabla, onnxruntime (inference "
                        "on the CPU through the exported model, the export extra; the cores "
                        "shared among a machine's ranks), onnxruntime-int8 (that model "
                        "quantized to INT8) (default: nnabla)")
    g.add_argument("--no-infer", action="store_true", help="skip the inference measurement")
    g.add_argument("--no-train", action="store_true", help="skip the training measurement")
    outputs = help_text.add_group(p, "outputs")
    outputs.add_argument("-o", "--output", default="benchmark.csv", metavar="FILE",
                         help="CSV file of the table, rewritten as each network is measured "
                              "(default: %(default)s)"
                              + help_text.elsewhere("-o", "the CSV file"))
    cli.add_runtime_flags(p)
    return p


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.arch = list(dict.fromkeys(args.arch))  # each once, in the order given
    return args


@dataclass(frozen=True)
class Row:
    """One network's line of the table and of the CSV (a rate is None when not measured)."""

    arch: str
    height: int
    width: int
    parameters: int
    macs_per_image: int
    infer_images_per_s: Optional[float]
    train_images_per_s: Optional[float]
    batch: int
    ranks: int
    layout: str
    precision: str
    backend: str
    runtime: str = "nnabla"


def csv_text(rows: Sequence[Row]) -> str:
    """The rows under a header of the field names; rates to 0.01 image/s, skipped ones empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([f.name for f in fields(Row)])
    for row in rows:
        writer.writerow(["" if v is None else f"{v:.2f}" if isinstance(v, float) else v
                         for v in asdict(row).values()])
    return out.getvalue()


TABLE_COLUMNS = (  # (title, width, the cell of a row)
    ("arch", 20, lambda r: r.arch),
    ("size", 9, lambda r: f"{r.height}x{r.width}"),
    ("params M", 10, lambda r: f"{r.parameters / 1e6:.2f}"),
    ("GMACs", 9, lambda r: f"{r.macs_per_image / 1e9:.3f}"),
    ("infer img/s", 13, lambda r: _rate(r.infer_images_per_s)),
    ("train img/s", 13, lambda r: _rate(r.train_images_per_s)),
    ("batch", 7, lambda r: str(r.batch)),
    ("layout", 8, lambda r: r.layout),
    ("precision", 11, lambda r: r.precision),
    ("runtime", 18, lambda r: r.runtime),
)


def _rate(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def table_text(rows: Sequence[Row]) -> str:
    """A fixed-width table: the architecture left-aligned, the rest right-aligned."""
    def line(cells: Sequence[str]) -> str:
        return "".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, (_, w, _)) in enumerate(zip(cells, TABLE_COLUMNS)))

    lines = [line([title for title, _, _ in TABLE_COLUMNS])]
    lines += [line([cell(r) for _, _, cell in TABLE_COLUMNS]) for r in rows]
    return "\n".join(lines) + "\n"


def processor_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(runtime: Runtime, args: argparse.Namespace) -> str:
    """The header above the table: where and how the numbers were measured."""
    device = "CPU" if runtime.backend == "cpu" else f"GPU {runtime.device_id}"
    ranks = f", {runtime.comm.size} processes (rates summed)" if runtime.comm.size > 1 else ""
    return (f"{processor_name()}, {os.cpu_count()} cores; backend {runtime.backend} on {device}"
            f"{ranks}; nnabla {nn.__version__}; per measurement {args.warmup} warm-up "
            f"step(s), then {args.iterations} timed or fewer after {args.max_seconds:g} s\n")


def timed_steps(step: Callable[[], object], warmup: int, iterations: int, max_seconds: float,
                comm: Communicator, bar: Progress, finish: Callable[[], object]
                ) -> Tuple[int, float]:
    """(steps, seconds): `step` run `warmup` times untimed, then timed `iterations` times or
    until `max_seconds` have passed on any rank (one step at least; every rank runs as many
    steps, as a training step is a collective); `finish` waits for the device to complete
    them (an asynchronous GPU returns before it is done)."""
    for _ in range(warmup):
        step()
        bar.update()
    finish()
    start = time.perf_counter()
    done = 0
    while done < iterations:
        step()
        bar.update()
        done += 1
        if comm.all_reduce_sum([time.perf_counter() - start >= max_seconds])[0]:
            break
    finish()
    return done, time.perf_counter() - start


def network_stats(arch: str, size: Tuple[int, int], num_classes: int) -> ModelStats:
    """Parameters and MACs per image of the network itself: NCHW, 3 channels, batch 1 (the
    4-channel input of half precision adds a zero channel, not a property of the network)."""
    nn.clear_parameters()
    logits, _ = build_network(nn.Variable((1, 3, *size)), num_classes, arch, test=True)
    stats = model_stats(logits)
    nn.clear_parameters()
    return stats


def random_inputs(shape: Tuple[int, ...], num_classes: int, seed: int = 0
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Normalised-looking images and labels: the speed does not depend on the values."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal(shape, dtype=np.float32)
    labels = rng.integers(0, num_classes, (shape[0], 1))
    return images, labels


def train_rate(args: argparse.Namespace, config: TrainConfig, runtime: Runtime, arch: str,
               shape: Tuple[int, ...]) -> float:
    """Images/s of this process's training steps (creates the network's parameters)."""
    graph = build_training_graph(TrainingNetwork(
        arch, args.num_classes, args.channel_last, config, runtime.comm.rank,
        runtime.float_ctx), shape)
    graph.image.d, graph.label.d = random_inputs(shape, args.num_classes, runtime.comm.rank)
    graph.mask.d = 1
    solver = recipe_solver(config, args.type_config, False, shape[0] * runtime.comm.size)
    lr_per_example = build_schedule(config.lr_scheduler, 1)(0)
    batch = shape[0]

    def step() -> None:
        if graph.mixing is not None:
            graph.mixing.resample()
        solver.zero_grad()
        accumulate_gradients(graph, solver, 1)  # (reads the loss: waits for the device)
        apply_update(solver, runtime.comm, lr_per_example, batch * runtime.comm.size)

    bar = Progress(runtime.comm, args.warmup + args.iterations, f"{arch} train",
                   images_per_iteration=batch * runtime.comm.size)
    steps, seconds = timed_steps(step, args.warmup, args.iterations, args.max_seconds,
                                 runtime.comm, bar, lambda: graph.loss.d)
    bar.close()
    return batch * steps / seconds


def infer_rate(args: argparse.Namespace, runtime: Runtime, arch: str,
               shape: Tuple[int, ...]) -> float:
    """Images/s of this process's test-mode forward passes (sharing the training graph's
    parameters when it was built first)."""
    graph = build_evaluation_graph(arch, shape, args.num_classes, args.channel_last, runtime.ctx)
    graph.image.d = random_inputs(shape, args.num_classes, runtime.comm.rank)[0]
    bar = Progress(runtime.comm, args.warmup + args.iterations, f"{arch} infer",
                   images_per_iteration=shape[0] * runtime.comm.size)
    steps, seconds = timed_steps(lambda: graph.scores.forward(clear_buffer=True), args.warmup,
                                 args.iterations, args.max_seconds, runtime.comm, bar,
                                 lambda: graph.scores.d)
    bar.close()
    return shape[0] * steps / seconds


def training_fits(stats: ModelStats, batch: int, runtime: Runtime, arch: str) -> bool:
    """On the CPU, whether the training steps' activations and their gradients (2 x 4 bytes
    per forward value, in every process, taken to share one machine) fit in the available
    memory; logs why not (a step that does not fit gets the job killed, losing every row).
    Every rank gets the same answer."""
    available = available_memory() if runtime.backend == "cpu" else None
    needed = 2 * 4 * stats.forward_values_per_image * batch * runtime.comm.size
    short = available is not None and needed > available
    if not runtime.comm.all_reduce_sum([short])[0]:
        return True
    room = "" if available is None else f" ({available / GIBIBYTE:.1f} GiB)"
    runtime.log(f"{arch}: training not measured: at batch {batch} x {runtime.comm.size} "
                f"process(es) its activations and their gradients take about "
                f"{needed / GIBIBYTE:.1f} GiB, more than the available memory{room}; use a "
                "smaller -b or --spatial-size")
    return False


def measure(args: argparse.Namespace, config: TrainConfig, runtime: Runtime, arch: str) -> Row:
    """One architecture's row: its size, then training (if it fits), then inference."""
    shape, size = batch_shape(args, arch), input_size(args, arch)
    stats = network_stats(arch, size, args.num_classes)
    nn.seed(0)
    rates: List[Optional[float]] = [None, None]
    if not args.no_train and training_fits(stats, args.batch_size, runtime, arch):
        rates[1] = train_rate(args, config, runtime, arch, shape)
    if not args.no_infer:
        rates[0] = infer_rate(args, runtime, arch, shape)
    nn.clear_parameters()
    measured = [r for r in rates if r is not None]
    totals = iter(runtime.comm.all_reduce_sum(measured))
    infer, train = (None if r is None else next(totals) for r in rates)
    return Row(arch, size[0], size[1], stats.parameters, stats.macs_per_image, infer, train,
               args.batch_size, runtime.comm.size, "NHWC" if args.channel_last else "NCHW",
               args.type_config, runtime.backend)


def onnx_row(args: argparse.Namespace, runtime: Runtime, arch: str, name: str) -> Row:
    """One architecture's inference through ONNX Runtime on the CPU: the network (random
    weights, NCHW, float) exported and verified as export.py does, then timed like NNabla's.
    `name` onnxruntime-int8: that model quantized as export.py --int8 does, calibrated on
    seeded random images (the ranges change the values, not the work)."""
    size = input_size(args, arch)
    stats = network_stats(arch, size, args.num_classes)
    nn.seed(0)
    graph = build_inference_graph(arch, args.num_classes, args.batch_size, size)
    images = random_inputs((args.batch_size, 3, *size), args.num_classes, runtime.comm.rank)[0]
    with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch:
        path = os.path.join(scratch, f"{arch}.onnx")
        int8 = name == "onnxruntime-int8"
        export(graph, [path], QUANTIZE_OPSET if int8 else DEFAULT_OPSET)
        if int8:
            quantized = os.path.join(scratch, f"{arch}-int8.onnx")
            quantize_model(path, quantized, (sample_images(images.shape, seed)
                                             for seed in range(CALIBRATION_BATCHES)))
            path = quantized
        network = OnnxNetwork(path, threads_for(runtime.comm))
        bar = Progress(runtime.comm, args.warmup + args.iterations, f"{arch} {name}",
                       images_per_iteration=args.batch_size * runtime.comm.size)
        steps, seconds = timed_steps(lambda: network.logits(images), args.warmup,
                                     args.iterations, args.max_seconds, runtime.comm, bar,
                                     lambda: None)
        bar.close()
    rate = runtime.comm.all_reduce_sum([args.batch_size * steps / seconds])[0]
    return Row(arch, size[0], size[1], stats.parameters, stats.macs_per_image, rate, None,
               args.batch_size, runtime.comm.size, "NCHW", "int8" if int8 else "float", "cpu",
               name)


def is_benchmark_csv(path: str) -> bool:
    """Whether `path` starts with this script's CSV header (an earlier run's output, also of
    a version without the last columns)."""
    first_columns = ",".join(f.name for f in fields(Row)[:6])
    try:
        with open(path, newline="") as f:
            return f.readline().startswith(first_columns)
    except (OSError, UnicodeDecodeError):
        return False


def input_size(args: argparse.Namespace, arch: str) -> Tuple[int, int]:
    """--spatial-size, or the network's own resolution."""
    native = get_architecture(arch).resolution
    return tuple(args.spatial_size) if args.spatial_size else (native, native)


def batch_shape(args: argparse.Namespace, arch: str) -> Tuple[int, ...]:
    """The training batch of -b images at `input_size`."""
    return input_shape(args.batch_size, input_size(args, arch), args.type_config,
                                args.channel_last)


def check_inputs_fit(args: argparse.Namespace) -> None:
    """Every network's random input batch (float32) fits in memory, before any is built."""
    for arch in args.arch:
        shape = batch_shape(args, arch)
        check_batch_fits(4 * int(np.prod(shape, dtype=np.float64)), available_memory(),
                         f"{shape[0]} input images of {arch} ({' x '.join(map(str, shape))})",
                         "use a smaller -b or --spatial-size", where="as float32 pixels alone")


def write_rows(path: str, rows: Sequence[Row]) -> None:
    """The CSV so far; if it cannot be written, the rows go to stdout first, so that what
    was measured is not lost with the file."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write_text(path, csv_text(rows))
    except OSError as e:
        sys.stdout.write(table_text(rows))
        raise OutputError(f"cannot write -o {path}: {e.strerror or e}; the rows measured are "
                          "printed above") from None


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    runtime = setup_runtime(args)  # (-t half becomes float on the CPU, and says so)
    check_layout(args.channel_last, runtime.backend)
    if args.no_infer and (args.no_train or "nnabla" not in args.runtimes):
        raise UsageError("--no-infer and --no-train leave nothing to measure"
                         if args.no_train else
                         "--no-infer with --runtimes onnxruntime leaves nothing to measure (ONNX "
                         "Runtime's rows are inference)")
    for name in args.runtimes:
        cli.check_network_runtime(name, runtime.backend)
    config = load_config(args.train_config)
    replacing = check_output_file(args.output, "-o", "a benchmark CSV", is_benchmark_csv,
                                  "benchmark.csv")
    check_inputs_fit(args)
    if replacing:
        runtime.log(replacing)
    rows = []
    for i, arch in enumerate(args.arch):
        if "nnabla" in args.runtimes:
            rows.append(measure(args, config, runtime, arch))
        for name in ONNX_RUNTIMES:
            if name in args.runtimes and not args.no_infer:
                rows.append(onnx_row(args, runtime, arch, name))
        if runtime.comm.is_main:  # after each network: a run stopped later keeps these rows
            write_rows(args.output, rows)
        runtime.log(f"{arch} measured ({i + 1} of {len(args.arch)})")
    if runtime.comm.is_main:
        sys.stdout.write(describe_machine(runtime, args) + table_text(rows))
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
