"""The one factory for listening sockets: adopt an inherited fd, or bind.

Listeners are keyed by their normalised bind address (``"127.0.0.1:6188"``,
``"[::]:443"``), so a socket handed over by systemd or by a previous master is matched
to the server that names the same address, and a reload keeps the very same socket
object (and its accept queue) for every address that did not change.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

BACKLOG = 2048
SD_LISTEN_FDS_START = 3


def address_key(host: str, port: int) -> str:
    """Normalised key of a bind address: numeric host, IPv6 in brackets."""
    host = host[1:-1] if host.startswith("[") else host
    if host in ("", "*"):
        host = "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_NUMERICSERV)
        sockaddr = infos[0][4]
        host = str(sockaddr[0])
    except socket.gaierror:
        pass
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def socket_key(sock: socket.socket) -> str:
    name = sock.getsockname()
    return address_key(name[0], name[1])


def bind(key: str, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on ``key`` (``host:port``), inheritable by workers."""
    host, _, port = key.rpartition(":")
    host = host[1:-1] if host.startswith("[") else host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, int(port)))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def systemd_sockets(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """Sockets passed by systemd socket activation (``LISTEN_PID``/``LISTEN_FDS``)."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(env.get("LISTEN_FDS", "0") or 0)
    socks = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(True)
        socks.append(sock)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return socks


@dataclass
class ListenerSet:
    """Every listening socket the master holds, by address key."""

    sockets: dict[str, socket.socket] = field(default_factory=dict)

    def adopt(self, socks: list[socket.socket]) -> None:
        for sock in socks:
            self.sockets[socket_key(sock)] = sock

    def ensure(self, keys: list[str], reuse_port: dict[str, bool]) -> list[str]:
        """Bind every key not held yet; returns the keys bound now. OSError on failure."""
        bound: list[str] = []
        try:
            for key in keys:
                if key not in self.sockets:
                    self.sockets[key] = bind(key, reuse_port=reuse_port.get(key, False))
                    bound.append(key)
        except OSError:
            for key in bound:
                self.sockets.pop(key).close()
            raise
        return bound

    def close(self, keys: list[str] | None = None) -> None:
        for key in list(self.sockets) if keys is None else keys:
            sock = self.sockets.pop(key, None)
            if sock is not None:
                sock.close()
