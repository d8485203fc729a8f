"""Convert a weight file between NCHW and NHWC, and between 3 and 4 input channels.

Works for every architecture: every 4-D tensor (convolution kernels, including grouped and
depthwise ones, batch-norm parameters and statistics, the ResNet family's 1x1-convolution
classifier) is transposed; biases and affine classifiers have no layout and are copied as
they are. The first convolution is found by looking, whatever its name. A 4th input channel
is only ever fed zeros (mixed-precision NHWC networks), so adding or dropping it leaves the
network's outputs unchanged. The output is written atomically and never over the input; a
refused conversion or a file that is not NNabla's is one line on stderr, status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import utils.process.startup  # noqa: F401  (first: silences NNabla's import-time INFO line)

from utils.cli import flags as cli
from utils.cli import help_text
from utils.process.errors import UserError
from utils.process.run import run
from utils.weights.files import Layout, adapt, is_parameter_file, open_weights, write_parameters


class ConversionRefused(UserError, ValueError):
    """A conversion that would harm the input."""


EXAMPLES = (
    "python convert_parameter_format.py rn50-nhwc.h5 rn50-nchw.h5 -m nchw -3",
    "python convert_parameter_format.py rn50.h5 rn50-nhwc.h5 -m nhwc --force-4-channels",
)
WRITES = "OUTPUT, an NNabla weight file (.h5); nothing when the input is already as asked"


def build_parser() -> argparse.ArgumentParser:
    p = help_text.script_parser(__doc__, EXAMPLES, WRITES)
    p.add_argument("input", metavar="INPUT",
                   help="NNabla weight file (.h5) to read, or the name of a published one "
                        "(downloaded once into the cache)")
    p.add_argument("output", metavar="OUTPUT", help="weight file to write (not the input)")
    conversion = help_text.add_group(p, "conversion",
                                     "What is not asked for stays as in the input.")
    conversion.add_argument("-m", "--memory-layout", type=str.lower, choices=("nchw", "nhwc"),
                            default=None,
                            help="target layout, any case (default: keep the input's "
                                 "layout)" + help_text.elsewhere("-m", "the memory layout"))
    channels = conversion.add_mutually_exclusive_group()
    channels.add_argument("-3", "--force-3-channels", action="store_const", const=3,
                          dest="channels",
                          help="give the first convolution 3 input channels (drops the "
                               "zero-fed 4th channel of mixed-precision NHWC files)")
    channels.add_argument("--force-4-channels", action="store_const", const=4,
                          dest="channels",
                          help="give the first convolution 4 input channels (adds a zero "
                               "one, as mixed-precision NHWC training expects)")
    cli.add_no_download_flag(conversion)
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def target_layout(source: Layout, memory_layout: Optional[str], channels: Optional[int]) -> Layout:
    """The layout asked for; what is not asked for stays as in the source."""
    channel_last = source.channel_last if memory_layout is None else memory_layout == "nhwc"
    return Layout(channel_last, source.channels if channels is None else channels)


def check_paths(input_path: str, output_path: str) -> None:
    """Refuse to write over the input, under a name that is not a parameter file's (an
    HDF5 file named out.nnp would pass for a model), or over a file of another kind."""
    same = os.path.abspath(input_path) == os.path.abspath(output_path) or (
        os.path.exists(input_path) and os.path.exists(output_path)
        and os.path.samefile(input_path, output_path))
    if same:
        raise ConversionRefused(f"{output_path} is the input file; choose another output "
                                "path (the input is never overwritten)")
    if not output_path.lower().endswith(".h5"):
        raise ConversionRefused(f"{output_path}: the output is an NNabla parameter file and "
                                "must be named *.h5 (export.py writes .nnp and .onnx models)")
    if os.path.isfile(output_path) and not is_parameter_file(output_path):
        raise ConversionRefused(f"{output_path} exists and is not an NNabla parameter file; "
                                "it is kept: remove it or choose another output path")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    check_paths(args.input, args.output)
    weights = open_weights(args.input, download=not args.no_download)
    params, source = weights.params, weights.layout
    target = target_layout(source, args.memory_layout, args.channels)
    if target == source:  # as the official: say so, write nothing, succeed
        wanted = "" if args.memory_layout or args.channels else (
            "; give -m nchw|nhwc and/or -3 / --force-4-channels")
        print(f"{args.input} is already {source}: nothing to convert, {args.output} not "
              f"written{wanted}")
        return 0
    converted, _ = adapt(params, target)
    write_parameters(args.output, converted)
    transposed = sum(p.data.ndim == 4 for p in params.values())
    what = (f"{transposed} 4-D tensors transposed" if source.channel_last != target.channel_last
            else "layout kept")
    print(f"{args.input} ({source}) -> {args.output} ({target}): {what}, "
          f"{len(params)} parameters written")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
