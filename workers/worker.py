"""A worker process: serves the listeners the master passed it until told to stop.

Life cycle (gunicorn's split): *boot* loads and compiles the config (checking it is the
one the master validated), adopts the listening fds and drops privileges — any failure
is reported as BOOT_ERROR on the control channel and exits with ``EXIT_BOOT_ERROR``, so
the master stops instead of respawning in a loop; *serve* runs one accept greenlet per
listener, one greenlet per connection, the health probers and ACME renewer (worker 0),
the stored-certificate watcher, a heartbeat and the control reader. DRAIN (or TERM/QUIT)
stops accepting, answers the next request on each keep-alive connection with
``Connection: close``, closes idle connections after a short grace and exits once
in-flight requests finish (or ``grace_period`` passes). INT exits at once; USR1 reopens
log files; a closed control channel means the master is gone.
"""

from __future__ import annotations

import gc
import grp
import json
import logging
import os
import platform
import pwd
import signal
import socket
import time
from importlib.metadata import entry_points
from typing import Any

import gevent
from gevent.event import Event

from pingap import __version__
from pingap.acme import challenge_answer, challenge_token
from pingap.actions import Respond
from pingap.config import load_config
from pingap.context import RequestContext
from pingap.control import Decoder, MessageType, encode
from pingap.errors import ConfigError
from pingap.metrics import MetricsRecorder, process_lines, request_counts
from pingap.metrics import render as render_metrics
from pingap.plugins import load_entry_points
from pingap.plugins.static import load_types
from pingap.runtime import Runtime, build_runtime
from pingap.scoreboard import Scoreboard, SlotState
from pingap.state import SharedState
from pingap.system import logs
from pingap.system.shm import open_scoreboard, open_state
from pingap.system.workercmd import EXIT_BOOT_ERROR, parse
from pingap.tls import CertificateFacts, load_facts
from pingap.units import format_duration_spans
from workers.accept import Acceptor
from workers.admin import AdminService, basic_info, host_process_figures
from workers.cache_store import CacheStores
from workers.health import HealthProber
from workers.pool import UpstreamPool
from workers.services import (
    RequestServices,
    bind_plugins,
    open_access_logs,
    plugin_services,
)

log = logging.getLogger("pingap.worker")

IDLE_CLOSE_GRACE = 2.0
#: Draining: at most this many queued connections taken per listener and pass, and the
#: wait before the second pass (a handshake half way through when the first ended).
BACKLOG_TAKE = 4096
QUEUE_SETTLE = 0.05
HEARTBEAT_INTERVAL = 1.0
DEADLINE_TICK = 0.1
#: Stop accepting while this many connections above the serving workers' average.
BALANCE_SLACK = 4


