"""The master loop: listeners, generations of workers, signals, reload and upgrade.

Signal handlers only enqueue; the loop (``run``) selects on a self-pipe, every worker's
control socket, the config watcher and any hand-off connection, then dispatches
``handle_<signal>`` (gunicorn's arbiter shape). All state lives on the instance.

Any signal at any moment does its documented thing. ``master.cli`` blocks them before the
slow start-up (imports, config load); they are delivered once the handlers exist. TERM and
INT act at once in every phase; the signals that start something (HUP reload, QUIT and
USR2 upgrades, WINCH pause) wait while a generation is rolling out (start-up included) or
the listeners are being handed over, and are acted on when that ends.

Generations: every successful (re)load starts a generation of ``workers_wanted`` fresh
worker processes. Only when all of them report READY are the previous generation's
workers told to DRAIN, so the listening sockets (owned here, shared by every
generation) always have an accepting worker. A generation that fails to boot is killed
and the old one keeps serving; at start-up, a boot failure stops the master.
"""

from __future__ import annotations

import datetime
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from master import files, handoff
from master.admin import RESTART_REASON, AdminWriter, admin_document
from master.discovery import DiscoveryWatch
from master.listeners import ListenerSet, address_key, systemd_sockets
from master.notify import monotonic_usec, notify
from master.snapshot import ConfigSnapshots
from master.storage import PollingWatcher, StorageError, open_storage
from master.webhook import WebhookSender
from pingap.control import Decoder, MessageType, ProtocolError, encode
from pingap.errors import ConfigError
from pingap.health import down_upstreams
from pingap.runtime import load_runtime
from pingap.scoreboard import SIZE as SCOREBOARD_SIZE
from pingap.scoreboard import Scoreboard, SlotState
from pingap.state import SIZE as STATE_SIZE
from pingap.state import SharedState
from pingap.system import logs, shm
from pingap.system.workercmd import EXIT_BOOT_ERROR, WorkerArgs, command
from pingap.tls import dump_facts, invalid_soon
from pingap.webhook import certificate_parse_failures, config_diff

log = logging.getLogger("pingap.master")

BOOT_TIMEOUT = 60.0
TLS_CHECK_INTERVAL = 24 * 3600.0
UPSTREAM_STATUS_INTERVAL = 10.0
"""Seconds between upstream_status checks (pingap: every 10th tick of its 10 s scheduler)."""
HANDOFF_TAKER_WAIT = 5.0
HANDOFF_READY_WAIT = 90.0
TICK = 0.25
#: Scheduling priority of a booting worker (needs CAP_SYS_NICE; ignored without it), so a
#: replacement for a crashed worker is serving quickly even on a saturated machine.
BOOT_NICE = -10
#: Signals that start something; held while a rollout or a hand-off is under way.
DEFERRABLE = frozenset({signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2, signal.SIGWINCH})
#: How long a new master that failed or was told to stop gets before SIGKILL.
CHILD_STOP_WAIT = 10.0


