"""Draw a monitor folder's curves as PNGs: training and validation loss, top-1 and top-5
error against epochs (top-5 when recorded).

    python plot_curves.py tmp.monitor.20250101120000 -o curves/

The series files are NNabla's format, so `nnabla_cli plot_series <file>...` reads them too.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from utils.plots import plot_monitor

USER_ERROR_STATUS = 2  # as utils.runtime.run returns (not imported: it loads NNabla)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("monitor_dir", help="folder holding the *.series.txt files")
    p.add_argument("-o", "--out-dir", default=None,
                   help="where to write loss.png, error.png, top5-error.png "
                        "(default: the monitor folder)")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not os.path.isdir(args.monitor_dir):
        print(f"error: no such monitor folder: {args.monitor_dir}", file=sys.stderr)
        return USER_ERROR_STATUS
    written = plot_monitor(args.monitor_dir, args.out_dir)
    if not written:
        print(f"error: no loss or error series in {args.monitor_dir}", file=sys.stderr)
        return USER_ERROR_STATUS
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
