"""A real etcd (Debian ``etcd-server``) on free loopback ports with a temporary data dir,
stoppable and restartable on the same ports with its data."""

from __future__ import annotations

from pathlib import Path

from tests.support.proc import Process, free_port, port_open, wait_for


class EtcdServer:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.peer_port = free_port()
        self.data = tmp / f"etcd-{self.port}"
        self.proc: Process | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, prefix: str = "pingap", query: str = "timeout=2s&connect_timeout=500ms") -> str:
        return f"etcd://{self.endpoint}/{prefix}" + (f"?{query}" if query else "")

    def start(self) -> None:
        client = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = Process(["etcd", "--name", "test", "--data-dir", str(self.data),
                             "--listen-client-urls", client, "--advertise-client-urls", client,
                             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                             "--initial-cluster", f"test={peer}"],
                            log=self.tmp / f"etcd-{self.port}.log")
        wait_for(lambda: port_open(self.port), what="etcd")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.stop()
        self.proc = None
        wait_for(lambda: not port_open(self.port), what="etcd to stop")
