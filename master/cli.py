"""The ``pingap`` command: pingap's flags, a fully validated config, then the master.

The master's signals are blocked before anything slow happens (imports, config load), so a
signal sent while the master starts up waits for the master's handlers instead of killing
it with the default action; the heavy modules are therefore imported inside ``main``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from typing import TYPE_CHECKING

from pingap import __version__

if TYPE_CHECKING:
    from pingap.config import PingapConfig
    from pingap.runtime import Runtime

#: The signals the master handles (master.arbiter.Arbiter.SIGNALS), held from the first
#: line of ``main`` until the arbiter's handlers are installed.
MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                  signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCHLD)


def _env_flag(name: str) -> bool:
    return bool(os.environ.get(name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pingap", description="A pingap-compatible reverse proxy in Python.")
    parser.add_argument("-c", "--conf", default=None,
                        help="config file, directory or etcd://host:port/prefix "
                             "(env PINGAP_CONF)")
    quick = parser.add_argument_group(
        "quick start", "proxy without a config file (pingap's --upstream and friends)")
    quick.add_argument("--upstream", default=None,
                       help="backend addresses, comma separated: proxy every request to them")
    quick.add_argument("--addr", default=None,
                       help="listen address (default 0.0.0.0:443 with TLS, else 0.0.0.0:80)")
    quick.add_argument("--domain", default=None,
                       help="domains served (comma separated); without --cert a Let's "
                            "Encrypt certificate is requested for them")
    quick.add_argument("--cert", default=None,
                       help="TLS certificate: a PEM file or a directory holding one")
    quick.add_argument("--key", default=None,
                       help="TLS private key (default: the key next to the certificate)")
    parser.add_argument("--admin", default=None, metavar="[USER:PASS@]HOST:PORT[/PATH]",
                        help="serve the admin API on its own address (env PINGAP_ADMIN_ADDR "
                             "with PINGAP_ADMIN_USER and PINGAP_ADMIN_PASSWORD)")
    parser.add_argument("--to-toml", action="store_true",
                        help="print the config (TOML, HCL or KDL) as one TOML document")
    parser.add_argument("--cp", action="store_true", default=bool(os.environ.get("PINGAP_CP")),
                        help="control panel: serve only the admin (--admin), no proxy "
                             "servers (e.g. to edit an etcd config for a fleet)")
    parser.add_argument("--template", action="store_true",
                        help="print pingap's template config and exit")
    parser.add_argument("--sync", default=None, metavar="STORAGE",
                        help="copy the (valid) config into another storage (a file, a "
                             "directory or etcd://...), then exit")
    parser.add_argument("-t", "--test", action="store_true",
                        help="validate the config, print every problem, exit 0 or 1")
    parser.add_argument("-d", "--daemon", action="store_true", default=_env_flag("PINGAP_DAEMON"),
                        help="run in the background (returns once serving, or fails)")
    parser.add_argument("-u", "--upgrade", action="store_true",
                        default=_env_flag("PINGAP_UPGRADE"),
                        help="take the listening sockets from a running pingap "
                             "(it hands them over on SIGQUIT through basic.upgrade_sock)")
    parser.add_argument("-a", "--autorestart", action="store_true",
                        default=_env_flag("PINGAP_AUTORESTART"),
                        help="watch the config and apply every change (same as --autoreload "
                             "here: server changes need no restart)")
    parser.add_argument("--autoreload", action="store_true",
                        default=_env_flag("PINGAP_AUTORELOAD"),
                        help="watch the config and reload on change")
    parser.add_argument("--threads", type=int, default=None,
                        help="worker processes (overrides basic.threads; 0 = CPU count)")
    parser.add_argument("--log", default=os.environ.get("PINGAP_LOG"),
                        help="application log file, appended (default: stderr)")
    parser.add_argument("--heartbeat-timeout", type=float, default=10.0,
                        help="kill and replace a worker silent for this many seconds")
    parser.add_argument("--no-spare", action="store_true",
                        help="do not keep a booted spare worker (it replaces a crashed "
                             "worker at once; costs one process)")
    parser.add_argument("--upgrade-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("-V", "--version", action="version", version=f"pingap {__version__}")
    return parser


def check_config(path: str) -> tuple[PingapConfig | None, list[str], list[str]]:
    """(config, problems, warnings) of both check phases; config is None on problems."""
    from pingap.errors import ConfigError
    try:
        runtime = _load_runtime(path)
    except ConfigError as err:
        return None, [str(p) for p in err.problems], [str(w) for w in err.warnings]
    return runtime.config, [], [str(w) for w in (*runtime.config.warnings, *runtime.warnings)]


def _load_runtime(path: str) -> Runtime:
    from master.storage import StorageError, open_storage
    from pingap.errors import ConfigError, Problem
    from pingap.runtime import load_runtime
    if "://" not in path:
        return load_runtime(path)
    try:
        storage = open_storage(path)
        try:
            sources = storage.sources()
        finally:
            storage.close()
    except StorageError as exc:
        raise ConfigError([Problem(path.split("?")[0], "storage", str(exc))]) from None
    return load_runtime(sources)


def normalize_conf(conf: str) -> str:
    """A file path made absolute (the master may chdir), ``~`` expanded, pingap's
    ``?query`` kept; a URL kept as given. ``-c=path`` (pingap's docs write it so; clap
    strips the '=') works too."""
    conf = conf.removeprefix("=")
    if "://" in conf:
        return conf
    path, sep, query = conf.partition("?")
    return os.path.abspath(os.path.expanduser(path)) + sep + query


def sync_config(source: str, target: str) -> int:
    """``--sync``: copy every entry of ``source`` into ``target``."""
    from master.storage import StorageError, open_storage
    try:
        source_storage, target_storage = open_storage(source), open_storage(normalize_conf(target))
        count = source_storage.copy_to(target_storage)
    except StorageError as exc:
        print(f"pingap: sync failed: {exc}", file=sys.stderr)
        return 1
    print(f"pingap: copied {count} entries to {target_storage.url}")
    return 0


def print_as_toml(given: str, conf: str) -> int:
    """``--to-toml``: the config files (TOML, HCL or KDL) as one TOML document."""
    from pingap.config import config_as_toml
    from pingap.errors import ConfigError
    if "://" in conf:
        print("pingap: --to-toml reads config files, not a storage URL", file=sys.stderr)
        return 1
    try:
        sys.stdout.write(config_as_toml(conf))
    except ConfigError as err:
        print_problems(given, [str(p) for p in err.problems])
        return 1
    return 0


def print_problems(path: str, problems: list[str]) -> None:
    from master.storage import redact
    print(f"pingap: configuration {redact(path)} is invalid "
          f"({len(problems)} problem{'s' if len(problems) != 1 else ''}):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def load_plugins() -> None:
    """Third-party plugin categories (entry-point group ``pingap.plugins``)."""
    from importlib.metadata import entry_points

    from pingap.plugins import load_entry_points
    load_entry_points(entry_points)


def main(argv: list[str] | None = None) -> int:
    held = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    finally:  # -t, a bad config: what arrived meanwhile now has its default effect
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        load_plugins()
    except Exception as exc:
        print(f"pingap: cannot load a plugin package: {exc}", file=sys.stderr)
        return 1
    from master import quickstart
    if args.template:
        print(quickstart.TEMPLATE)
        return 0
    args.admin = args.admin or admin_from_env()
    if args.cp and not args.admin:
        print("pingap: --cp serves the admin only: it needs --admin (or PINGAP_ADMIN_ADDR)",
              file=sys.stderr)
        return 1
    if args.admin:
        from master.admin import admin_document
        try:
            admin_document(args.admin)
        except ValueError as exc:
            print(f"pingap: {exc}", file=sys.stderr)
            return 1
    quick_dir = ""
    if args.upstream is not None:
        if args.conf:
            print("pingap: --upstream builds the config: it cannot be used with -c/--conf",
                  file=sys.stderr)
            return 1
        try:
            text = quickstart.build_config(args.upstream, addr=args.addr, domain=args.domain,
                                           cert=args.cert, key=args.key)
        except quickstart.QuickStartError as exc:
            print(f"pingap: {exc}", file=sys.stderr)
            return 1
        quick_dir = tempfile.mkdtemp(prefix="pingap-quickstart-")
        args.conf = os.path.join(quick_dir, "pingap.toml")
        with open(args.conf, "w") as out:
            out.write(text)
    elif any(v is not None for v in (args.addr, args.domain, args.cert, args.key)):
        print("pingap: --addr, --domain, --cert and --key go with --upstream", file=sys.stderr)
        return 1
    args.conf = args.conf or os.environ.get("PINGAP_CONF")
    if not args.conf:
        print("pingap: -c/--conf is required (or set PINGAP_CONF, or use --upstream)",
              file=sys.stderr)
        return 1
    try:
        return _run(args)
    finally:
        if quick_dir:
            shutil.rmtree(quick_dir, ignore_errors=True)


def admin_from_env() -> str | None:
    """pingap's PINGAP_ADMIN_ADDR (+ PINGAP_ADMIN_USER / PINGAP_ADMIN_PASSWORD)."""
    addr = os.environ.get("PINGAP_ADMIN_ADDR", "")
    if not addr:
        return None
    user = os.environ.get("PINGAP_ADMIN_USER", "")
    password = os.environ.get("PINGAP_ADMIN_PASSWORD", "")
    return f"{user}:{password}@{addr}" if user and password else addr