class Worker:
    """One worker process's state; ``serve()`` blocks until the worker should exit."""

    def __init__(self, runtime: Runtime, listeners: dict[str, list[socket.socket]], *,
                 worker_id: int = 0, generation: int = 0, control: socket.socket | None = None,
                 scoreboard: Scoreboard | None = None, slot: int = 0,
                 state: SharedState | None = None, standby: bool = False) -> None:
        self.runtime = runtime
        #: this worker's cache stores, kept across reloads (entries outlive a config)
        self.cache_stores = CacheStores(state, slot)
        self.standby = standby
        self.state = state
        self.metrics = MetricsRecorder(state, slot) if state is not None else None
        self.started_at = time.time()
        self.listeners = listeners
        self.worker_id = worker_id
        self.generation = generation
        self.control = control
        self.scoreboard = scoreboard
        self.slot = slot
        self.ppid = os.getppid()
        self._stop = Event()
        for upstream in runtime.upstreams.values():
            upstream.shared = state
        self._probers: list[HealthProber] = []
        self._tls: dict[str, Any] = {}
        self._acme_storage: Any = None  # workers.acme.AcmeStorage, with acme certificates
        self._cert_watcher: Any = None
        self._renewer: Any = None
        self._setup_acme(runtime)
        if any(server.tls for server in runtime.servers.values()):
            from workers.tls import TLSAcceptor  # ssl contexts only where TLS is served
            self._tls = {server.name: TLSAcceptor(runtime.certificates, server)
                         for server in runtime.servers.values() if server.tls}
        plugins = plugin_services(runtime, state, slot, self.plugin_stats, self.cache_stores)
        bind_plugins(runtime, plugins)
        self.services = RequestServices(
            runtime, UpstreamPool(runtime.keepalive_pool_size), metrics=self.metrics,
            access_logs=open_access_logs(runtime), metrics_text=self.metrics_text,
            acme_answer=self.acme_answer if self._acme_storage is not None else None,
            plugins=plugins)
        self.acceptor = Acceptor(self.services, listeners, tls=self._tls,
                                 scoreboard=scoreboard, on_change=self._publish_current)

    def _setup_acme(self, runtime: Runtime) -> None:
        """With ``acme`` certificates: load what is stored (so it serves from the first
        handshake) and prepare the watcher that installs renewed ones."""
        if not any(c.acme for c in getattr(runtime.config, "certificates", {}).values()):
            return
        from workers.acme import (  # the ACME client is imported only where it is used
            AcmeStorage,
            CertificateWatcher,
            acme_certificates,
        )
        self._acme_storage = AcmeStorage.for_config(runtime.config.basic)
        self._cert_watcher = CertificateWatcher(
            self._acme_storage, acme_certificates(runtime.config), self._install_certificate)
        self._cert_watcher.scan()

    def _install_certificate(self, entry: Any) -> None:
        """A newly stored ACME certificate: contexts first, then the store, so whatever
        the store selects has a context (``TLSAcceptor.install``)."""
        for acceptor in self._tls.values():
            acceptor.install(entry)
        self.runtime.certificates.put(entry)

    def _start_renewer(self) -> None:
        """The host's one ACME job (worker 0), unless ``PINGAP_DISABLE_ACME`` is set."""
        if self._acme_storage is None or self._renewer is not None:
            return
        if os.environ.get("PINGAP_DISABLE_ACME"):
            log.info("PINGAP_DISABLE_ACME is set: ACME certificates are not renewed")
            return
        from workers.acme import AcmeIssuer, CertificateRenewer, acme_certificates
        basic = self.runtime.config.basic
        issuer = AcmeIssuer(self._acme_storage, basic.acme_directory_url,
                            basic.acme_ca_bundle)
        self._renewer = CertificateRenewer(acme_certificates(self.runtime.config),
                                           self._acme_storage, issuer,
                                           on_issued=self._certificate_issued)
        self._renewer.start()

    def _certificate_issued(self, name: str, domains: tuple[str, ...]) -> None:
        """Serve the new certificate here at once; pingap's lets_encrypt event goes to the
        master (only worker 0 renews, so it leaves the host once)."""
        if self._cert_watcher is not None:
            self._cert_watcher.scan()
        self._send(MessageType.NOTIFY, {
            "category": "lets_encrypt", "level": "info",
            "title": "Generate new cert from let's encrypt",
            "message": f"Domains: {json.dumps(list(domains))}"})

    def plugin_stats(self, ctx: RequestContext) -> dict[str, object]:
        """What the ``stats`` plugin answers: pingap's fields, counted over the whole host
        (every worker's requests; the memory, threads and sockets of master + workers)."""
        columns: list[int] = []
        pids = [os.getppid()]
        serving = 1
        if self.scoreboard is not None:
            serving = 0
            for slot in self.scoreboard.slots():
                columns.append(slot.index)
                if slot.pid:
                    pids.append(slot.pid)
                    serving += slot.state is SlotState.SERVING
        if self.state is not None:
            counts = request_counts(self.state, columns, ctx.location)
        else:  # a worker built by hand in tests: its own figures only
            location = self.runtime.locations.get(ctx.location or "")
            counts = {"processing": sum(s.processing for s in self.runtime.servers.values()),
                      "accepted": sum(s.accepted for s in self.runtime.servers.values()),
                      "location_processing": location.processing if location else 0,
                      "location_accepted": 0}
        figures = host_process_figures(tuple(pids))
        started = figures["start_time"] or self.started_at
        return {
            **counts,
            **figures,
            "hostname": socket.gethostname(),
            "version": __version__,
            "rustc_version": f"Python {platform.python_version()}",  # pingap's field: the
            "python_version": platform.python_version(),            # proxy's runtime
            "start_time": int(started),
            "uptime": format_duration_spans(time.time() - started),
            "pid": os.getpid(),
            "worker": self.worker_id,
            "workers": serving,
            "generation": self.generation,
        }

    def metrics_text(self) -> str:
        """The Prometheus exposition: host totals plus per-process resource lines."""
        if self.state is None:  # only in tests that build a Worker by hand
            return ""
        columns = []
        samples = []
        master = os.getppid()
        pids = [("master", master)]
        if self.scoreboard is not None:
            for slot in self.scoreboard.slots():
                columns.append(slot.index)
                if slot.pid:
                    pids.append(("worker", slot.pid))
        import psutil  # here: a worker that serves no metrics never loads it
        for role, pid in pids:
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    times = proc.cpu_times()
                    samples.append((role, pid, proc.memory_info().rss, proc.num_fds(),
                                    times.user + times.system))
            except psutil.Error:
                continue
        return render_metrics(self.state, columns, process_lines(samples))

    def _push_metrics(self, url: str) -> None:
        """Push-gateway mode (``prometheus_metrics`` is a URL): POST the exposition every
        ``interval`` (query parameter, default 60s), from one worker of the host."""
        from workers.push import push_loop
        push_loop(url, self.metrics_text)

    # --- serving ------------------------------------------------------------------

    def _start_serving(self) -> None:
        self.acceptor.start()
        # one prober per host: worker 0 of each generation probes, everyone reads
        if self.worker_id == 0 or self.state is None:
            self._probers = [HealthProber(u, self.state, self._backend_flipped)
                             for u in self.runtime.upstreams.values()]
            for prober in self._probers:
                prober.start()
        if self.worker_id == 0:
            self._start_renewer()
            for server in self.runtime.servers.values():
                if server.prometheus_metrics and "://" in server.prometheus_metrics:
                    gevent.spawn(self._push_metrics, server.prometheus_metrics)
        self._publish(SlotState.SERVING)
        log.info("worker %d (generation %d) serving %s", self.worker_id, self.generation,
                 ", ".join(f"{n}={s.addrs}" for n, s in self.runtime.servers.items()))

    def activate(self, worker_id: int) -> None:
        """A standby worker takes the place of one that died: serve at once."""
        if not self.standby or self.services.draining:
            return
        self.standby = False
        self.worker_id = worker_id
        self._start_serving()

    def serve(self) -> int:
        if self._cert_watcher is not None:  # a standby spare stays current too
            self._cert_watcher.start()
        if not self.standby:
            self._start_serving()
        else:
            self._publish(SlotState.STANDBY)
        gevent.signal_handler(signal.SIGTERM, self.begin_drain)
        gevent.signal_handler(signal.SIGQUIT, self.begin_drain)
        gevent.signal_handler(signal.SIGINT, self._stop.set)
        gevent.signal_handler(signal.SIGUSR1, self.reopen_logs)
        gevent.spawn(self._watch_parent)
        self._send(MessageType.READY, {"pid": os.getpid(), "generation": self.generation,
                                       "standby": self.standby})
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 0)  # the master boosted our boot
        except OSError:
            pass
        if self.control is not None:
            gevent.spawn(self._read_control)
        gevent.spawn(self._heartbeat)
        gevent.spawn(self.acceptor.sweep_deadlines)
        settle_heap()
        self._stop.wait()
        self._shutdown()
        return 0

    def acme_answer(self, path: str) -> Respond | None:
        """The answer to an ACME HTTP-01 challenge request, or None for any other path.

        Only with ``acme`` certificates configured (otherwise the path routes as usual).
        Every listener answers (pingap: those on port 80); the token is read from the
        storage directory, so any worker answers what the host's renewer wrote."""
        if self._acme_storage is None:
            return None
        token = challenge_token(path)
        if token is None:
            return None
        return challenge_answer(self._acme_storage.read_token(token))

    # --- master communication ---------------------------------------------------------

    def _publish(self, state: SlotState) -> None:
        if self.scoreboard is not None:
            acceptor = self.acceptor
            self.scoreboard.write(self.slot, pid=os.getpid(), generation=self.generation,
                                  state=state, connections=acceptor.live,
                                  accepted=acceptor.accepted,
                                  requests=self.services.requests,
                                  heartbeat=time.monotonic())

    def _publish_current(self) -> None:
        self._publish(SlotState.DRAINING if self.services.draining else
                      SlotState.STANDBY if self.standby else SlotState.SERVING)

    def stats(self) -> dict[str, int]:
        return {"connections": len(self.acceptor.connections),
                "accepted": self.acceptor.accepted, "requests": self.services.requests,
                "pid": os.getpid()}

    def _send(self, message_type: MessageType, payload: object = None) -> None:
        if self.control is None:
            return
        try:
            self.control.sendall(encode(message_type, payload))
        except OSError:
            pass

    def _heartbeat(self) -> None:
        while not self._stop.is_set():
            self._send(MessageType.HEARTBEAT, self.stats())
            self._publish_current()
            gevent.sleep(HEARTBEAT_INTERVAL)

    def _read_control(self) -> None:
        assert self.control is not None
        decoder = Decoder()
        while True:
            try:
                data = self.control.recv(65536)
            except OSError:
                data = b""
            if not data:
                log.warning("control channel closed: master is gone; worker %d exits",
                            self.worker_id)
                self._stop.set()
                return
            for message in decoder.feed(data):
                if message.type == MessageType.DRAIN:
                    self.begin_drain(take_queue=bool((message.payload or {}).get("take_queue")))
                elif message.type == MessageType.ACTIVATE:
                    self.activate(int(message.payload["worker_id"]))
                elif message.type == MessageType.STATS:
                    self._send(MessageType.STATS, self.stats())
                elif (message.type == MessageType.ADMIN_RESULT
                      and self.services.admin is not None):
                    self.services.admin.resolve(message.payload or {})

    def _backend_flipped(self, upstream: str, addr: str, healthy: bool) -> None:
        """pingap's backend_status event; the master sends it to the webhook."""
        self._send(MessageType.NOTIFY, {
            "category": "backend_status", "level": "info" if healthy else "error",
            "title": "Upstream backend status changed", "key": f"{upstream}({addr})",
            "message": f"upstream {upstream}({addr}) becomes "
                       f"{'healthy' if healthy else 'unhealthy'}"})

    def _watch_parent(self) -> None:
        while True:
            gevent.sleep(1.0)
            if os.getppid() != self.ppid:
                log.warning("master %d is gone; worker %d exits", self.ppid, self.worker_id)
                self._stop.set()
                return

    # --- stopping -----------------------------------------------------------------

    def begin_drain(self, take_queue: bool = True) -> None:
        """Stop accepting and finish what is open. ``take_queue``: also serve what the
        kernel already queued on the listeners before closing them (a stop; after a reload
        the new generation accepts those)."""
        if self.services.draining:
            return
        self.services.draining = True
        self._publish(SlotState.DRAINING)
        log.info("worker %d (generation %d) draining %d connections", self.worker_id,
                 self.generation, len(self.acceptor.connections))
        takers = self.acceptor.stop(take_queue)
        if self._renewer is not None:  # the new generation's worker 0 takes over
            self._renewer.stop()
        self.acceptor.drain()
        gevent.spawn(self._drain, takers)

    def _drain(self, takers: list[gevent.Greenlet]) -> None:
        gevent.joinall(takers)
        grace = self.runtime.config.basic.grace_period
        deadline = time.monotonic() + grace
        idle_close = time.monotonic() + min(IDLE_CLOSE_GRACE, grace)
        acceptor = self.acceptor
        while acceptor.live and time.monotonic() < deadline:
            if time.monotonic() >= idle_close:
                acceptor.close_idle()
            gevent.sleep(0.05)
        self._stop.set()

    def reopen_logs(self) -> None:
        for sink in self.services.access_logs.values():
            sink.reopen()
        logs.reopen()

    def _shutdown(self) -> None:
        for prober in self._probers:
            prober.stop()
        for job in (self._renewer, self._cert_watcher):
            if job is not None:
                job.stop()
        self.acceptor.close_all()
        for sink in self.services.access_logs.values():
            sink.close()
        self.services.pool.close_all()


