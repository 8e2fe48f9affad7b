"""``pingapctl``: control a running pingap (grows with the process-model work)."""

from __future__ import annotations

import argparse
import sys

from master.cli import check_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pingapctl")
    parser.add_argument("command", choices=["test"])
    parser.add_argument("-c", "--conf", required=True)
    args = parser.parse_args(argv)
    config, problems = check_config(args.conf)
    if config is None:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"configuration {args.conf} is valid")
    return 0
