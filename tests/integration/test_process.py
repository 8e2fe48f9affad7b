"""The process model: reloads, upgrades, crashes and stops under real load."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.support.client import request
from tests.support.load import Load
from tests.support.proc import PingapProcess, Process, free_port, port_open, wait_for


def config_text(tmp: Path, port: int, backend: str, *, header: str = "gen-0",
                threads: int = 2, extra_server: str = "", extra_basic: str = "",
                servers: str | None = None) -> str:
    server = servers if servers is not None else f"""
[servers.s]
addr = "127.0.0.1:{port}"
locations = ["all"]
{extra_server}
"""
    return f"""
[basic]
threads = {threads}
grace_period = "10s"
pid_file = "{tmp}/pingap.pid"
upgrade_sock = "{tmp}/upgrade.sock"
{extra_basic}
[upstreams.u]
addrs = ["{backend}"]
[locations.all]
upstream = "u"
proxy_set_headers = ["X-Config:{header}"]
{server}
"""


def status(tmp: Path) -> dict:
    try:
        return json.loads((tmp / "pingap.pid.status").read_text())
    except (OSError, ValueError):
        return {}


def master_pid(tmp: Path) -> int | None:
    try:
        return int((tmp / "pingap.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def pingapctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pingapctl", *args], capture_output=True, text=True, timeout=120)


def listen_inode(pid: int, port: int) -> int:
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
            return os.stat(f"/proc/{pid}/fd/{conn.fd}").st_ino
    raise AssertionError(f"pid {pid} holds no listener on {port}")


def client_connections(worker: int, port: int) -> int:
    """The client connections a (stopped) worker holds, as the kernel has them: its TCP
    sockets on the proxy's port other than the listener. The worker's own count (the
    scoreboard) can be one short: a SIGSTOP lands after ``accept`` returned a connection
    and before the worker counted it, and that connection is reset with the others."""
    return sum(1 for c in psutil.Process(worker).net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.status != psutil.CONN_LISTEN)


def gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def serving_workers(tmp: Path, generation: int | None = None) -> list[dict]:
    return [w for w in status(tmp).get("workers", []) if w["state"] == "serving"
            and (generation is None or w["generation"] == generation)]


@pytest.fixture
def setup(tmp_path: Path, backends):
    backend = backends()
    port = free_port()
    conf = tmp_path / "pingap.toml"
    procs: list[Process] = []

    def start(args: list[str] | None = None, **kwargs) -> PingapProcess:
        conf.write_text(config_text(tmp_path, port, backend.addr, **kwargs))
        proc = PingapProcess(conf, port, tmp_path, args=args)
        procs.append(proc)
        wait_for(lambda: master_pid(tmp_path), what="pid file")
        return proc

    yield tmp_path, port, conf, backend, start, procs
    for proc in procs:
        proc.stop(signal.SIGINT)
    pid = master_pid(tmp_path)
    if pid:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.mark.timeout(300)
def test_twenty_reloads_under_load_lose_nothing(setup) -> None:
    tmp, port, conf, backend, start, _ = setup
    start()
    with Load(port, clients=64) as load:
        load.wait_requests(200)
        for i in range(1, 21):
            began = time.monotonic()
            conf.write_text(config_text(tmp, port, backend.addr, header=f"gen-{i}"))
            result = pingapctl("reload", "-c", str(conf))
            assert result.returncode == 0, result.stderr
            time.sleep(max(0.0, 1.0 - (time.monotonic() - began)))  # pace: one a second
        load.wait_requests(load.result.ok + 200)
        result = load.stop()
    assert result.failures == [], result.summary()
    assert status(tmp)["last_reload"]["ok"] is True
    reply = request(port, path="/after")
    assert ["X-Config", "gen-20"] in reply.json()["headers"]


def test_invalid_reload_keeps_the_old_config_serving(setup) -> None:
    tmp, port, conf, backend, start, _ = setup
    start(header="good")
    with Load(port, clients=16) as load:
        load.wait_requests(100)
        conf.write_text(config_text(tmp, port, backend.addr, header="good")
                        .replace('upstream = "u"', 'upstream = "nope"\ntimeout = 1'))
        by_conf = pingapctl("reload", "-c", str(conf))
        assert by_conf.returncode == 1
        assert "locations.all.upstream" in by_conf.stderr and "nope" in by_conf.stderr
        assert "locations.all.timeout" in by_conf.stderr
        by_pid = pingapctl("reload", "--pid-file", str(tmp / "pingap.pid"))
        assert by_pid.returncode == 1
        assert "locations.all.upstream" in by_pid.stderr
        load.wait_requests(load.result.ok + 100)
        result = load.stop()
    assert result.failures == [], result.summary()
    assert ["X-Config", "good"] in request(port, path="/x").json()["headers"]
    assert status(tmp)["generation"] == 1


@pytest.mark.timeout(400)
def test_upgrades_usr2_and_pingap_style_keep_the_socket_and_every_request(
        setup, tmp_path: Path) -> None:
    tmp, port, conf, backend, start, procs = setup
    start()
    inode = listen_inode(master_pid(tmp), port)
    with Load(port, clients=64) as load:
        load.wait_requests(200)
        for _ in range(10):
            old = master_pid(tmp)
            result = pingapctl("upgrade", "--pid-file", str(tmp / "pingap.pid"))
            assert result.returncode == 0, result.stderr
            new = master_pid(tmp)
            assert new != old and gone(old)
            assert listen_inode(new, port) == inode
        for i in range(5):
            old = master_pid(tmp)
            if i % 2:  # pingap's documented order: QUIT first, then `pingap -d -u`
                os.kill(old, signal.SIGQUIT)
                launched = subprocess.run(["pingap", "-d", "-u", "-c", str(conf)],
                                          capture_output=True, text=True, timeout=60)
                assert launched.returncode == 0, launched.stderr
            else:      # or the new one waiting first
                new_proc = Process(["pingap", "-c", str(conf), "-u"],
                                   log=tmp_path / f"upgrade-{i}.log")
                procs.append(new_proc)
                os.kill(old, signal.SIGQUIT)
            new = wait_for(lambda old=old: master_pid(tmp) not in (None, old)
                           and master_pid(tmp), timeout=30, what="the -u master to take over")
            wait_for(lambda old=old: gone(old), timeout=30, what="the old master to exit")
            assert listen_inode(new, port) == inode
        load.wait_requests(load.result.ok + 200)
        result = load.stop()
    assert result.failures == [], result.summary()


def test_new_master_killed_before_ready_leaves_the_old_one_serving(setup) -> None:
    tmp, port, conf, backend, start, _ = setup
    proc = start()
    with Load(port, clients=32) as load:
        load.wait_requests(100)
        os.kill(proc.pid, signal.SIGUSR2)

        def new_master() -> psutil.Process | None:
            for child in psutil.Process(proc.pid).children():
                if "--upgrade-fd" in " ".join(child.cmdline()):
                    return child
            return None
        child = wait_for(new_master, timeout=10, interval=0.005, what="the new master")
        child.kill()
        wait_for(lambda: status(tmp).get("upgrade_failed"), timeout=20,
                 what="the old master to notice")
        load.wait_requests(load.result.ok + 200)
        result = load.stop()
    assert result.failures == [], result.summary()
    assert master_pid(tmp) == proc.pid and proc.proc.poll() is None
    assert request(port, path="/still").status == 200


def test_killed_worker_is_replaced_by_the_booted_spare(setup) -> None:
    """The replacement is the spare booted before the kill: activated, not started, which
    is what keeps the gap short (the time it took is printed, not asserted: a loaded
    machine stretches it)."""
    tmp, port, conf, backend, start, _ = setup
    start()
    wait_for(lambda: len(serving_workers(tmp)) == 2, what="two workers")
    spare = wait_for(lambda: next((w["pid"] for w in status(tmp).get("workers", [])
                                   if w["state"] == "standby"), None), what="the booted spare")
    with Load(port, clients=64) as load:
        load.wait_requests(200)
        # heartbeats carry each worker's live connections into the status file (1 s)
        victim_status = wait_for(lambda: next((w for w in serving_workers(tmp)
                                               if w["connections"] >= 8), None),
                                 what="a worker with its share of the clients")
        victim = victim_status["pid"]
        os.kill(victim, signal.SIGSTOP)  # frozen: its connection count cannot move
        in_flight_bound = client_connections(victim, port)  # one request each
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        def replaced() -> bool:
            pids = {w["pid"] for w in serving_workers(tmp)}
            return len(pids) == 2 and victim not in pids
        wait_for(replaced, timeout=5, interval=0.01, what="a replacement worker")
        took = time.monotonic() - killed_at
        print(f"replacement serving {took:.2f}s after the kill")
        assert spare in {w["pid"] for w in serving_workers(tmp)}
        failures_at_replacement = len(load.result.failures)
        load.wait_requests(load.result.ok + 300)
        result = load.stop()
    # every failure is a request that was on the killed worker's connections (clients may
    # notice the reset a little after the replacement is already serving)
    assert failures_at_replacement <= len(result.failures) <= max(in_flight_bound, 1), \
        result.summary()


def test_worker_missing_heartbeats_is_replaced(setup) -> None:
    tmp, port, conf, backend, start, _ = setup
    start(args=["--heartbeat-timeout", "2"])
    wait_for(lambda: len(serving_workers(tmp)) == 2, what="two workers")
    victim = serving_workers(tmp)[0]["pid"]
    os.kill(victim, signal.SIGSTOP)
    wait_for(lambda: gone(victim), timeout=10, what="the master to kill the silent worker")
    wait_for(lambda: len(serving_workers(tmp)) == 2
             and victim not in {w["pid"] for w in serving_workers(tmp)},
             timeout=10, what="a replacement")
    assert request(port, path="/x").status == 200


def test_worker_boot_failure_stops_the_master(tmp_path: Path, backends) -> None:
    backend = backends()
    port = free_port()
    conf = tmp_path / "pingap.toml"
    conf.write_text(config_text(tmp_path, port, backend.addr,
                                extra_server='access_log = "/proc/forbidden/a.log combined"'))
    proc = subprocess.run(["pingap", "-c", str(conf)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3
    assert "failed to boot" in proc.stderr and "/proc/forbidden" in proc.stderr


def test_term_finishes_in_flight_and_closes_listeners(setup) -> None:
    tmp, port, conf, backend, start, _ = setup
    proc = start()
    result: dict = {}
    slow = threading.Thread(target=lambda: result.update(
        reply=request(port, path="/stall?s=2", timeout=15)))
    slow.start()
    wait_for(lambda: any(r.get("target") == "/stall?s=2" for r in backend.requests()),
             what="the slow request upstream")
    os.kill(proc.pid, signal.SIGTERM)
    wait_for(lambda: not port_open(port), timeout=3, what="listeners to close")
    assert slow.is_alive()  # still in flight while nobody listens any more
    slow.join(15)
    assert result["reply"].status == 200
    assert proc.proc.wait(15) == 0


def test_sd_notify_and_socket_activation(tmp_path: Path, backends) -> None:
    backend = backends()
    port = free_port()
    conf = tmp_path / "pingap.toml"
    conf.write_text(config_text(tmp_path, port, backend.addr))
    notify_path = tmp_path / "notify.sock"
    notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_sock.bind(str(notify_path))
    notify_sock.settimeout(30)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    fd = listener.fileno()
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "LISTEN_FDS": "1"}
    log = open(tmp_path / "pingap.log", "wb")
    # the shell moves the socket to fd 3 and execs pingap with its own pid as LISTEN_PID,
    # exactly what systemd does
    script = f'exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ exec pingap -c "$0"'
    proc = subprocess.Popen(["bash", "-c", script, str(conf)], env=env, pass_fds=[fd],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def messages_until(field: str) -> list[str]:
            seen: list[str] = []
            while True:
                data = notify_sock.recv(4096).decode()
                seen.append(data)
                if field in data.split("\n"):
                    return seen
        ready = messages_until("READY=1")
        assert any(f"MAINPID={proc.pid}" in m for m in ready)
        listener.close()  # only pingap holds the socket now
        assert request(port, path="/activated").status == 200
        os.kill(proc.pid, signal.SIGHUP)
        reload_msgs = messages_until("READY=1")
        assert any("RELOADING=1" in m and "MONOTONIC_USEC=" in m for m in reload_msgs)
        # an upgrade: the new master takes over MAINPID; the old one must not say
        # STOPPING=1 (systemd would stop the service, new master included)
        os.kill(proc.pid, signal.SIGUSR2)
        upgraded = messages_until("READY=1")
        new_pid = master_pid(tmp_path)
        assert new_pid != proc.pid
        assert any(f"MAINPID={new_pid}" in m for m in upgraded)
        assert proc.wait(15) == 0  # the old master drained and exited
        notify_sock.setblocking(False)
        leftovers = []
        try:
            while True:
                leftovers.append(notify_sock.recv(4096).decode())
        except BlockingIOError:
            pass
        assert not any("STOPPING=1" in m for m in upgraded + leftovers)
        notify_sock.setblocking(True)
        assert request(port, path="/after-upgrade").status == 200
        os.kill(new_pid, signal.SIGTERM)
        assert any("STOPPING=1" in m for m in messages_until("STOPPING=1"))
        wait_for(lambda: gone(new_pid), timeout=15, what="the new master to stop")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        notify_sock.close()


def test_accepts_balance_across_workers(setup) -> None:
    tmp, port, conf, backend, start, _ = setup
    start()
    wait_for(lambda: len(serving_workers(tmp)) == 2, what="two workers")
    conns = []
    for i in range(100):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(f"GET /burst/{i} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
        conns.append(sock)
    for sock in conns:
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")

    def counts() -> list[int] | None:
        workers = serving_workers(tmp)
        got = [w["connections"] for w in workers]
        return got if len(got) == 2 and sum(got) == 100 else None
    per_worker = wait_for(counts, timeout=5, what="connection counts in the status")
    for sock in conns:
        sock.close()
    assert min(per_worker) >= 35, per_worker
    ctl = pingapctl("status", "--pid-file", str(tmp / "pingap.pid"))
    assert ctl.returncode == 0 and "connections" in ctl.stdout


def test_daemon_status_reopen_and_stop(tmp_path: Path, backends) -> None:
    backend = backends()
    port = free_port()
    conf = tmp_path / "pingap.toml"
    access = tmp_path / "access.log"
    conf.write_text(config_text(tmp_path, port, backend.addr,
                                extra_server=f'access_log = "{access} {{method}} {{uri}}"'))
    launched = subprocess.run(["pingap", "-d", "-c", str(conf), "--log",
                               str(tmp_path / "app.log")], capture_output=True, text=True,
                              timeout=60)
    assert launched.returncode == 0, launched.stderr
    pid = master_pid(tmp_path)
    try:
        assert pid and psutil.pid_exists(pid)
        assert request(port, path="/one").status == 200
        ctl = pingapctl("status", "-c", str(conf))
        assert ctl.returncode == 0
        assert f"master pid:  {pid}" in ctl.stdout and "generation:  1" in ctl.stdout
        wait_for(lambda: access.exists() and "/one" in access.read_text(), what="access log")
        access.rename(tmp_path / "access.log.1")
        assert pingapctl("reopen", "-c", str(conf)).returncode == 0
        wait_for(lambda: access.exists(), what="the access log to be reopened")
        assert request(port, path="/two").status == 200
        wait_for(lambda: "/two" in access.read_text(), what="a line in the new file")
        assert "/two" not in (tmp_path / "access.log.1").read_text()
        stopped = pingapctl("stop", "-c", str(conf))
        assert stopped.returncode == 0, stopped.stderr
        assert gone(pid)
        assert not (tmp_path / "pingap.pid").exists()
    finally:
        if pid and not gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_reload_adds_and_removes_servers(setup) -> None:
    tmp, port, conf, backend, start, _ = setup
    start()
    port2 = free_port()
    servers = f"""
