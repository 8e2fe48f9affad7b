"""Fixtures that start real backends and the real pingap on loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.proc import BackendProcess, Origin, PingapProcess, free_port
from tests.support.redis import RedisServer


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[Callable[..., BackendProcess]]:
    started: list[BackendProcess] = []

    def start(name: str = "backend", port: int | None = None) -> BackendProcess:
        backend = BackendProcess(tmp_path, name, port)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.stop()


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    """tests/support/content_backend.py, recording what reaches it."""
    server = Origin(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def pingap(tmp_path: Path) -> Iterator[Callable[..., PingapProcess]]:
    started: list[PingapProcess] = []

    def start(config_text: str, *, port: int, args: list[str] | None = None,
              name: str = "pingap.toml", ready: bool = True,
              env: dict[str, str] | None = None) -> PingapProcess:
        config = tmp_path / name
        config.write_text(config_text)
        proc = PingapProcess(config, port, tmp_path, args=args, ready=ready, env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Start a real redis-server on demand; stopped at teardown, pass or fail."""
    started: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer(tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def port() -> int:
    return free_port()
