"""Command-line flag groups shared by the scripts, and the values resolved after parsing.

Every script's parser is a `script_parser`: its docstring, its flags in named groups, then
one or two examples and the files it writes. Each `add_*` function adds flags shared by
several scripts with one wording, so that every script spells, words and defaults a shared
flag the same way (names and short forms as in the official example). Short flags that the
official scripts use for different things (-V, -T, -m, -o) are kept; each one's help names
its other meanings (utils/cli/help_text.py). Values that depend on other flags (the spatial size
defaults to the architecture's native resolution) are resolved after parsing by
`spatial_size_of` and `val_list_of`; `utils.process.runtime.setup_runtime` turns the runtime flags
into a context and communicator.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from models import (
    DEFAULT_CROP_PCT,
    NORMALIZATIONS,
    UnknownArchitectureError,
    available_architectures,
    get_architecture,
)

from ..data.batch_plan import Shard
from ..data.pipelines import DaliOptions, ImageFormat, InputPipeline
from ..deploy.nnp_model import NnpModel, names_nnp_file, read_nnp_model
from ..deploy.quantize import DEFAULT_CALIBRATION_IMAGES
from ..eval.evaluation import CalibrationSource
from ..process.context import CONTEXTS, TYPE_CONFIGS
from ..process.errors import UsageError
from ..process.watchdog import DEFAULT_HANG_TIMEOUT
from ..weights.published import did_you_mean, published
from .help_text import SHORT_FLAG_MEANINGS, add_group, elsewhere

MEBIBYTE = 1 << 20
DEFAULT_RESOLUTION = 224
DEFAULT_DALI_PADDING_MB = 64
DEFAULT_DATA_DIR = "./"
DEFAULT_TRAIN_LIST = "train_label"
DEFAULT_VAL_LIST = "val_label"
DEFAULT_RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "cfg", "cos90.yaml")


def architecture_name(name: str) -> str:
    """argparse type: a registered architecture in any case (an unknown one lists them)."""
    try:
        return get_architecture(name).name
    except UnknownArchitectureError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# Every count a flag gives (epochs, intervals, batches, steps, threads, top-k) is at most
# INT32_MAX: DALI and NNabla take batch, thread and queue sizes as 32-bit C ints, and a run's
# counts then stay exact where they become float64 (TensorBoard's HParams, the schedules)
# and far within the int64 of the event steps. Beyond it they ended in a C library's
# traceback or a run that could never finish.
INT32_MAX = 2**31 - 1


def int_in(low: int, high: int, below: str = "", above: str = "") -> Callable[[str], int]:
    """argparse type: an integer in low..high; `below`/`above`: the rule broken by a value
    out of range on that side, in words (default: the range)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low or value > high:
            rule = (below if value < low else above) or f"be in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must {rule}, got {text}")
        return value

    parse.__name__ = "integer"  # (argparse's "invalid integer value: 'x'")
    return parse


positive_int = int_in(1, INT32_MAX, below="be a positive integer",
                      above=f"be at most {INT32_MAX}")
non_negative_int = int_in(0, INT32_MAX, below="be zero or positive",
                          above=f"be at most {INT32_MAX}")
# -v: any count, where <= 0 disables.
interval_or_off = int_in(-INT32_MAX, INT32_MAX,
                         above=f"be at most {INT32_MAX} (<= 0 disables)")
# DALI makes its worker threads at start: 100000 aborted the process.
MAX_DALI_THREADS = 1024
# Each batch DALI prefetches holds -b images; more than this only costs memory.
MAX_DALI_PREFETCH = 256


SEED_LIMIT = 2**31  # nn.seed takes a C int; NumPy and DALI take more
# Seconds; the watchdog's faulthandler backstop fires at twice the timeout and takes < 9.2e9.
MAX_HANG_TIMEOUT = 1e9


def seed(text: str) -> int:
    """argparse type: a seed nn.seed takes (outside 0..2**31-1 it raised from inside NNabla
    or NumPy, a traceback)."""
    value = int(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be in 0..{SEED_LIMIT - 1}, got {text}")
    return value


def hang_timeout(text: str) -> float:
    """argparse type: seconds, at most MAX_HANG_TIMEOUT (inf raised from inside the watchdog,
    a traceback; nan silently disabled it); <= 0 disables."""
    value = float(text)
    if not value <= MAX_HANG_TIMEOUT:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number of seconds up to "
                                          f"{MAX_HANG_TIMEOUT:g} (<= 0 disables), got {text}")
    return value


