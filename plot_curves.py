"""Draw monitor folders' curves as PNGs: training and validation loss, top-1 and top-5 error
against epochs (top-5 and the weight EMA's validation when recorded), and the training loss
and error within the epoch against iterations (loss-iteration.png, error-iteration.png, from
the Train-*-iteration series). One folder: its curves, written into it. Several: the runs
compared on the same charts, written into -o.

The series files are NNabla's format, so `nnabla_cli plot_series <file>...` reads them too.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from utils.cli import help_text
from utils.labels.file_list import check_folder
from utils.outputs.plots import plot_runs
from utils.process.atomic import check_can_create
from utils.process.errors import USER_ERROR_STATUS
from utils.process.run import run

EXAMPLES = (
    "python plot_curves.py runs/rn50",
    "python plot_curves.py runs/cos90 runs/mixup250 -o compare/",
)
WRITES = ("loss.png, error.png, top5-error.png (when recorded), loss-iteration.png and "
          "error-iteration.png, into the monitor folder or -o")


def build_parser() -> argparse.ArgumentParser:
    p = help_text.script_parser(__doc__, EXAMPLES, WRITES)
    p.add_argument("monitor_dirs", nargs="+", metavar="MONITOR_DIR",
                   help="folders holding the *.series.txt files, one per run")
    outputs = help_text.add_group(p, "outputs")
    outputs.add_argument("-o", "--out-dir", default=None, metavar="DIR",
                         help="where to write the charts (default: the monitor folder, when "
                              "there is one)" + help_text.elsewhere("-o", "the output folder"))
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.monitor_dirs) > 1 and args.out_dir is None:
        parser.error("several runs are compared on one set of charts: give -o/--out-dir")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    for folder in args.monitor_dirs:
        check_folder(folder, "monitor folder")
    check_can_create(args.out_dir or args.monitor_dirs[0], "output folder (-o)")
    written = plot_runs(args.monitor_dirs, args.out_dir or args.monitor_dirs[0])
    if not written:
        print(f"error: no loss or error series in {', '.join(args.monitor_dirs)}",
              file=sys.stderr)
        return USER_ERROR_STATUS
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