[servers.s2]
addr = "127.0.0.1:{port2}"
locations = ["all"]
"""
    conf.write_text(config_text(tmp, port, backend.addr, servers=servers))
    result = pingapctl("reload", "-c", str(conf))
    assert result.returncode == 0, result.stderr
    assert request(port2, path="/new").status == 200
    wait_for(lambda: not port_open(port), timeout=15, what="the removed listener to close")


def test_autoreload_applies_edits(setup) -> None:
    tmp, port, conf, backend, start, _ = setup
    start(args=["--autoreload"])
    conf.write_text(config_text(tmp, port, backend.addr, header="edited"))
    wait_for(lambda: ["X-Config", "edited"] in request(port, path="/w").json()["headers"],
             timeout=15, what="the edit to be applied")
    conf.write_text("this is not toml = = =")
    wait_for(lambda: status(tmp).get("last_reload", {}).get("ok") is False, timeout=15,
             what="the broken edit to be rejected")
    assert ["X-Config", "edited"] in request(port, path="/w").json()["headers"]


def test_winch_stops_workers_and_hup_starts_them(setup) -> None:
    tmp, port, conf, backend, start, _ = setup
    proc = start()
    wait_for(lambda: len(serving_workers(tmp)) == 2, what="two workers")
    os.kill(proc.pid, signal.SIGWINCH)
    wait_for(lambda: not status(tmp).get("workers"), timeout=15, what="workers to stop")
    assert proc.proc.poll() is None
    os.kill(proc.pid, signal.SIGHUP)
    wait_for(lambda: len(serving_workers(tmp)) == 2, timeout=15, what="workers again")
    assert request(port, path="/back").status == 200


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    pingap_bin = subprocess.run(["sh", "-c", "command -v pingap"], capture_output=True,
                                text=True).stdout.strip()
    ctl_bin = pingap_bin.replace("/pingap", "/pingapctl")
    unit = (root / "systemd" / "pingap.service").read_text()
    unit = unit.replace("/usr/local/bin/pingapctl", ctl_bin).replace(
        "/usr/local/bin/pingap", pingap_bin)
    (tmp_path / "pingap.service").write_text(unit)
    (tmp_path / "pingap.socket").write_text((root / "systemd" / "pingap.socket").read_text())
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "pingap.service"),
                             str(tmp_path / "pingap.socket")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sys.executable  # the units run the same interpreter's entry points


@pytest.mark.skipif(os.getuid() != 0, reason="switching users needs root")
def test_workers_drop_privileges_to_basic_user(setup) -> None:
    import pwd
    tmp, port, conf, backend, start, _ = setup
    start(extra_basic='user = "nobody"\ngroup = "nogroup"')
    wait_for(lambda: len(serving_workers(tmp)) == 2, what="two workers")
    nobody = pwd.getpwnam("nobody").pw_uid
    master = psutil.Process(master_pid(tmp))
    assert master.uids().real == os.getuid()
    for worker in serving_workers(tmp):
        uids = psutil.Process(worker["pid"]).uids()
        assert (uids.real, uids.effective) == (nobody, nobody)
    assert request(port, path="/as-nobody").status == 200


def test_crashed_worker_is_replaced_even_after_an_unapplied_edit(setup) -> None:
    tmp, port, conf, backend, start, _ = setup
    start(header="applied")
    wait_for(lambda: len(serving_workers(tmp)) == 2, what="two workers")
    conf.write_text("broken = = toml")  # edited on disk, never reloaded
    victim = serving_workers(tmp)[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(serving_workers(tmp)) == 2
             and victim not in {w["pid"] for w in serving_workers(tmp)},
             timeout=10, what="a replacement on the validated config")
    for _ in range(4):
        assert ["X-Config", "applied"] in request(port, path="/r").json()["headers"]


def test_a_killed_masters_config_copies_are_removed_by_the_next_master(
        tmp_path: Path, backends, pingap) -> None:
    """The master keeps the config its workers load in ``$TMPDIR/pingap-config-*``. One
    killed with SIGKILL cannot remove it; the next master to start removes it, and leaves
    alone the copies of a master still running."""
    backend = backends()
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}

    def start(name: str) -> PingapProcess:
        work = tmp_path / name
        work.mkdir()
        port = free_port()
        proc = pingap(config_text(work, port, backend.addr, threads=1), port=port,
                      name=f"{name}.toml", env=env)
        assert request(port, path="/").status == 200
        return proc

    def copies() -> set[str]:
        return {p.name for p in tmpdir.iterdir()}

    killed = start("killed")
    [abandoned] = copies()
    os.killpg(killed.pid, signal.SIGKILL)
    killed.stop()
    assert copies() == {abandoned}  # nothing could clean up

    running = start("running")
    [kept] = copies()
    assert kept != abandoned  # the abandoned copy is gone
    second = start("second")
    assert kept in copies() and len(copies()) == 2  # a running master's copy stays
    assert second.stop() == 0 and running.stop() == 0
    assert copies() == set()