# DALI's decoders take nvJPEG's paddings in bytes as INT32 (their schema's type): 2048 MiB
# and more overflowed it.
MAX_DALI_PADDING_MB = (2**31 - 1) // MEBIBYTE


def _megabytes_to_bytes(text: str) -> int:
    """argparse type: nvJPEG's padding in MiB, 0..MAX_DALI_PADDING_MB, returned in bytes."""
    value = int(text)
    if not 0 <= value <= MAX_DALI_PADDING_MB:
        raise argparse.ArgumentTypeError(
            f"must be in 0..{MAX_DALI_PADDING_MB} (MiB; DALI takes the padding in bytes as a "
            f"32-bit integer), got {text}")
    return value * MEBIBYTE


class _SpatialSizeAction(argparse.Action):
    """One size (square) or two (height width), stored as a (height, width) tuple."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: Optional[str] = None) -> None:
        if len(values) > 2:
            raise argparse.ArgumentError(self, f"expected one or two sizes, got {len(values)}")
        setattr(namespace, self.dest, (values[0], values[-1]))


def add_runtime_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """-c/--context, -d/--device-id, -t/--type-config."""
    group = parser.add_argument_group("runtime")
    group.add_argument("-c", "--context", choices=CONTEXTS, default="auto",
                       help="compute back end: auto picks cudnn when the CUDA extension and a "
                            "GPU are usable, else cpu; cuda runs as cudnn (NNabla's pooling has "
                            "GPU kernels in cuDNN only) (default: %(default)s)")
    group.add_argument("-d", "--device-id", type=non_negative_int, default=0, metavar="N",
                       help="the GPU of a single process; under several ranks each rank "
                            "uses the GPU of its local rank (NNabla's multi-GPU rule: choose "
                            "GPUs with CUDA_VISIBLE_DEVICES) (default: %(default)s)")
    group.add_argument("-t", "--type-config", choices=TYPE_CONFIGS, default="float",
                       help="float, or half for mixed precision on a GPU; on the CPU half "
                            "runs in float, since NNabla's CPU half is ~200x slower and the "
                            "results only differ by rounding (default: %(default)s)")
    return group


def add_hang_timeout_flag(group: argparse._ArgumentGroup) -> None:
    """--hang-timeout, for the scripts that run collectives under MPI."""
    group.add_argument("--hang-timeout", type=hang_timeout, default=DEFAULT_HANG_TIMEOUT,
                       metavar="SECONDS",
                       help="end the job with status 124, printing where this rank is, when "
                            "no iteration or batch completes for this long (a rank stuck in "
                            "I/O or a collective would otherwise hold every rank until the "
                            "time limit); <= 0 disables (default: %(default)g)")


def add_arch_flags(parser: argparse.ArgumentParser, required: bool = True,
                   num_classes_default: Optional[int] = 1000, several: bool = False,
                   description: Optional[str] = None) -> argparse._ArgumentGroup:
    """-a/--arch (any case; an unknown name lists the known ones; `several`: one or more,
    default all) and --num-classes."""
    group = add_group(parser, "architecture", description)
    group.add_argument("-a", "--arch", type=architecture_name, required=required,
                       metavar="ARCH", nargs="+" if several else None,
                       default=available_architectures() if several else None,
                       help=f"network, one of: {', '.join(available_architectures())} "
                            "(any case)")
    group.add_argument("--num-classes", type=positive_int, default=num_classes_default,
                       metavar="N",
                       help="number of classes, the classifier's outputs (default: 1000; "
                            "validation.py, infer.py and export.py: the weight file's)")
    return group


def add_input_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The input group of the scripts that run a weight file on images: --spatial-size,
    --crop-pct, -n and --channel-last (ignored: the file tells the layout)."""
    group = add_group(parser, "input")
    add_spatial_size_flag(group)
    add_crop_pct_flag(group)
    add_norm_flag(group)
    add_channel_last_flag(group)
    return group


def add_batch_size_flag(group: argparse._ArgumentGroup, default: int) -> None:
    """-b/--batch-size."""
    group.add_argument("-b", "--batch-size", type=positive_int, default=default, metavar="N",
                       help="images per batch and process (default: %(default)s)")


def add_labels_flag(group: argparse._ArgumentGroup) -> None:
    """--labels: the class names of the outputs."""
    group.add_argument("--labels", default=None, metavar="FILE",
                       help="'<id>,<name>' csv of class names, e.g. label_words.csv of "
                            "create_input_files.py (default: train.py: label_words.csv beside "
                            "--train-list if there; else the ImageNet names for 1000 classes, "
                            "else class ids)")


def add_json_flag(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--json", action="store_true",
                       help="print the result as one JSON object instead of text")


