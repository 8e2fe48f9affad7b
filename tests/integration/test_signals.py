"""The master survives any signal at any moment: start-up, rollout, hand-off, drain.

Each trial starts a real master, keeps a client sending slow requests through it, fires
one signal at a random moment (fixed seed) and, unless that signal stops the master, a
TERM at a second random moment (so TERM also lands in reload rollouts, upgrade hand-offs
and drains). Every trial must end with exit status 0, no traceback in the log, no worker
outliving its master, and (except for INT, the fast stop) every request that reached the
backend answered in full.
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.support.proc import BackendProcess, Process, free_port, port_open, wait_for

SEED = 13
TRIALS_PER_SIGNAL = 3
PARALLEL = 3
STALL = 0.3  # seconds the backend holds each request: long enough to be cut by a bad stop
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
           signal.SIGUSR2, signal.SIGWINCH)
STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
#: What the master logs for each signal it acts on, defers or ignores while stopping.
ACTED = {signal.SIGTERM: "SIGTERM: graceful stop", signal.SIGINT: "SIGINT: fast stop",
         signal.SIGQUIT: "SIGQUIT: handing the listeners",
         signal.SIGHUP: "SIGHUP: reloading", signal.SIGUSR1: "SIGUSR1: reopening",
         signal.SIGUSR2: "SIGUSR2: starting a new master",
         signal.SIGWINCH: "SIGWINCH: stopping workers"}


def handlers_ready(pid: int) -> bool:
    """The master's own code runs: TERM is held (start-up) or caught (handlers installed).
    Before that the interpreter itself is starting, and no program can catch a signal."""
    bit = 1 << (signal.SIGTERM - 1)
    try:
        fields = dict(line.split(":\t", 1) for line in
                      Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    except OSError:
        return False
    return bool((int(fields["SigBlk"], 16) | int(fields["SigCgt"], 16)) & bit)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass
class Trial:
    number: int
    sig: signal.Signals
    first_at: float
    term_after: float
    tmp: Path
    backend: BackendProcess
    port: int = field(default_factory=free_port)
    outcomes: dict[str, str] = field(default_factory=dict)
    family: dict[int, tuple[int, str]] = field(default_factory=dict)  # pid -> (ppid, role)

    @property
    def name(self) -> str:
        return f"t{self.number}-{self.sig.name}"

    def config(self) -> Path:
        path = self.tmp / f"{self.name}.toml"
        path.write_text(f"""
