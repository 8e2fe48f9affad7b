"""A real redis-server on a loopback port, stoppable and restartable on the same port."""

from __future__ import annotations

from pathlib import Path

from tests.support.proc import Process, free_port, port_open, wait_for


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.proc: Process | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = Process(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
                            log=self.tmp / f"redis-{self.port}.log")
        wait_for(lambda: port_open(self.port), what="redis-server")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.stop()
        self.proc = None
        wait_for(lambda: not port_open(self.port), what="redis-server to stop")