NETWORK_RUNTIMES = ("nnabla", "onnxruntime", "onnxruntime-int8")


def add_network_flags(group: argparse._ArgumentGroup) -> None:
    """--runtime and --tta: what runs a weight file's network, and on what views of an image
    (validation.py and infer.py)."""
    group.add_argument("--runtime", choices=NETWORK_RUNTIMES, default="nnabla",
                       help="what runs the network: NNabla, or on a CPU ONNX Runtime (the "
                            "export extra), about 5x faster on the same cores, with the weight "
                            "file's ONNX model exported, verified and cached on first use "
                            "(default: %(default)s); onnxruntime-int8: that model quantized to "
                            "INT8 on --calibration's images, also cached")
    add_calibration_flags(group)
    group.add_argument("--tta", choices=("none", "flip"), default="none",
                       help="test-time augmentation: flip averages the logits of each image "
                            "and its mirror (twice the compute) (default: %(default)s)")


def add_calibration_flags(group: argparse._ArgumentGroup) -> None:
    """--calibration, --calibration-root, --calibration-images: the images an INT8 model's
    activation ranges are measured on (validation.py, infer.py, export.py --int8)."""
    group.add_argument("--calibration", default=None, metavar="INPUT",
                       help="INT8 only: a list file of training images (as train_label) or a "
                            "folder of images; a seeded sample of --calibration-images of them "
                            "fixes the activations' ranges (default: none)")
    group.add_argument("--calibration-root", default=None, metavar="DIR",
                       help="the folder a --calibration list's paths are relative to "
                            "(default: the list's own folder)")
    group.add_argument("--calibration-images", type=positive_int,
                       default=DEFAULT_CALIBRATION_IMAGES, metavar="N",
                       help="calibration images sampled (default: %(default)s)")


def calibration_source_of(args: argparse.Namespace) -> Optional[CalibrationSource]:
    """The --calibration images, given only with --runtime onnxruntime-int8 (elsewhere they
    would be ignored)."""
    if args.calibration is None:
        return None
    if args.runtime != "onnxruntime-int8":
        raise UsageError(f"--calibration {args.calibration} calibrates an INT8 model: use it "
                         "with --runtime onnxruntime-int8")
    return CalibrationSource(args.calibration, args.calibration_root, args.calibration_images)


def nnp_model_of(args: argparse.Namespace) -> Optional[NnpModel]:
    """WEIGHTS as an NNP file's classifier (None: a weight file); it runs in NNabla, on what
    it holds (its statistics, its classes)."""
    if not names_nnp_file(args.weights):
        return None
    if args.runtime != "nnabla":
        raise UsageError(f"{args.weights}: an NNP file runs in NNabla (--runtime nnabla); "
                         "for ONNX Runtime give its weight file")
    if getattr(args, "recompute_bn", 0):
        raise UsageError(f"{args.weights}: --recompute-bn needs a weight file, not an NNP file")
    model = read_nnp_model(args.weights)
    if args.num_classes is not None and args.num_classes != model.num_classes:
        raise UsageError(f"{args.weights}: the NNP network has {model.num_classes} classes, "
                         f"not --num-classes {args.num_classes}")
    return model


def check_network_runtime(runtime: str, backend: str) -> None:
    """--runtime onnxruntime(-int8): on the CPU only, with the export extra installed."""
    if runtime == "nnabla":
        return
    if backend != "cpu":
        raise UsageError(f"--runtime {runtime} runs on the CPU; with a GPU, NNabla "
                         "(--runtime nnabla) is the fast one")
    from ..deploy.export import check_onnx_support

    check_onnx_support()  # (the export extra: one line with its install command)


def add_no_progress_flag(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_channel_last_flag(group: argparse._ArgumentGroup) -> None:
    """--channel-last: NHWC where a network is built from scratch; accepted and ignored where
    a weight file tells its layout (as the official scripts take it)."""
    group.add_argument("--channel-last", action="store_true",
                       help="NHWC layout, GPU only (NNabla's CPU backend runs NCHW); "
                            "validation.py and infer.py accept it and read the layout from "
                            "the weight file")


def add_train_config_flag(group: argparse._ArgumentGroup) -> None:
    """-C/--train-config: the recipe."""
    group.add_argument("-C", "--train-config", default=DEFAULT_RECIPE, metavar="FILE",
                       help="recipe YAML, see cfg/ (default: cfg/cos90.yaml of this "
                            "repository)")


def add_recompute_bn_flag(group: argparse._ArgumentGroup) -> None:
    """--recompute-bn N."""
    group.add_argument("--recompute-bn", type=non_negative_int, default=0, metavar="N",
                       help="before validating, re-estimate the batch-norm statistics as the "
                            "average over N training batches per rank (needs -T and "
                            "--train-list; the running averages lag behind the weights in "
                            "short runs) (default: 0, off)")


def spatial_size_value(text: str) -> int:
    """argparse type: one size of --spatial-size. The flag takes every value after it, so a
    file named after it (`--spatial-size 32 IMAGE WEIGHTS`) was read as a size: "invalid
    integer value", with nothing saying to put the files first."""
    try:
        int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size in pixels, got {text!r}; if it is a file, give the files "
            "before --spatial-size, which takes every value after it") from None
    return positive_int(text)