class HaltServer(Exception):
    def __init__(self, reason: str, exit_status: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


@dataclass
class Options:
    config_path: str
    threads: int | None = None
    log_path: str | None = None
    autoreload: bool = False
    upgrade: bool = False              # pingap -u: take the sockets from upgrade_sock
    upgrade_fd: int | None = None      # USR2 child: take them from this inherited socket
    heartbeat_timeout: float = 10.0
    spare_workers: bool = True         # keep one booted spare per generation
    argv: list[str] = field(default_factory=list)  # to start a replacement on USR2
    admin: str | None = None           # pingap --admin [user:pass@]host:port[/path]
    control_panel: bool = False        # pingap --cp: the admin only, no proxy servers


@dataclass
class Generation:
    number: int
    config: Any
    digest: str
    servers: dict[str, list[str]]  # server name -> listener keys
    path: str = ""                 # the private copy of the config its workers load
    certificates: str | None = None  # the facts on its certificates its workers read


@dataclass
class WorkerHandle:
    worker_id: int
    generation: int
    proc: subprocess.Popen[bytes]
    control: socket.socket
    slot: int
    started: float
    decoder: Decoder = field(default_factory=Decoder)
    ready: bool = False
    draining: bool = False
    deadline: float | None = None
    last_heartbeat: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    boot_error: str | None = None
    killed: bool = False
    standby: bool = False  # the generation's booted spare, activated when a worker dies
    reopen_pending: bool = False  # USR1 arrived while it booted: forward it once READY

    def kill(self) -> None:
        """SIGKILL once; the loop reaps it."""
        if not self.killed:
            self.killed = True
            self.proc.kill()

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Rollout:
    generation: Generation
    reason: str
    seq: int
    deadline: float
    new_keys: list[str]
    failure: str | None = None


@dataclass
class Handoff:
    conn: socket.socket
    child: subprocess.Popen[bytes] | None
    deadline: float
    decoder: Decoder = field(default_factory=Decoder)


def workers_for(config: Any, threads: int | None) -> int:
    wanted = threads if threads is not None else config.basic.threads
    return wanted if wanted and wanted > 0 else (os.cpu_count() or 1)


def generation_servers(config: Any) -> dict[str, list[str]]:
    return {name: [address_key(h, p) for h, p in server.listen_addrs]
            for name, server in config.servers.items()}


class Arbiter:
    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
               signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCHLD)

    def __init__(self, options: Options, config: Any) -> None:
        self.options = options
        self.config_path = options.config_path if "://" in options.config_path \
            else os.path.abspath(options.config_path)
        self.config = config
        self.storage = open_storage(self.config_path)
        extra = [admin_document(options.admin)] if options.admin else []
        self.snapshots = ConfigSnapshots(self.storage, extra, options.control_panel)
        self.webhook = WebhookSender()
        self.webhook.configure(config.basic)
        self.discovery = DiscoveryWatch(self.webhook.notify)
        self._notified_seq = 0
        self._last_events: dict[str, str] = {}   # event key -> last message sent
        self.admin = AdminWriter(self.storage, extra, self.reload,
                                 lambda: (self.reload_seq, self.last_reload))
        self.pid_file = config.basic.pid_file or files.default_pid_file()
        self.listeners = ListenerSet()
        self.workers: dict[int, WorkerHandle] = {}   # by pid
        self.current: Generation | None = None
        self.rollout: Rollout | None = None
        #: the reason of a reload asked for during a rollout (an admin restart wins, so it
        #: is reported as one)
        self.reload_pending: str | None = None
        self.reload_seq = 0
        self.last_reload: dict[str, Any] | None = None
        self._reload_diff: list[str] = []  # the last reload's changes, for diff_config
        self._tls_check_due = 0.0  # monotonic time of the next tls_validity check
        self._upstream_check_due = 0.0  # ... of the next upstream_status check
        self._down_upstreams: list[str] = []  # upstreams with every backend down
        self.handoff: Handoff | None = None
        self.upgrade_conn: socket.socket | None = None  # to the old master, until READY
        self.stopping = False
        self.paused = False                      # WINCH: workers stopped, master stays
        self.ready_once = False
        self.started = time.time()
        self.signal_queue: list[int] = []
        self.deferred: list[int] = []           # DEFERRABLE signals held for later
        self.children: list[tuple[subprocess.Popen[bytes], float]] = []  # masters we stop
        self.crashes: list[float] = []
        self.respawn_at = 0.0
        self.watcher: Any = None
        self.watch_due: float | None = None
        self.status_due = 0.0
        self.ready_pipe: int | None = None      # daemon: tell the launcher we are up
        self.last_upgrade_failed = False
        self.taker_wait: tuple[str, float] | None = None
        self._pipe = (-1, -1)
        self._scoreboard_fd = -1
        self._state_fd = -1
        self.scoreboard: Scoreboard | None = None
        self.state: SharedState | None = None
        self.inherited_regions: dict[str, int] = {}

    # --- setup --------------------------------------------------------------------

    def _install_signals(self) -> None:
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._pipe = (rfd, wfd)
        signal.set_wakeup_fd(wfd)
        for sig in self.SIGNALS:
            signal.signal(sig, self._enqueue)
        # master.cli held them during start-up: what arrived meanwhile is queued now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.SIGNALS)

    def _enqueue(self, signum: int, frame: object) -> None:
        self.signal_queue.append(signum)

    def _stop_requested(self) -> bool:
        return any(s in (signal.SIGTERM, signal.SIGINT) for s in self.signal_queue)

    def _setup_shared(self) -> None:
        """Create the scoreboard and shared state, unless a previous master handed them
        over (then counters, health and metric totals carry on)."""
        inherited = self.inherited_regions
        fresh = "shm:state" not in inherited
        self._scoreboard_fd = inherited.get("shm:scoreboard") or \
            shm.create_region("pingap-scoreboard", SCOREBOARD_SIZE)
        self._state_fd = inherited.get("shm:state") or \
            shm.create_region("pingap-state", STATE_SIZE)
        self.scoreboard = shm.open_scoreboard(self._scoreboard_fd)
        self.state = shm.open_state(self._state_fd, fresh=fresh)

    def _adopt_listeners(self) -> None:
        try:
            self.listeners.adopt(systemd_sockets())
        except OSError as exc:
            raise HaltServer(f"LISTEN_FDS: cannot adopt the sockets systemd passed: {exc}") \
                from exc
        conn: socket.socket | None = None
        if self.options.upgrade_fd is not None:
            conn = socket.socket(fileno=self.options.upgrade_fd)
        elif self.options.upgrade:
            path = self.config.basic.upgrade_sock or "/tmp/pingap_upgrade.sock"
            log.info("waiting for the running pingap to hand over its sockets on %s", path)
            try:
                conn = handoff.listen_for_handoff(path, HANDOFF_READY_WAIT,
                                                  interrupted=self._stop_requested)
            except handoff.HandoffError as exc:
                raise HaltServer(f"upgrade: {exc}") from exc
            if conn is None:
                raise HaltServer("stopped while waiting for the hand-off", 0)
        if conn is not None:
            try:
                socks, regions, old_pid = handoff.receive_listeners(conn)
            except (OSError, handoff.HandoffError) as exc:
                raise HaltServer(f"upgrade: receiving the listeners failed: {exc}") from exc
            self.inherited_regions.update(regions)
            self.listeners.sockets.update(socks)
            self.upgrade_conn = conn
            log.info("took over %d listening sockets from pid %d", len(socks), old_pid)

    # --- generations ----------------------------------------------------------------

    def next_generation_number(self) -> int:
        number = (self.current.number if self.current else 0) + 1
        if self.rollout is not None:
            number = self.rollout.generation.number + 1
        return number

    def load_generation_config(self, number: int) -> tuple[Any, str, str | None]:
        """Copy, validate and fully compile the config for generation ``number``:
        (config, copy path, path of the facts on its certificates or None).

        Raises ConfigError listing every problem, ``StorageError`` when the storage
        cannot be read (etcd away)."""
        path = self.snapshots.take(number)
        try:
            runtime = load_runtime(path)
        except ConfigError as err:
            raise self.snapshots.user_paths(err, number) from None
        facts = None
        if runtime.certificates.entries:
            facts = self.snapshots.write_certificate_facts(
                number, dump_facts(runtime.certificates))
        return runtime.config, path, facts

    def start_generation(self, config: Any, reason: str, path: str,
                         certificates: str | None = None) -> None:
        number = self.next_generation_number()
        servers = generation_servers(config)
        keys = [k for ks in servers.values() for k in ks]
        reuse = {address_key(h, p): bool(s.reuse_port)
                 for s in config.servers.values() for h, p in s.listen_addrs}
        try:
            new_keys = self.listeners.ensure(keys, reuse)
        except OSError as exc:
            raise _BindError(f"cannot listen: {exc}") from exc
        generation = Generation(number, config, config.digest, servers, path, certificates)
        self.reload_seq += 1
        self.rollout = Rollout(generation, reason, self.reload_seq,
                               time.monotonic() + BOOT_TIMEOUT, new_keys)
        for worker_id in range(workers_for(config, self.options.threads)):
            self.spawn_worker(generation, worker_id)

    def spawn_worker(self, generation: Generation, worker_id: int,
                     standby: bool = False) -> None:
        assert self.scoreboard is not None
        fds = {name: [self.listeners.sockets[k].fileno() for k in keys]
               for name, keys in generation.servers.items()}
        parent, child = socket.socketpair()
        child.set_inheritable(True)
        assert self.state is not None
        with self.state.lock("slots"):  # an upgrading master may allocate at the same time
            slot = self.scoreboard.free_index()
            self.scoreboard.write(slot, pid=0, generation=generation.number,
                                  state=SlotState.BOOTING)
        cmd = command(WorkerArgs(
            config=generation.path, config_digest=generation.digest, listeners=fds,
            worker_id=worker_id, generation=generation.number, control_fd=child.fileno(),
            scoreboard_fd=self._scoreboard_fd, slot=slot, state_fd=self._state_fd,
            standby=standby, log=self.options.log_path or None,
            certificates=generation.certificates))
        pass_fds = [fd for fdl in fds.values() for fd in fdl]
        pass_fds += [child.fileno(), self._scoreboard_fd, self._state_fd]
        proc = subprocess.Popen(cmd, pass_fds=pass_fds, close_fds=True)
        child.close()
        parent.setblocking(False)
        try:  # boot ahead of the load; the worker returns to normal priority once serving
            os.setpriority(os.PRIO_PROCESS, proc.pid, BOOT_NICE)
        except OSError:
            pass
        now = time.monotonic()
        handle = WorkerHandle(worker_id, generation.number, proc, parent, slot, now,
                              last_heartbeat=now, standby=standby)
        self.workers[proc.pid] = handle
        log.info("started %s of generation %d (pid %d)",
                 "a spare worker" if standby else f"worker {worker_id}",
                 generation.number, proc.pid)

    def _generation_workers(self, number: int, standby: bool = False) -> list[WorkerHandle]:
        """Live (not draining) workers of generation ``number``; the spare with standby."""
        return [w for w in self.workers.values()
                if w.generation == number and not w.draining and w.standby == standby]

    def check_rollout(self) -> None:
        rollout = self.rollout
        if rollout is None:
            return
        workers = self._generation_workers(rollout.generation.number)
        wanted = workers_for(rollout.generation.config, self.options.threads)
        if rollout.failure is not None or time.monotonic() > rollout.deadline:
            self.abort_rollout(rollout.failure or "workers did not become ready in time")
            return
        if len(workers) < wanted or not all(w.ready for w in workers):
            return
        self.complete_rollout()

    def complete_rollout(self) -> None:
        rollout = self.rollout
        assert rollout is not None
        self.rollout = None
        old = self.current
        self.current = rollout.generation
        self.config = rollout.generation.config
        for worker in list(self.workers.values()):
            if worker.generation != self.current.number and not worker.draining:
                self.drain_worker(worker)
        if old is not None:
            live = {k for ks in self.current.servers.values() for k in ks}
            self.listeners.close([k for k in list(self.listeners.sockets) if k not in live])
        self.last_reload = {"seq": rollout.seq, "ok": True, "at": time.time(),
                            "reason": rollout.reason, "generation": self.current.number,
                            "problems": []}
        self._reload_diff = config_diff(old.config, self.current.config) if old else []
        log.info("generation %d serving (%s)", self.current.number, rollout.reason)
        self.on_ready()
        if self.reload_pending:
            reason, self.reload_pending = self.reload_pending, None
            self.reload(f"pending change: {reason}" if reason != RESTART_REASON else reason)

    def abort_rollout(self, reason: str) -> None:
        rollout = self.rollout
        assert rollout is not None
        self.rollout = None
        for worker in self._generation_workers(rollout.generation.number):
            worker.draining = True
            worker.proc.kill()
        self.listeners.close(rollout.new_keys)
        self.last_reload = {"seq": rollout.seq, "ok": False, "at": time.time(),
                            "reason": rollout.reason, "problems": [reason]}
        if self.current is None:
            raise HaltServer(f"workers failed to boot: {reason}", EXIT_BOOT_ERROR)
        log.error("reload failed, generation %d keeps serving: %s", self.current.number,
                  reason)
        notify("READY=1", f"STATUS=reload failed: {reason}")
        self.write_status(force=True)

    def reload(self, reason: str) -> None:
        if self.stopping or self.handoff is not None:
            return
        if self.rollout is not None:
            if self.reload_pending != RESTART_REASON:
                self.reload_pending = reason
            return
        notify("RELOADING=1", monotonic_usec())
        self.paused = False
        try:
            config, path, facts = self.load_generation_config(self.next_generation_number())
        except ConfigError as err:
            self.reload_seq += 1
            self.last_reload = {"seq": self.reload_seq, "ok": False, "at": time.time(),
                                "reason": reason, "problems": [str(p) for p in err.problems],
                                "certificates": certificate_parse_failures(err.problems)}
            log.error("reload (%s) rejected, old config keeps serving:\n  %s", reason,
                      "\n  ".join(str(p) for p in err.problems))
            notify("READY=1", "STATUS=reload rejected: invalid config")
            self.write_status(force=True)
            return
        except StorageError as err:
            self.reload_seq += 1
            self.last_reload = {"seq": self.reload_seq, "ok": False, "at": time.time(),
                                "reason": reason, "problems": [str(err)]}
            log.error("reload (%s) failed, old config keeps serving: %s", reason, err)
            if isinstance(self.watcher, PollingWatcher):
                self.watcher.forget()  # reload again once the storage answers
            notify("READY=1", "STATUS=reload failed: config storage unreachable")
            self.write_status(force=True)
            return
        try:
            self.start_generation(config, reason, path, facts)
        except _BindError as err:
            self.reload_seq += 1
            self.last_reload = {"seq": self.reload_seq, "ok": False, "at": time.time(),
                                "reason": reason, "problems": [str(err)]}
            log.error("reload (%s) failed: %s", reason, err)
            notify("READY=1", f"STATUS=reload failed: {err}")
            self.write_status(force=True)

    def on_ready(self) -> None:
        """A generation is serving: tell whoever waits (systemd, launcher, old master)."""
        assert self.current is not None
        status = (f"STATUS=generation {self.current.number}, "
                  f"{len(self._generation_workers(self.current.number))} workers")
        if not self.ready_once:
            self.ready_once = True
            files.write_pid_file(self.pid_file)
            notify("READY=1", f"MAINPID={os.getpid()}", status)
            if self.upgrade_conn is not None:
                try:
                    handoff.send_ready(self.upgrade_conn)
                except OSError as exc:
                    log.warning("could not tell the old master we are ready: %s", exc)
                self.upgrade_conn.close()
                self.upgrade_conn = None
            if self.ready_pipe is not None:
                os.write(self.ready_pipe, b"ok")
                os.close(self.ready_pipe)
                self.ready_pipe = None
        else:
            notify("READY=1", status)
        self.write_status(force=True)

    # --- worker messages and life -----------------------------------------------------

    def drain_worker(self, worker: WorkerHandle) -> None:
        """DRAIN over the control channel; a worker still booting reads it as soon as it
        serves (it may already hold connections the master has not heard of)."""
        worker.draining = True
        rollout = self.rollout
        basic = (rollout.generation.config if rollout is not None
                 and worker.generation == rollout.generation.number else self.config).basic
        worker.deadline = time.monotonic() + basic.grace_period + basic.graceful_shutdown_timeout
        # Only a stop with nobody to take over leaves the kernel's accept queue to the
        # draining workers; after a reload or hand-off the listeners serve on.
        payload = {"take_queue": True} if self.stopping and self.handoff is None else None
        try:
            worker.control.sendall(encode(MessageType.DRAIN, payload))
        except OSError:
            worker.proc.send_signal(signal.SIGTERM)

    def read_worker(self, worker: WorkerHandle) -> None:
        messages = handoff.read_messages(worker.control, worker.decoder)
        if messages is None:
            return
        for message in messages:
            if message.type == MessageType.READY:
                worker.ready = True
                worker.last_heartbeat = time.monotonic()
                if worker.reopen_pending:  # its USR1 handler exists now
                    worker.reopen_pending = False
                    self._signal_worker(worker, signal.SIGUSR1)
                self.write_status(force=True)
            elif message.type == MessageType.HEARTBEAT:
                worker.last_heartbeat = time.monotonic()
                worker.stats = message.payload or {}
            elif message.type == MessageType.NOTIFY:
                self.worker_event(message.payload or {})
            elif message.type == MessageType.ADMIN_REQUEST:
                self.admin.handle(message.payload or {}, self._admin_reply(worker, message))
            elif message.type == MessageType.BOOT_ERROR:
                worker.boot_error = str((message.payload or {}).get("error", "boot error"))

    def worker_event(self, event: dict[str, Any]) -> None:
        """A worker's event for the webhook; the same news from two workers (a prober of
        the old and of the new generation) goes out once."""
        key, message = str(event.get("key", "")), str(event.get("message", ""))
        if key and self._last_events.get(key) == message:
            return
        if key:
            self._last_events[key] = message
        self.webhook.notify(str(event.get("category", "")), str(event.get("level", "info")),
                            str(event.get("title", "")), message)

    def notify_reload(self) -> None:
        """pingap's reload_config / reload_config_fail (restart / restart_fail for
        ``/api/restart``), with diff_config first, once per reload."""
        last = self.last_reload
        if not last or last["seq"] == self._notified_seq:
            return
        self._notified_seq = last["seq"]
        if last.get("reason") == "start":
            return  # starting is not a reload (pingap sends nothing either)
        if last["ok"]:
            if self.current is not None:
                self.webhook.configure(self.current.config.basic)
            if self._reload_diff:
                self.webhook.notify("diff_config", "info", "Configuration changed",
                                    "\n".join(self._reload_diff))
                self._reload_diff = []
            serving = f"generation {self.current.number if self.current else 0} serving"
            if last.get("reason") == RESTART_REASON:
                self.webhook.notify("restart", "info", "Restart",
                                    f"Restart now, pid:{os.getpid()}: {serving}")
            else:
                self.webhook.notify("reload_config", "info", "Reload config success",
                                    f"{last.get('reason', '')}: {serving}")
            return
        if last.get("certificates"):  # pingap: no title
            self.webhook.notify("parse_certificate_fail", "error", "", last["certificates"])
        if last.get("reason") == RESTART_REASON:
            self.webhook.notify("restart_fail", "error", "Restart fail",
                                "; ".join(last.get("problems") or []))
        else:
            self.webhook.notify("reload_config_fail", "error", "Reload config fail",
                                f"{last.get('reason', '')}: "
                                + "; ".join(last.get("problems") or []))

    def check_tls_validity(self) -> None:
        """pingap's tls_validity: once the first config serves, then daily, the host's
        certificates close to expiry (or not valid yet) in one event."""
        if self.current is None or time.monotonic() < self._tls_check_due:
            return
        self._tls_check_due = time.monotonic() + TLS_CHECK_INTERVAL
        names = invalid_soon(self.current.config, datetime.datetime.now(datetime.UTC))
        if names:
            log.error("certificate %s will be expired", ",".join(names))
            self.webhook.notify("tls_validity", "warn", "Certificate validity",
                                f"certificate {','.join(names)} will be expired")

    def check_upstream_status(self) -> None:
        """pingap's upstream_status: every ``UPSTREAM_STATUS_INTERVAL``, the upstreams whose
        every backend went down since the last check (error) and those back up (info),
        from the host's shared health table, once per host."""
        if self.current is None or self.state is None or \
                time.monotonic() < self._upstream_check_due:
            return
        self._upstream_check_due = time.monotonic() + UPSTREAM_STATUS_INTERVAL
        config = self.current.config
        down = down_upstreams(config, self.state.health)
        newly = [name for name in down if name not in self._down_upstreams]
        back = [name for name in self._down_upstreams
                if name not in down and name in config.upstreams]
        self._down_upstreams = down
        if newly:
            self.webhook.notify("upstream_status", "error", "Upstream unhealthy",
                                ", ".join(newly))
        if back:
            self.webhook.notify("upstream_status", "info", "Upstream healthy", ", ".join(back))

    @staticmethod
    def _admin_reply(worker: WorkerHandle, message: Any) -> Any:
        call_id = (message.payload or {}).get("id")

        def reply(status: int, body: Any) -> None:
            try:
                worker.control.sendall(encode(MessageType.ADMIN_RESULT, {
                    "id": call_id, "status": status, "body": body}))
            except OSError:
                pass  # the worker is gone; its client saw the connection close
        return reply

    def reap_workers(self) -> None:
        for pid, worker in list(self.workers.items()):
            status = worker.proc.poll()
            if status is None:
                continue
            del self.workers[pid]
            worker.control.close()
            in_use = {w.generation for w in self.workers.values()}
            if self.current is not None:
                in_use.add(self.current.number)
            if self.rollout is not None:
                in_use.add(self.rollout.generation.number)
            self.snapshots.drop(in_use)
            if self.state is not None:
                self.state.retire(worker.slot)       # metric totals outlive the worker
                self.state.drop_owner(worker.slot)   # its in-flight counts are void
            if self.scoreboard is not None:
                self.scoreboard.clear(worker.slot)
            rollout = self.rollout
            if rollout is not None and worker.generation == rollout.generation.number \
                    and not worker.draining and not worker.ready:
                rollout.failure = worker.boot_error or f"worker exited with status {status}"
                continue
            current = self.current.number if self.current else -1
            if worker.draining or self.stopping or worker.generation != current:
                log.info("worker %d (pid %d, generation %d) exited", worker.worker_id, pid,
                         worker.generation)
                continue
            if status == EXIT_BOOT_ERROR or not worker.ready:
                log.error("worker %d (pid %d) failed to boot: %s", worker.worker_id, pid,
                          worker.boot_error or f"exit status {status}")
            else:
                log.warning("worker %d (pid %d) died (status %s); replacing it",
                            worker.worker_id, pid, status)
            now = time.monotonic()
            self.crashes = [t for t in self.crashes if now - t < 30] + [now]
            if len(self.crashes) > 2:
                self.respawn_at = now + min(10.0, 0.1 * 2 ** len(self.crashes))

    def manage_workers(self) -> None:
        if self.stopping or self.paused or self.current is None or self.handoff is not None:
            return
        if time.monotonic() < self.respawn_at:
            return
        current = self.current
        present = {w.worker_id for w in self._generation_workers(current.number)}
        spares = self._generation_workers(current.number, standby=True)
        for worker_id in range(workers_for(current.config, self.options.threads)):
            if worker_id in present:
                continue
            ready = [w for w in spares if w.ready]
            if ready:  # the spare takes over at once; a new spare boots behind it
                spare = ready[0]
                spares.remove(spare)
                self.activate(spare, worker_id)
            else:
                self.spawn_worker(current, worker_id)
        if not spares and self.options.spare_workers and self.rollout is None:
            self.spawn_worker(current, -1, standby=True)

    def activate(self, worker: WorkerHandle, worker_id: int) -> None:
        try:
            worker.control.sendall(encode(MessageType.ACTIVATE, {"worker_id": worker_id}))
        except OSError:
            worker.kill()
            return
        worker.standby = False
        worker.worker_id = worker_id
        log.info("spare worker pid %d now serves as worker %d", worker.pid, worker_id)
        self.write_status(force=True)

    def check_timeouts(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.killed or worker.proc.poll() is not None:
                continue
            if worker.draining:
                if worker.deadline is not None and now > worker.deadline:
                    log.warning("worker pid %d did not drain in time; killing it", worker.pid)
                    worker.kill()
            elif not worker.ready:
                if now - worker.started > BOOT_TIMEOUT:
                    log.error("worker pid %d did not boot in time; killing it", worker.pid)
                    worker.kill()
            elif now - worker.last_heartbeat > self.options.heartbeat_timeout:
                log.error("worker pid %d missed heartbeats for %.1fs; killing it", worker.pid,
                          now - worker.last_heartbeat)
                worker.kill()

    # --- hand-off (QUIT / USR2) -----------------------------------------------------------

    def begin_handoff(self, conn: socket.socket, child: subprocess.Popen[bytes] | None) -> None:
        self.last_upgrade_failed = False
        self.write_status(force=True)
        try:
            handoff.send_listeners(conn, self.listeners.sockets,
                                   {"shm:scoreboard": self._scoreboard_fd,
                                    "shm:state": self._state_fd})
        except OSError as exc:
            log.error("upgrade failed: handing over the listeners failed (%s); "
                      "this master keeps serving", exc)
            conn.close()
            if child is not None:
                self.stop_child(child)
            self.last_upgrade_failed = True
            self.write_status(force=True)
            return
        conn.setblocking(False)
        self.handoff = Handoff(conn, child, time.monotonic() + HANDOFF_READY_WAIT)
        log.info("listeners handed over; waiting for the new master to be ready")

    def check_handoff(self, readable: bool) -> None:
        state = self.handoff
        if state is None:
            return
        messages: list[Any] | None = []
        if readable:
            try:
                messages = handoff.read_messages(state.conn, state.decoder)
            except ProtocolError:
                messages = None
        if messages and any(m.type == MessageType.READY for m in messages):
            state.conn.close()
            self.handoff = None
            log.info("new master is ready; draining")
            # no STOPPING=1: the service goes on in the new master (which sent MAINPID)
            notify(f"STATUS=handed over to the new master; draining pid {os.getpid()}")
            self.graceful_stop(close_listeners=True, notify_systemd=False)
            return
        child_dead = state.child is not None and state.child.poll() is not None
        if messages is None or child_dead or time.monotonic() > state.deadline:
            log.error("upgrade failed: the new master %s before it was ready; "
                      "this master keeps serving",
                      "exited" if (messages is None or child_dead) else "timed out")
            state.conn.close()
            if state.child is not None:
                self.stop_child(state.child)
            self.handoff = None
            self.last_upgrade_failed = True
            self.write_status(force=True)

    # --- stopping -----------------------------------------------------------------------

    def stop_child(self, child: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """Stop a new master we started (USR2) the way its workers stop too; the loop
        reaps it, with SIGKILL after CHILD_STOP_WAIT."""
        if child.poll() is None:
            try:
                child.send_signal(sig)
            except ProcessLookupError:
                pass
        if all(c is not child for c, _ in self.children):
            self.children.append((child, time.monotonic() + CHILD_STOP_WAIT))

    def reap_children(self) -> None:
        now = time.monotonic()
        for child, deadline in list(self.children):
            if child.poll() is not None:
                self.children.remove((child, deadline))
            elif now > deadline:
                log.warning("new master pid %d did not stop in time; killing it", child.pid)
                child.kill()

    def _abandon_upgrade(self, sig: int) -> None:
        """A stop while upgrading: nobody takes the listeners; a new master we started
        ourselves stops with us (a ``pingap -u`` started by the operator goes on)."""
        self.taker_wait = None
        self.deferred.clear()
        state = self.handoff
        if state is None:
            return
        self.handoff = None
        state.conn.close()
        if state.child is not None:
            log.info("stopping the new master pid %d too", state.child.pid)
            self.stop_child(state.child, sig)

    def graceful_stop(self, close_listeners: bool = True, notify_systemd: bool = True) -> None:
        if self.stopping:
            return
        self.stopping = True
        if notify_systemd:
            notify("STOPPING=1")
        self._abandon_upgrade(signal.SIGTERM)
        # a rollout's workers drain like the rest: the ready ones may be serving already
        self.rollout = None
        if close_listeners:
            self.listeners.close()
        for worker in list(self.workers.values()):
            if worker.standby and not worker.ready:
                # a booting spare accepts nothing but holds the listeners until it has
                # booted: end it now so the listening sockets close at once
                worker.draining = True
                worker.kill()
            elif not worker.draining:
                self.drain_worker(worker)

    # --- signal handlers ----------------------------------------------------------------

    def handle_term(self) -> None:
        if self.stopping:
            # already stopping (a TERM, or the drain after a hand-off): a second TERM
            # must not cut the requests the drain is finishing; INT is the fast stop
            log.info("SIGTERM ignored: the master is stopping (INT stops at once)")
            return
        log.info("SIGTERM: graceful stop")
        if self.handoff is None:  # (handed over, the listeners serve a new master)
            self.listeners.refuse_new_connections()  # the workers serve what is queued
        self.graceful_stop()

    def handle_int(self) -> None:
        log.info("SIGINT: fast stop")
        self.stopping = True
        notify("STOPPING=1")
        self._abandon_upgrade(signal.SIGINT)
        for child, _ in self.children:
            self.stop_child(child, signal.SIGINT)
        self.rollout = None
        self.listeners.close()
        for worker in self.workers.values():
            worker.draining = True
            worker.deadline = time.monotonic() + 2.0
            if worker.ready:
                self._signal_worker(worker, signal.SIGINT)
            else:  # no handler yet, and nothing to finish
                worker.kill()

    def _signal_worker(self, worker: WorkerHandle, sig: int) -> None:
        try:
            worker.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def handle_quit(self) -> None:
        if self.handoff is not None or self.stopping or self.taker_wait is not None:
            return
        path = self.config.basic.upgrade_sock or "/tmp/pingap_upgrade.sock"
        log.info("SIGQUIT: handing the listeners to a new pingap on %s", path)
        self.taker_wait = (path, time.monotonic() + HANDOFF_TAKER_WAIT)

    def check_taker(self) -> None:
        """After QUIT: look for a ``pingap -u`` on upgrade_sock each turn (the loop keeps
        reaping and checking heartbeats meanwhile); none in time means a graceful stop."""
        if self.taker_wait is None:
            return
        path, deadline = self.taker_wait
        conn = handoff.wait_for_taker(path, 0.0)
        if conn is not None:
            self.taker_wait = None
            self.begin_handoff(conn, None)
        elif time.monotonic() > deadline:
            self.taker_wait = None
            log.info("nobody took the listeners; graceful stop")
            self.listeners.refuse_new_connections()
            self.graceful_stop()

    def handle_usr2(self) -> None:
        if self.handoff is not None or self.stopping:
            return
        parent, child = socket.socketpair()
        child.set_inheritable(True)
        argv = [a for a in self.options.argv if a not in ("-d", "--daemon", "-u", "--upgrade")]
        cmd = [sys.executable, "-m", "master", *argv, "--upgrade-fd", str(child.fileno())]
        log.info("SIGUSR2: starting a new master: %s", " ".join(cmd))
        # it starts with our signals held, so none can kill it before its handlers exist
        held = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
        try:
            proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], close_fds=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        child.close()
        self.begin_handoff(parent, proc)

    def handle_hup(self) -> None:
        log.info("SIGHUP: reloading %s", self.storage.url)
        self.reload("SIGHUP")

    def handle_usr1(self) -> None:
        log.info("SIGUSR1: reopening log files")
        logs.reopen()
        for worker in self.workers.values():
            if worker.ready:
                self._signal_worker(worker, signal.SIGUSR1)
            else:  # USR1's default action would kill it before its handler exists
                worker.reopen_pending = True

    def handle_winch(self) -> None:
        log.info("SIGWINCH: stopping workers gracefully (HUP starts them again)")
        self.paused = True
        for worker in list(self.workers.values()):
            if not worker.draining:
                self.drain_worker(worker)

    def handle_chld(self) -> None:
        pass  # reaping happens every turn of the loop

    # --- status ---------------------------------------------------------------------------

    def write_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.status_due:
            return
        self.status_due = now + 1.0
        workers = []
        for worker in sorted(self.workers.values(), key=lambda w: (w.generation, w.worker_id)):
            state = ("draining" if worker.draining else "booting" if not worker.ready
                     else "standby" if worker.standby else "serving")
            workers.append({"pid": worker.pid, "id": worker.worker_id,
                            "generation": worker.generation, "state": state,
                            **{k: worker.stats.get(k, 0)
                               for k in ("connections", "accepted", "requests")}})
        status = {
            "pid": os.getpid(), "started": self.started,
            "generation": self.current.number if self.current else 0,
            "config": self.storage.url, "digest": self.config.digest,
            "workers": workers, "last_reload": self.last_reload,
            "stopping": self.stopping, "upgrade_failed": self.last_upgrade_failed,
            "listeners": sorted(self.listeners.sockets),
        }
        try:
            files.write_status(self.pid_file, status)
        except OSError as exc:
            log.warning("cannot write status file: %s", exc)

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        try:
            self._adopt_listeners()
            self._setup_shared()
            if self.options.autoreload and self.storage.polled:
                self.watcher = PollingWatcher(self.storage)
                self.watcher.start()
            elif self.options.autoreload:
                from master.watcher import ConfigWatcher
                self.watcher = ConfigWatcher(self.config_path)
                self.watcher.start()
            try:
                config, path, facts = self.load_generation_config(1)
                self.start_generation(config, "start", path, facts)
            except ConfigError as err:
                raise HaltServer(f"invalid config:\n{err}") from err
            except StorageError as err:
                raise HaltServer(f"cannot read the config: {err}") from err
            except _BindError as err:
                raise HaltServer(str(err)) from err
            while True:
                self.turn()
                if self.stopping and not self.workers and not self.children:
                    log.info("master exits")
                    return 0
        except HaltServer as halt:
            (log.error if halt.exit_status else log.info)("%s", halt.reason)
            self.stopping = True
            for worker in self.workers.values():
                worker.proc.kill()
            for worker in self.workers.values():
                worker.proc.wait()
            for child, _ in self.children:
                child.kill()
                child.wait()
            if self.ready_pipe is not None:
                os.write(self.ready_pipe, f"pingap: {halt.reason}\n".encode())
            return halt.exit_status
        finally:
            self.listeners.close()
            self.snapshots.remove()
            if self.watcher is not None:
                self.watcher.stop()
            self.discovery.stop()
            self.webhook.stop()
            files.remove_pid_file(self.pid_file)

    def turn(self) -> None:
        rlist: list[Any] = [self._pipe[0]]
        by_fd = {w.control.fileno(): w for w in self.workers.values()
                 if w.control.fileno() >= 0}
        rlist += list(by_fd)
        if self.handoff is not None:
            rlist.append(self.handoff.conn)
        if self.watcher is not None:
            rlist.append(self.watcher.fd)
        try:
            ready, _, _ = select.select(rlist, [], [], TICK)
        except InterruptedError:
            ready = []
        for item in ready:
            if item == self._pipe[0]:
                try:
                    while os.read(self._pipe[0], 4096):
                        pass
                except BlockingIOError:
                    pass
            elif item in by_fd:
                try:
                    self.read_worker(by_fd[item])
                except ProtocolError as exc:
                    log.error("bad control frame from pid %d: %s", by_fd[item].pid, exc)
                    by_fd[item].proc.kill()
            elif self.watcher is not None and item == self.watcher.fd:
                if self.watcher.drain():
                    self.watch_due = time.monotonic() + getattr(self.watcher, "debounce", 0.5)
        self.dispatch_signals()
        if self.watch_due is not None and time.monotonic() >= self.watch_due:
            self.watch_due = None
            self.reload("config change")
        self.check_taker()
        self.check_handoff(self.handoff is not None and self.handoff.conn in ready)
        self.reap_workers()
        self.reap_children()
        self.check_rollout()
        self.admin.poll()
        self.notify_reload()
        self.check_tls_validity()
        self.check_upstream_status()
        self.discovery.follow(self.current.config if self.current is not None else None)
        self.check_timeouts()
        self.manage_workers()
        self.write_status()


    def _busy(self) -> bool:
        """A rollout (start-up included) or a hand-off is under way."""
        return self.rollout is not None or self.handoff is not None \
            or self.taker_wait is not None

    def dispatch_signals(self) -> None:
        if self.deferred and not self._busy():
            self.signal_queue[:0] = self.deferred
            self.deferred = []
        while self.signal_queue:
            sig = self.signal_queue.pop(0)
            name = signal.Signals(sig).name
            if sig in DEFERRABLE and self.stopping:
                log.info("%s ignored: the master is stopping", name)
                continue
            if sig in DEFERRABLE and self._busy():
                if sig not in self.deferred:
                    log.info("%s: acted on once the %s ends", name,
                             "rollout" if self.rollout is not None else "hand-off")
                    self.deferred.append(sig)
                continue
            handler = getattr(self, f"handle_{name[3:].lower()}", None)
            if handler is not None:
                handler()


class _BindError(Exception):
    pass
