#!/usr/bin/env python
"""Training curves of one or more runs, overlaid: loss, train/val top-1 and learning rate vs epoch.

    python tools/plot_runs.py OUTPUT_DIR [OUTPUT_DIR ...] [--out runs.png]

Reads each run's json_stats.log (see stvideo/analysis/runs.py). For accuracy vs GFLOPs of finished
runs use ``tools/count_flops.py --plot``.
"""

import argparse
import sys

from stvideo.analysis.runs import plot_runs, read_run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", metavar="OUTPUT_DIR", help="run output folders")
    parser.add_argument("--out", default="runs.png", help="PNG to write (default runs.png)")
    args = parser.parse_args()
    try:
        runs = [read_run(d) for d in args.runs]
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"Error: {e}")
    path = plot_runs(runs, args.out)
    for run in runs:
        epochs = run.points("train_loss")[0]
        top1 = run.points("val_top1")[1]
        val = top1[-1] if top1 else "n/a"
        test = run.test_top1 if run.test_top1 is not None else "n/a"
        print(f"{run.name} ({run.arch}): {len(epochs)} epochs, last val top-1 {val}, test top-1 {test}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