def add_spatial_size_flag(parser: Any) -> argparse.Action:
    """--spatial-size: one size or height and width; default the architecture's resolution."""
    return parser.add_argument(
        "--spatial-size", type=spatial_size_value, nargs="+", action=_SpatialSizeAction,
        default=None, metavar="SIZE",
        help="network input size, one number (square) or height and width (default: the "
             "architecture's native resolution, e.g. 224, or 240 for efficientnet_b1)")


def spatial_size_of(args: argparse.Namespace) -> Tuple[int, int]:
    """(height, width): --spatial-size if given, else the native resolution of --arch.

    Also stored back into `args.spatial_size`, so that saved arguments show the size used.
    """
    if args.spatial_size is None:  # (an NNP file, without -a, has its own: see nnp_model)
        size = get_architecture(args.arch).resolution if args.arch else DEFAULT_RESOLUTION
        args.spatial_size = (size, size)
    return tuple(args.spatial_size)


def crop_fraction(text: str) -> float:
    """argparse type: a fraction in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def add_crop_pct_flag(parser: Any) -> argparse.Action:
    """--crop-pct: validation's centre crop as a fraction of the resized shorter side."""
    return parser.add_argument(
        "--crop-pct", type=crop_fraction, default=None, metavar="P",
        help="resize the shorter side to the input size / P, then take the centre crop "
             "(default: the architecture's, 224/256 = 0.875 as the official example; 1.0 "
             "crops the whole shorter side)")


def add_val_resize_flag(parser: Any) -> argparse.Action:
    """--val-resize: validation's resize of the shorter side in pixels, instead of --crop-pct's
    (FixRes: a network trained at a lower size tests better at a larger one)."""
    return parser.add_argument(
        "--val-resize", type=positive_int, default=None, metavar="N",
        help="resize the shorter side to N pixels, then take the centre crop of the input "
             "size (torchvision's recipe: trained at 176, --spatial-size 224 --val-resize "
             "232); excludes --crop-pct (default: --crop-pct's resize)")


def add_norm_flag(parser: Any) -> argparse.Action:
    """-n/--norm-config: the mean/std preset the weights were trained with."""
    return parser.add_argument(
        "-n", "--norm-config", type=str.lower, choices=list(NORMALIZATIONS), default=None,
        help="input normalisation: default (ImageNet mean/std, every file trained here) or "
             "senet_author (mean (123, 117, 104), no std: the SENet authors' converted "
             "weights) (default: a published file's own, else default)")


def add_no_download_flag(parser: Any) -> argparse.Action:
    """--no-download: a published name that is not cached is an error, not a download."""
    return parser.add_argument(
        "--no-download", action="store_true",
        help="do not download a published weight file given by name (e.g. rn50-nhwc.h5) "
             "into the cache ($NNABLA_IMAGENET_CACHE, default ~/.cache/nnabla-imagenet)")


def add_weight_file_flags(parser: argparse.ArgumentParser, several: bool = False
                          ) -> argparse._ArgumentGroup:
    """WEIGHTS (a path, or a published file's name: downloaded once into the cache), then
    the architecture group: -a (optional for a published file: its name tells),
    --num-classes and --no-download. `several`: one or more WEIGHTS (a list)."""
    parser.add_argument("weights", metavar="WEIGHTS", **({"nargs": "+"} if several else {}),
                        help="NNabla weight file (.h5), NCHW or NHWC, or the name of a "
                             "published one (downloaded once into the cache; its name tells "
                             "its network, so -a may be left out)")
    group = add_arch_flags(parser, required=False, num_classes_default=None)
    add_no_download_flag(group)
    return group


