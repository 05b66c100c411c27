r"""Prints the Markdown performance tables of benchmark JSON files.

  python benchmarks/table.py benchmarks/results/cpu_inference.json \
      benchmarks/results/cpu_train.json
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("results", nargs="+", help="benchmark JSON files")
  args = parser.parse_args(argv)
  for path in args.results:
    common.print_table(json.loads(Path(path).read_text()))


if __name__ == "__main__":
  main()
