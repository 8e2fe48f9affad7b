"""The worker's command line and exit codes: what the master runs, what a worker parses.

The master starts every worker as a fresh interpreter, ``python -m workers`` with the
arguments ``command`` builds from a ``WorkerArgs``; the worker reads them back with
``parse``. Both sides use this one definition, so they cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field

#: A worker that could not boot (bad config, listeners, privileges) exits with this: the
#: master halts instead of respawning it in a loop.
EXIT_BOOT_ERROR = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerArgs:
    config: str
    listeners: dict[str, list[int]] = field(default_factory=dict)  # server -> inherited fds
    config_digest: str | None = None
    worker_id: int = 0
    generation: int = 0
    control_fd: int | None = None
    scoreboard_fd: int | None = None
    slot: int = 0
    state_fd: int | None = None
    standby: bool = False  # boot, then wait for ACTIVATE before accepting
    log: str | None = None
    #: the master's facts on the config's certificates (``pingap.tls.dump_facts``)
    certificates: str | None = None


def command(args: WorkerArgs, python: str = sys.executable) -> list[str]:
    """The argv that starts a worker with ``args``."""
    cmd = [python, "-m", "workers", "--config", args.config,
           "--listeners", json.dumps(args.listeners),
           "--worker-id", str(args.worker_id), "--generation", str(args.generation),
           "--slot", str(args.slot)]
    for flag, value in (("--config-digest", args.config_digest),
                        ("--control-fd", args.control_fd),
                        ("--scoreboard-fd", args.scoreboard_fd),
                        ("--state-fd", args.state_fd), ("--log", args.log),
                        ("--certificates", args.certificates)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.standby:
        cmd.append("--standby")
    return cmd


def parse(argv: list[str]) -> WorkerArgs:
    """``WorkerArgs`` from a worker's argv (exits with usage on a malformed one)."""
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument("--config", required=True)
    parser.add_argument("--config-digest", default=None)
    parser.add_argument("--listeners", required=True,
                        help='JSON {"server name": [fd, ...]} of inherited sockets')
    parser.add_argument("--worker-id", type=int, default=0)
    parser.add_argument("--generation", type=int, default=0)
    parser.add_argument("--control-fd", type=int, default=None)
    parser.add_argument("--scoreboard-fd", type=int, default=None)
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--state-fd", type=int, default=None)
    parser.add_argument("--standby", action="store_true",
                        help="boot, then wait for ACTIVATE before accepting")
    parser.add_argument("--log", default=None)
    parser.add_argument("--certificates", default=None,
                        help="the master's facts on the certificates (JSON file)")
    ns = parser.parse_args(argv)
    return WorkerArgs(config=ns.config, listeners=json.loads(ns.listeners),
                      config_digest=ns.config_digest, worker_id=ns.worker_id,
                      generation=ns.generation, control_fd=ns.control_fd,
                      scoreboard_fd=ns.scoreboard_fd, slot=ns.slot, state_fd=ns.state_fd,
                      standby=ns.standby, log=ns.log, certificates=ns.certificates)