[basic]
threads = 1
grace_period = "5s"
pid_file = "{self.tmp}/{self.name}.pid"
upgrade_sock = "{self.tmp}/{self.name}.sock"
[upstreams.u]
addrs = ["{self.backend.addr}"]
[locations.all]
upstream = "u"
[servers.s]
addr = "127.0.0.1:{self.port}"
locations = ["all"]
""")
        return path

    def client(self, stop: threading.Event) -> None:
        """Slow requests one after another; refused connections (not yet or no longer
        listening) are expected, anything the backend saw must be answered in full."""
        n = 0
        while not stop.is_set():
            if not port_open(self.port):
                time.sleep(0.01)
                continue
            n += 1
            rid = f"{self.name}-{n}"
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            try:
                conn.request("GET", f"/stall?s={STALL}&id={rid}",
                             headers={"Connection": "close"})
                response = conn.getresponse()
                body = response.read()
                self.outcomes[rid] = f"{response.status} {len(body)}"
            except (OSError, http.client.HTTPException) as exc:
                self.outcomes[rid] = f"error {exc!r}"
            finally:
                conn.close()

    def watch_family(self, root: int, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                for child in psutil.Process(root).children(recursive=True):
                    try:
                        cmd = " ".join(child.cmdline())
                        role = "worker" if "-m workers" in cmd else "master"
                        self.family.setdefault(child.pid, (child.ppid(), role))
                    except psutil.Error:
                        continue
            except psutil.Error:
                pass
            time.sleep(0.01)

    def run(self) -> list[str]:
        problems: list[str] = []
        master = Process([sys.executable, "-m", "master", "-c", str(self.config())],
                         log=self.tmp / f"{self.name}.log")
        stop = threading.Event()
        threads = [threading.Thread(target=self.client, args=(stop,)),
                   threading.Thread(target=self.watch_family, args=(master.pid, stop))]
        try:
            wait_for(lambda: handlers_ready(master.pid) or master.proc.poll() is not None,
                     what="the master's code to run")
            for thread in threads:
                thread.start()
            time.sleep(self.first_at)  # the random moment under test, not a wait for state
            master.proc.send_signal(self.sig)
            if self.sig not in STOPPING:
                time.sleep(self.term_after)
                master.proc.send_signal(signal.SIGTERM)
            try:
                status = master.proc.wait(40)
            except Exception:
                status = None
                problems.append("the master did not exit within 40s")
            successor = self.stop_successor()
            if status != 0:
                problems.append(f"master exit status {status}")
            if successor is not None and successor != 0:
                problems.append(f"new master exit status {successor}")
        finally:
            stop.set()
            for thread in threads:
                if thread.is_alive():
                    thread.join(20)
            master.stop(signal.SIGKILL)
        log = master.log_path.read_text(errors="replace")
        if "Traceback" in log:
            problems.append("traceback in the log")
        orphans = [pid for pid, (_ppid, role) in self.family.items()
                   if role == "worker" and not gone(pid)]
        if orphans:
            problems.append(f"workers outlived their master: {orphans}")
        for sig in (self.sig, *(() if self.sig in STOPPING else (signal.SIGTERM,))):
            if ACTED[sig] not in log and f"{sig.name}: acted on once" not in log \
                    and f"{sig.name} ignored: the master is stopping" not in log:
                problems.append(f"no trace of {sig.name} in the log")
        if self.sig != signal.SIGINT:
            reached = {entry["target"].split("id=")[1] for entry in self.backend.requests()
                       if f"id={self.name}-" in entry.get("target", "")}
            cut = {rid: self.outcomes.get(rid) for rid in reached
                   if not (self.outcomes.get(rid) or "").startswith("200 ")}
            if cut:
                problems.append(f"in-flight requests cut: {cut}")
        return [f"{self.name} (at {self.first_at:.2f}s, TERM +{self.term_after:.2f}s): {p}"
                for p in problems]

    def stop_successor(self) -> int | None:
        """After USR2 the new master goes on serving once the old one drained: stop it
        too, and it must stop as cleanly."""
        masters = [pid for pid, (_ppid, role) in self.family.items()
                   if role == "master" and not gone(pid)]
        status = None
        for pid in masters:
            try:
                proc = psutil.Process(pid)
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                # it ended meanwhile: a TERM during the hand-off stops the new master too
                status = 0
                continue
            try:
                proc.wait(40)
                status = 0
            except psutil.TimeoutExpired:
                proc.kill()
                status = -9
        return status


@pytest.mark.timeout(180)
def test_every_signal_at_random_moments(tmp_path: Path, backends) -> None:
    backend = backends()
    rng = random.Random(SEED)
    trials = [Trial(i * len(SIGNALS) + j, sig, rng.uniform(0.0, 1.6), rng.uniform(0.0, 1.2),
                    tmp_path, backend)
              for i in range(TRIALS_PER_SIGNAL) for j, sig in enumerate(SIGNALS)]
    started = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        problems = [p for found in pool.map(Trial.run, trials) for p in found]
    served = sum(1 for t in trials for o in t.outcomes.values() if o.startswith("200 "))
    print(f"{len(trials)} trials in {time.monotonic() - started:.1f}s, "
          f"{served} requests answered")
    assert not problems, "\n".join(problems)
    assert served > len(trials), "the trials hardly reached a serving proxy"


def test_reload_requested_during_start_up_happens_after_it(tmp_path: Path, backends) -> None:
    """HUP sent before the master's handlers exist is neither fatal nor lost."""
    backend = backends()
    trial = Trial(0, signal.SIGHUP, 0.0, 0.0, tmp_path, backend)
    master = Process([sys.executable, "-m", "master", "-c", str(trial.config())],
                     log=tmp_path / "hup.log")
    try:
        wait_for(lambda: handlers_ready(master.pid), what="the master's code to run")
        master.proc.send_signal(signal.SIGHUP)
        status_file = tmp_path / f"{trial.name}.pid.status"

        def reloaded() -> bool:
            try:
                status = json.loads(status_file.read_text())
            except (OSError, ValueError):
                return False
            last = status.get("last_reload") or {}
            return last.get("reason") == "SIGHUP" and last.get("ok") is True
        wait_for(reloaded, timeout=30, what="the reload after start-up")
        assert master.proc.poll() is None
        assert "SIGHUP: acted on once the rollout ends" in master.log()
    finally:
        assert master.stop(signal.SIGTERM) == 0
    assert "Traceback" not in master.log_path.read_text()


def test_term_during_the_drain_after_an_upgrade_cuts_nothing(tmp_path: Path, backends) -> None:
    """After USR2 the old master drains; a TERM then (an operator, systemd) asks for the
    graceful stop it is already doing: the request in flight is answered in full and the
    old master exits 0."""
    backend = backends()
    trial = Trial(0, signal.SIGUSR2, 0.0, 0.0, tmp_path, backend)
    old = Process([sys.executable, "-m", "master", "-c", str(trial.config())],
                  log=tmp_path / "old.log")
    outcome: dict[str, object] = {}

    def slow_request() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", trial.port, timeout=30)
        try:
            conn.request("GET", "/stall?s=4&id=slow")
            response = conn.getresponse()
            outcome["answer"] = (response.status, response.read())
        except (OSError, http.client.HTTPException) as exc:
            outcome["answer"] = repr(exc)
        finally:
            conn.close()

    client = threading.Thread(target=slow_request)
    new_master = None
    try:
        wait_for(lambda: port_open(trial.port), timeout=30, what="the proxy to listen")
        client.start()
        wait_for(lambda: any("id=slow" in entry.get("target", "")
                             for entry in backend.requests()),
                 what="the slow request to reach the backend")
        old.proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: "new master is ready; draining" in old.log(), timeout=30,
                 what="the old master to drain")
        assert "answer" not in outcome, "the request ended before the TERM: nothing tested"
        old.proc.send_signal(signal.SIGTERM)
        client.join(30)
        answer = outcome.get("answer")
        assert isinstance(answer, tuple) and answer[0] == 200 and answer[1], answer
        assert old.proc.wait(30) == 0
        assert "SIGTERM ignored: the master is stopping" in old.log()
        new_master = int((tmp_path / f"{trial.name}.pid").read_text())
        assert new_master != old.pid
    finally:
        old.stop(signal.SIGKILL)
        if new_master is not None:
            proc = psutil.Process(new_master)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)  # not our child: its status is not ours to read; it must exit
    assert "Traceback" not in old.log_path.read_text()
