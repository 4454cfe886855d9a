"""Aggregate several runs of one setting (e.g. seeds) into mean ± std per dataset and class.

    python tools/aggregate_runs.py output/seed0 output/seed1 output/seed2 --output-dir output/seeds

Each run is a folder with a dg_summary.json (tools/evaluate_dg.py's --output-dir, or
train_net.py's OUTPUT_DIR, whose inference/ holds it). Runs whose protocol records differ in
anything but the seed, the weights and the code revision (another config, evaluation size,
mIoU convention...) are refused, naming the field. Prints the table and writes
aggregate.{json,csv,png} (the png: the headline metrics with one-std error bars).
"""
import argparse
import sys

from rein_d2.evaluation.aggregate import aggregate_runs
from rein_d2.utils.cli import exit_on_user_error


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="output folders (or dg_summary.json files) of the runs")
    parser.add_argument("--output-dir", default="output/aggregate")
    args = parser.parse_args(argv)
    aggregate = aggregate_runs(args.runs)
    print(aggregate.table())
    paths = aggregate.write(args.output_dir)
    print(f"wrote {', '.join(paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