#: the young generation's threshold: the request path frees what it makes by reference
#: counting, so collections find little; at CPython's 700 one ran every few requests.
#: (20000 was no faster in same-run benches and held ~2 MB more under load.)
GC_THRESHOLD = (5000, 10, 10)


def untrack_greenlets() -> None:
    """Greenlets spawned from now on do not record the greenlet that spawned them nor a
    copy of its stack (gevent does by default, for debugging helpers nothing here uses):
    that is two thirds of the cost of a spawn, and every HTTP/2 stream is one."""
    gevent.config.track_greenlet_tree = False


def load_file_types(runtime: Runtime) -> bool:
    """The MIME type tables read at boot when a location serves files (``directory``),
    not by the first request for one. True when they were needed."""
    if not runtime.uses_plugin("directory"):
        return False
    load_types()
    return True


def settle_heap() -> None:
    """Boot is over: what it made (modules, config, runtime) lives as long as the worker,
    so a full collection need never walk it again (``gc.freeze``); and the collector runs
    less often on the request path."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def adopt_listeners(mapping: dict[str, list[int]]) -> dict[str, list[socket.socket]]:
    """``{"server": [fd, ...]}`` → sockets wrapping those inherited fds."""
    return {name: [socket.socket(fileno=fd) for fd in fds] for name, fds in mapping.items()}


def drop_privileges(user: str | None, group: str | None) -> None:
    """basic.user/basic.group: switch identity after the sockets are in hand.

    Everything loaded lazily is loaded first: the interpreter's files may not be readable
    by the new user (a Python under /root, for instance)."""
    if os.getuid() != 0 or not (user or group):
        return
    socket.getaddrinfo("localhost", 80)  # loads gevent's resolver
    import http.client  # noqa: F401  (push gateway)

    import workers.push
    import workers.redis_store  # noqa: F401
    if group:
        gid = grp.getgrnam(group).gr_gid
        os.setgroups([])
        os.setgid(gid)
    if user:
        entry = pwd.getpwnam(user)
        if not group:
            os.setgroups([])
            os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)


def certificate_facts(path: str | None) -> dict[str, CertificateFacts] | None:
    """The master's facts on the config's certificates, if it wrote them and they read
    back; without them the certificates are parsed here (``cryptography`` and ~10 MB)."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return load_facts(f.read())
    except (OSError, ValueError) as exc:
        log.warning("certificates parsed again: cannot read the master's facts: %s", exc)
        return None


