"""Export a weight file as an inference-only model: NNabla .nnp and/or ONNX, verified.

The network is built in test mode (batch-norm running statistics), NCHW, for a fixed batch
and input size; the weight file may be NCHW or NHWC, with 3 or 4 input channels. Each
exported file is run (NNabla's NnpLoader, onnxruntime) on a seeded random image batch and
compared with the NNabla network before it is put in place. ONNX needs the export extra:
`bash scripts/setup.sh --export`. With --int8 the ONNX files are ONNX Runtime's INT8 models
(static quantization, calibrated on --calibration's images through validation's
preprocessing), compared with the float model on those images.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from typing import Optional, Sequence, Tuple

import utils.process.startup  # noqa: F401  (first: silences NNabla's import-time INFO line)

from models import get_architecture
from utils.cli import flags as cli
from utils.cli import help_text
from utils.data.pipelines import ImageFormat, InputPipeline
from utils.deploy.export import (
    DEFAULT_OPSET,
    DEFAULT_TOLERANCE,
    INPUT_NAME,
    ONNX_OPSETS,
    InferenceGraph,
    VerificationError,
    build_inference_graph,
    check_onnx_support,
    export,
    load_weights,
    output_format,
    run_onnx,
)
from utils.deploy.quantize import QUANTIZE_OPSET, agreement, quantize_model
from utils.eval.evaluation import CalibrationSource, calibration_of
from utils.process.atomic import check_output_file
from utils.process.memory import available_memory, check_batch_fits
from utils.process.run import run
from utils.weights.files import open_weights
from utils.weights.stats import largest_step_values

VERIFICATION_FAILED_STATUS = 3  # the exported model differs from NNabla's (docs/deployment.md)


EXAMPLES = (
    "python export.py rn50.h5 -a resnet50 -o rn50.nnp rn50.onnx",
    "python export.py rn50.h5 -a resnet50 -o rn50-int8.onnx --int8 --calibration train_label "
    "--calibration-root /data/imagenet/train",
)
WRITES = "the -o files (.nnp and/or .onnx), each verified before it is put in place"


def build_parser() -> argparse.ArgumentParser:
    p = help_text.script_parser(__doc__, EXAMPLES, WRITES)
    cli.add_weight_file_flags(p)
    group = help_text.add_group(p, "export", "-b is the batch of the exported model, fixed in the "
                                       "file; --spatial-size its input size.")
    group.add_argument("-o", "--output", nargs="+", action="extend", required=True,
                       metavar="FILE",
                       help="files to write, .nnp (NNabla) and/or .onnx, one or more; the "
                            "option may be repeated" + help_text.elsewhere("-o", "the model files"))
    cli.add_batch_size_flag(group, 1)
    cli.add_spatial_size_flag(group)
    group.add_argument("--softmax", action="store_true",
                       help="append a softmax: the model outputs 'probabilities' instead of "
                            "'logits'")
    group.add_argument("--opset", type=int, choices=ONNX_OPSETS, default=None,
                       help="ONNX opset, one that nnabla-converter 1.39.0 implements "
                            f"(default: {DEFAULT_OPSET}, {QUANTIZE_OPSET} with --int8)")
    group.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="X",
                       help="largest difference allowed between an exported model's outputs "
                            "and the NNabla network's on the test batch, relative to the "
                            "largest |output| (or absolute when that is below 1) "
                            "(default: %(default)g)")
    group.add_argument("--no-verify", action="store_true",
                       help="write the files without running them")
    cli.add_crop_pct_flag(group)  # (recorded in .nnp files; the calibration's preprocessing)
    cli.add_norm_flag(group)
    int8 = help_text.add_group(p, "int8", "--int8 quantizes the exported ONNX model with ONNX "
                                          "Runtime (opset 13, .onnx outputs only).")
    int8.add_argument("--int8", action="store_true",
                      help="write INT8 ONNX models: weights int8 per channel, activations "
                           "uint8 with ranges measured on --calibration's images")
    cli.add_calibration_flags(int8)
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = build_parser()
    args = cli.parse_weight_file_args(p, argv)
    if not 0 <= args.tolerance < math.inf:  # inf would pass every file: --no-verify says so
        p.error(f"argument --tolerance: must be a finite number, zero or positive, got "
                f"{args.tolerance} (--no-verify skips the check)")
    if args.int8:
        if args.calibration is None:
            p.error("--int8 needs --calibration: a list file or a folder of training images")
        if args.opset not in (None, QUANTIZE_OPSET):
            p.error(f"--int8 writes opset {QUANTIZE_OPSET} (per-channel quantization), not "
                    f"--opset {args.opset}")
        if any(os.path.splitext(path)[1].lower() != ".onnx" for path in args.output):
            p.error("--int8 writes ONNX models: name .onnx files with -o")
    elif args.calibration is not None:
        p.error("--calibration calibrates an INT8 model: use it with --int8")
    if args.opset is None:
        args.opset = QUANTIZE_OPSET if args.int8 else DEFAULT_OPSET
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    formats = {path: output_format(path) for path in args.output}
    if any(f.needs_onnx for f in formats.values()):
        check_onnx_support()
    replacing = [check_output_file(path, "-o", f"an {f.name} model", f.recognise,
                                   "model" + os.path.splitext(path)[1])
                 for path, f in formats.items()]
    spatial_size = cli.spatial_size_of(args)
    check_batch_fits(4 * 3 * args.batch_size * spatial_size[0] * spatial_size[1],
                     available_memory(), f"-b {args.batch_size} test images at "
                     f"{spatial_size[0]}x{spatial_size[1]}", "use a smaller -b or --spatial-size",
                     where="as float32 pixels alone")
    for note in filter(None, replacing):
        print(note)

    weights = open_weights(args.weights, args.arch, not args.no_download)
    num_classes = weights.classes(args.num_classes)
    graph = build_inference_graph(args.arch, num_classes, args.batch_size, spatial_size,
                                  args.softmax)
    check_batch_fits(4 * args.batch_size * largest_step_values(graph.output, graph.parameters()),
                     available_memory(), f"-b {args.batch_size} test images at "
                     f"{spatial_size[0]}x{spatial_size[1]}", "use a smaller -b or --spatial-size",
                     where=f"for the largest layer of {args.arch} in the verification's forward "
                           "pass")
    note = load_weights(graph, weights)
    print(f"{args.arch} from {args.weights} ({weights.layout}{'; ' + note if note else ''}): "
          f"input '{INPUT_NAME}' {graph.image.shape} NCHW, output '{graph.output_name}' "
          f"{graph.output.shape}")

    if args.int8:
        return export_int8(args, graph, spatial_size)
    try:
        exported = export(graph, args.output, args.opset,
                          None if args.no_verify else args.tolerance,
                          preprocessing=(args.norm_config, crop_pct_of(args)))
    except VerificationError as e:
        print(f"error: {e}", file=sys.stderr)
        return VERIFICATION_FAILED_STATUS
    for item in exported:
        checked = item.check.summary() if item.check else "not verified (--no-verify)"
        print(f"wrote {item.path} ({item.description}); {checked}")
    return 0


def crop_pct_of(args: argparse.Namespace) -> float:
    """--crop-pct, or the architecture's validation crop."""
    return args.crop_pct or get_architecture(args.arch).crop_pct


