"""`make bench`: run every benchmark, print the tables, write benchmarks/results/*.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import build, encode, loader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("bench_out"), help="scratch folder (sample data, shards)")
    parser.add_argument("--only", choices=["encode", "build", "loader"], action="append",
                        help="run only these benchmarks (repeatable)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    chosen = args.only or ["encode", "build", "loader"]
    for name, mod in (("encode", encode), ("build", build), ("loader", loader)):
        if name in chosen:
            mod.run(args.work)
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