def parse_weight_file_args(parser: argparse.ArgumentParser,
                           argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse; -a and -n left out are those of the published file named by WEIGHTS."""
    return resolve_weight_file_args(parser, parser.parse_args(argv))


def resolve_weight_file_args(parser: argparse.ArgumentParser, args: argparse.Namespace
                             ) -> argparse.Namespace:
    """-a and -n left out: those of the published file named by `args.weights`."""
    known = published(args.weights)
    if args.arch is None and names_nnp_file(args.weights):
        pass  # (an NNP file holds its network)
    elif args.arch is None:
        if known is None:
            parser.error("the following arguments are required: -a/--arch (only a published "
                         f"weight file's name tells its network){did_you_mean(args.weights)}")
        args.arch = known.arch
    if getattr(args, "norm_config", "") is None:
        args.norm_config = known.norm if known else "default"
    return args


def add_dali_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """DALI worker threads, prefetch depth and nvJPEG padding (stored in bytes)."""
    group = parser.add_argument_group("DALI")
    group.add_argument("--dali-num-threads", type=int_in(1, MAX_DALI_THREADS), default=4,
                       metavar="N",
                       help="DALI worker threads per process (default: %(default)s)")
    group.add_argument("--dali-prefetch-queue", type=int_in(1, MAX_DALI_PREFETCH), default=2,
                       metavar="N",
                       help="batches DALI prepares ahead (default: %(default)s)")
    group.add_argument("--dali-nvjpeg-memory-padding-mb", type=_megabytes_to_bytes,
                       dest="dali_nvjpeg_memory_padding",
                       default=DEFAULT_DALI_PADDING_MB * MEBIBYTE, metavar="MB",
                       help="nvJPEG device and host memory padding in MiB, GPU decoding "
                            f"only (default: {DEFAULT_DALI_PADDING_MB})")
    return group


def _add_dataset_flags(parser: argparse.ArgumentParser, split: str, short: str, title: str,
                       default_list: str, list_default_note: str,
                       description: Optional[str] = None,
                       several: bool = False) -> argparse._ArgumentGroup:
    """-X/--<split>-dir and --<split>-list (the list create_input_files.py writes);
    `several`: -X takes one or more folders (a list)."""
    group = add_group(parser, f"{title} data", description)
    meaning = dict(SHORT_FLAG_MEANINGS[short])["train.py"]
    group.add_argument(short, f"--{split}-dir", default=DEFAULT_DATA_DIR, metavar="DIR",
                       **({"nargs": "+"} if several else {}),
                       help=f"folder the paths of the {title} list are relative to "
                            f"(default: %(default)s){elsewhere(short, meaning)}")
    group.add_argument(f"--{split}-list", default=default_list, metavar="FILE",
                       help="list file, one '<path> <class id>' line per image, as written "
                            f"by create_input_files.py (default: %(default)s{list_default_note})")
    return group


def add_train_dataset_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """-T/--train-dir and --train-list."""
    return _add_dataset_flags(parser, "train", "-T", "training", DEFAULT_TRAIN_LIST, "")


def add_val_dataset_flags(parser: argparse.ArgumentParser, description: Optional[str] = None,
                          several: bool = False) -> argparse._ArgumentGroup:
    """-V/--val-dir and --val-list; `description`: how this script reads them; `several`:
    -V takes one or more folders (validation.py's --table)."""
    return _add_dataset_flags(parser, "val", "-V", "validation", DEFAULT_VAL_LIST,
                              " in the current folder, else in --val-dir", description,
                              several)


def input_pipeline(args: argparse.Namespace, runtime: Any, crop_pct: Optional[float]
                   ) -> InputPipeline:
    """The input options the shared flags and the runtime decide: input size, precision,
    the validation crop (`crop_pct`, --crop-pct where the script has it; None: the
    architecture's), the DALI flags and where DALI runs, and this rank's shard. Layout,
    channels and normalisation are the caller's (`InputPipeline.formatted`)."""
    image = ImageFormat(spatial_size_of(args),
                        dtype=np.float16 if args.type_config == "half" else np.float32,
                        crop_pct=crop_pct or (get_architecture(args.arch).crop_pct
                                              if args.arch else DEFAULT_CROP_PCT))
    dali = DaliOptions(args.dali_num_threads, args.dali_prefetch_queue, runtime.data_device_id,
                       args.dali_nvjpeg_memory_padding)
    return InputPipeline(image, dali, Shard(runtime.comm.rank, runtime.comm.size))


def val_list_of(args: argparse.Namespace) -> str:
    """--val-list; the default ./val_label falls back to <val-dir>/val_label if only that
    one exists (create_input_files.py -o <val-dir>)."""
    beside = os.path.join(args.val_dir, DEFAULT_VAL_LIST)
    if args.val_list == DEFAULT_VAL_LIST and not os.path.exists(args.val_list) \
            and os.path.exists(beside):
        return beside
    return args.val_list