def export_int8(args: argparse.Namespace, graph: InferenceGraph,
                spatial_size: Tuple[int, int]) -> int:
    """--int8: the float ONNX model (verified against NNabla unless --no-verify), quantized
    on the calibration images into each -o file; the INT8 model's agreement with the float
    model on the first calibration batch is printed."""
    pipeline = InputPipeline(ImageFormat(spatial_size, crop_pct=crop_pct_of(args),
                                         norm=args.norm_config))
    source = CalibrationSource(args.calibration, args.calibration_root, args.calibration_images)
    calibration = calibration_of(pipeline, source, args.batch_size)
    with tempfile.TemporaryDirectory(prefix="export-int8-") as scratch:
        float_model = os.path.join(scratch, "float.onnx")
        try:
            (exported,) = export(graph, [float_model], args.opset,
                                 None if args.no_verify else args.tolerance)
        except VerificationError as e:
            print(f"error: {e}", file=sys.stderr)
            return VERIFICATION_FAILED_STATUS
        checked = exported.check.summary() if exported.check else "not verified (--no-verify)"
        print(f"float model (ONNX opset {args.opset}): {checked}")
        first = next(iter(calibration.batches()))
        reference = run_onnx(float_model, first)
        for path in args.output:
            count = quantize_model(float_model, path, calibration.batches())
            close = agreement(reference, run_onnx(path, first))
            print(f"wrote {path} (INT8 ONNX opset {args.opset}, calibrated on {count} "
                  f"images of {calibration.files.source or args.calibration}); "
                  f"{close.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