def _quick_argv(args: argparse.Namespace) -> list[str]:
    """The quick-start flags again, for a replacement master (USR2)."""
    out = ["--upstream", args.upstream]
    for flag in ("addr", "domain", "cert", "key"):
        if getattr(args, flag) is not None:
            out += [f"--{flag}", getattr(args, flag)]
    return out


def _run(args: argparse.Namespace) -> int:
    conf = normalize_conf(args.conf)
    if args.to_toml:
        return print_as_toml(args.conf, conf)
    config, problems, warnings = check_config(conf)
    for warning in warnings:
        print(f"pingap: warning: {warning}", file=sys.stderr)
    if config is None:
        print_problems(args.conf, problems)
        return 1
    if args.test:
        from master.storage import redact
        print(f"pingap: configuration {redact(args.conf)} is valid")
        return 0
    if args.sync:
        return sync_config(conf, args.sync)

    from master.arbiter import Arbiter, Options
    from master.files import daemonize
    from pingap.system import logs

    log_path = os.path.abspath(args.log) if args.log else None
    child_argv = _quick_argv(args) if args.upstream is not None else ["-c", conf]
    if args.threads is not None:
        child_argv += ["--threads", str(args.threads)]
    if log_path:
        child_argv += ["--log", log_path]
    if args.autoreload or args.autorestart:
        child_argv.append("--autoreload")
    child_argv += ["--heartbeat-timeout", str(args.heartbeat_timeout)]
    if args.no_spare:
        child_argv.append("--no-spare")
    if args.admin:
        child_argv += ["--admin", args.admin]
    if args.cp:
        child_argv.append("--cp")
    ready_pipe = None
    if args.daemon:
        ready_pipe = daemonize(config.basic.error_log)
    logs.setup(log_path, config.basic.log_level)
    options = Options(config_path=conf, threads=args.threads, log_path=log_path,
                      autoreload=args.autoreload or args.autorestart, upgrade=args.upgrade,
                      upgrade_fd=args.upgrade_fd, heartbeat_timeout=args.heartbeat_timeout,
                      spare_workers=not args.no_spare, admin=args.admin,
                      control_panel=args.cp,
                      argv=child_argv)
    arbiter = Arbiter(options, config)
    arbiter.ready_pipe = ready_pipe
    try:
        return arbiter.run()
    finally:
        # The master is done: a stop signal that arrives while the interpreter shuts down
        # (joining threads, flushing logs) must not turn a clean exit into death by
        # signal - Python puts its handlers back to the default one there, not ignored
        # ones.
        for sig in Arbiter.SIGNALS:
            if sig != signal.SIGCHLD:
                signal.signal(sig, signal.SIG_IGN)
