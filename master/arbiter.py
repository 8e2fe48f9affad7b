"""The master loop: bind listeners, keep N workers alive, act on signals.

Signal handlers only enqueue; the loop dispatches ``handle_<name>`` (gunicorn's arbiter
shape). Workers are fresh interpreters (``python -m workers``) that inherit the listening
fds; a worker exiting with ``EXIT_BOOT_ERROR`` stops the master instead of a respawn loop.
"""

from __future__ import annotations

import errno
import json
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

from master.listeners import bind

log = logging.getLogger("pingap.master")

EXIT_BOOT_ERROR = 3  # must match workers.worker.EXIT_BOOT_ERROR
RESPAWN_BACKOFF_MAX = 10.0


class HaltServer(Exception):
    def __init__(self, reason: str, exit_status: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


@dataclass
class WorkerProcess:
    worker_id: int
    proc: subprocess.Popen[bytes]
    started: float


@dataclass
class Arbiter:
    config_path: str
    config: Any
    workers_wanted: int
    log_path: str | None = None
    listeners: dict[str, list[socket.socket]] = field(default_factory=dict)
    workers: dict[int, WorkerProcess] = field(default_factory=dict)
    signal_queue: list[int] = field(default_factory=list)
    stopping: bool = False
    _crashes: int = 0
    _pipe: tuple[int, int] = (-1, -1)

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
               signal.SIGUSR1, signal.SIGCHLD)

    # --- setup --------------------------------------------------------------------

    def bind_listeners(self) -> None:
        for name, server in self.config.servers.items():
            socks = []
            for host, port in server.listen_addrs:
                try:
                    socks.append(bind(host, port, reuse_port=bool(server.reuse_port)))
                except OSError as exc:
                    raise HaltServer(f"servers.{name}.addr: cannot listen on "
                                     f"{host}:{port}: {exc.strerror}") from exc
            self.listeners[name] = socks

    def _install_signals(self) -> None:
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._pipe = (rfd, wfd)
        signal.set_wakeup_fd(wfd)
        for sig in self.SIGNALS:
            signal.signal(sig, self._enqueue)

    def _enqueue(self, signum: int, frame: object) -> None:
        self.signal_queue.append(signum)

    # --- workers ------------------------------------------------------------------

    def spawn_worker(self, worker_id: int) -> None:
        fds = {name: [s.fileno() for s in socks] for name, socks in self.listeners.items()}
        cmd = [sys.executable, "-m", "workers", "--config", self.config_path,
               "--listeners", json.dumps(fds), "--worker-id", str(worker_id)]
        if self.log_path:
            cmd += ["--log", self.log_path]
        pass_fds = [fd for fdl in fds.values() for fd in fdl]
        proc = subprocess.Popen(cmd, pass_fds=pass_fds, close_fds=True)
        self.workers[worker_id] = WorkerProcess(worker_id, proc, time.monotonic())
        log.info("started worker %d (pid %d)", worker_id, proc.pid)

    def manage_workers(self) -> None:
        if self.stopping:
            return
        for worker_id in range(self.workers_wanted):
            if worker_id not in self.workers:
                self.spawn_worker(worker_id)

    def reap_workers(self) -> None:
        for worker_id, worker in list(self.workers.items()):
            status = worker.proc.poll()
            if status is None:
                continue
            del self.workers[worker_id]
            if self.stopping:
                continue
            if status == EXIT_BOOT_ERROR:
                raise HaltServer(f"worker {worker_id} failed to boot", EXIT_BOOT_ERROR)
            log.warning("worker %d (pid %d) exited with %s; replacing it",
                        worker_id, worker.proc.pid, status)
            lived = time.monotonic() - worker.started
            self._crashes = 0 if lived > 10 else self._crashes + 1
            if self._crashes > 1:
                time.sleep(min(RESPAWN_BACKOFF_MAX, 0.1 * 2 ** self._crashes))

    def signal_workers(self, sig: int) -> None:
        for worker in self.workers.values():
            try:
                worker.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    # --- loop ---------------------------------------------------------------------

    def run(self) -> int:
        self.bind_listeners()
        self._install_signals()
        self.manage_workers()
        try:
            while True:
                self._sleep()
                while self.signal_queue:
                    sig = self.signal_queue.pop(0)
                    handler = getattr(self, f"handle_{signal.Signals(sig).name[3:].lower()}",
                                      None)
                    if handler is not None:
                        handler()
                self.reap_workers()
                if self.stopping and not self.workers:
                    return 0
                self.manage_workers()
        except HaltServer as halt:
            log.error("%s", halt.reason)
            self.stopping = True
            self.signal_workers(signal.SIGINT)
            self._wait_workers(5.0)
            return halt.exit_status

    def _sleep(self) -> None:
        try:
            ready, _, _ = select.select([self._pipe[0]], [], [], 1.0)
            if ready:
                while os.read(self._pipe[0], 4096):
                    pass
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EINTR):
                raise

    def _wait_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for worker in self.workers.values():
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()

    # --- signal handlers ----------------------------------------------------------

    def handle_term(self) -> None:
        log.info("graceful stop")
        self.stopping = True
        self.signal_workers(signal.SIGTERM)

    handle_quit = handle_term

    def handle_int(self) -> None:
        log.info("fast stop")
        self.stopping = True
        self.signal_workers(signal.SIGINT)

    def handle_usr1(self) -> None:
        self.signal_workers(signal.SIGUSR1)

    def handle_chld(self) -> None:
        pass  # reaping happens on every loop turn