def main(argv: list[str]) -> int:
    untrack_greenlets()
    args = parse(argv)
    logs.setup(args.log)
    control = socket.socket(fileno=args.control_fd) if args.control_fd is not None else None

    def boot_error(message: str) -> int:
        log.error("worker %d boot failed: %s", args.worker_id, message)
        if control is not None:
            try:
                control.sendall(encode(MessageType.BOOT_ERROR, {"error": message}))
            except OSError:
                pass
        return EXIT_BOOT_ERROR

    try:
        load_entry_points(entry_points)
        config = load_config(args.config)
        logs.setup(args.log, config.basic.log_level)
        if args.config_digest and config.digest != args.config_digest:
            return boot_error("the config changed on disk after the master validated it")
        runtime = build_runtime(config, certificate_facts(args.certificates))
        load_file_types(runtime)
        listeners = adopt_listeners(args.listeners)
        scoreboard = state = None
        if args.scoreboard_fd is not None:
            scoreboard = open_scoreboard(args.scoreboard_fd)
        if args.state_fd is not None:
            state = open_state(args.state_fd)
        worker = Worker(runtime, listeners, worker_id=args.worker_id,
                        generation=args.generation, control=control, scoreboard=scoreboard,
                        slot=args.slot, state=state, standby=args.standby)
        if runtime.uses_plugin("admin"):
            worker.services.admin = AdminService(
                worker._send, lambda: basic_info(worker),
                lambda: list(worker.runtime.certificates.entries),
                lambda: worker.services.draining,
                lambda: {n: s for n, s in worker.runtime.servers.items()
                         if n != "pingap:admin"})
        drop_privileges(config.basic.user, config.basic.group)
    except ConfigError as err:
        return boot_error(f"invalid config: {err}")
    except Exception as exc:
        log.exception("worker boot failed")
        return boot_error(f"{type(exc).__name__}: {exc}")
    return worker.serve()
