"""The ``pingap`` command: pingap's flags, validated config, then the master loop."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pingap import __version__
from pingap.config import load_config
from pingap.errors import ConfigError
from pingap.runtime import build_runtime


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pingap", description="A pingap-compatible reverse proxy in Python.")
    parser.add_argument("-c", "--conf", default=os.environ.get("PINGAP_CONF"),
                        help="config file or directory (env PINGAP_CONF)")
    parser.add_argument("-t", "--test", action="store_true",
                        help="validate the config, print every problem, exit 0 or 1")
    parser.add_argument("--threads", type=int, default=None,
                        help="worker processes (overrides basic.threads; 0 = CPU count)")
    parser.add_argument("--log", default=os.environ.get("PINGAP_LOG"),
                        help="application log file (default: stderr)")
    parser.add_argument("-V", "--version", action="version", version=f"pingap {__version__}")
    return parser


def check_config(path: str) -> tuple[object | None, list[str]]:
    """(config, messages): every problem when config is None, else the warnings."""
    try:
        config = load_config(path)
    except ConfigError as err:
        return None, [str(p) for p in err.problems]
    try:
        runtime = build_runtime(config)
    except ConfigError as err:
        return None, [str(p) for p in err.problems]
    return config, [str(w) for w in (*config.warnings, *runtime.warnings)]


def print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"pingap: warning: {warning}", file=sys.stderr)


def setup_logging(path: str | None) -> None:
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler()
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("PINGAP_LOG_LEVEL", "INFO").upper())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.conf:
        print("pingap: -c/--conf is required (or set PINGAP_CONF)", file=sys.stderr)
        return 1
    config, problems = check_config(args.conf)
    if config is None:
        print(f"pingap: configuration {args.conf} is invalid "
              f"({len(problems)} problem{'s' if len(problems) != 1 else ''}):",
              file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print_warnings(problems)
    if args.test:
        print(f"pingap: configuration {args.conf} is valid")
        return 0
    setup_logging(args.log)
    from master.arbiter import Arbiter

    threads = args.threads if args.threads is not None else config.basic.threads  # type: ignore[attr-defined]
    workers = threads if threads and threads > 0 else (os.cpu_count() or 1)
    return Arbiter(args.conf, config, workers, args.log).run()
