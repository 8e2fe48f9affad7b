"""The one factory for listening sockets: adopt an inherited fd, or bind.

Listeners are keyed by their normalised bind address (``"127.0.0.1:6188"``,
``"[::]:443"``), so a socket handed over by systemd or by a previous master is matched
to the server that names the same address, and a reload keeps the very same socket
object (and its accept queue) for every address that did not change.

On a stop no connection already in an accept queue may be reset: closing the last copy
of a listener resets whatever is still queued. So before the workers drain, the master
makes each listener drop new handshakes (``refuse_new_connections``: a classic BPF
socket filter that drops pure SYNs and lets everything else through); the workers then
serve what is queued and close their copies (``workers.worker.Worker._take_queue``). A
client that connects after that gets no answer to its SYN, then - once the last copy
is closed - a refusal, never a reset of a connection it thought established.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
from dataclasses import dataclass, field

from pingap.headers import split_host_port, unbracket

log = logging.getLogger("pingap.master")

BACKLOG = 2048
SD_LISTEN_FDS_START = 3


def address_key(host: str, port: int) -> str:
    """Normalised key of a bind address: numeric host, IPv6 in brackets."""
    host = unbracket(host)
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
    host, port = split_host_port(key)
    host = unbracket(host)
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


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)  # Linux
# A socket filter on a TCP socket sees the TCP header at offset 0: flags are byte 13.
# Drop a segment whose SYN is set and ACK is not (a new handshake); pass the rest.
_DROP_SYN = (
    (0x30, 0, 0, 13),          # ldb [13]
    (0x54, 0, 0, 0x12),        # and #(SYN|ACK)
    (0x15, 0, 1, 0x02),        # jeq #SYN: next, else skip one
    (0x06, 0, 0, 0),           # ret #0: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: pass whole
)


def refuse_new_connections(sock: socket.socket) -> bool:
    """Make a listener drop new handshakes; its accept queue stays as it is. False where
    the system has no socket filters (the queue is then reset as before)."""
    program = (_SockFilter * len(_DROP_SYN))(*(_SockFilter(*op) for op in _DROP_SYN))
    fprog = _SockFprog(len(_DROP_SYN), ctypes.cast(program, ctypes.POINTER(_SockFilter)))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER,
                        ctypes.string_at(ctypes.addressof(fprog), ctypes.sizeof(fprog)))
    except OSError as exc:
        log.warning("cannot make %s refuse new connections: %s", socket_key(sock), exc)
        return False
    return True


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

    def refuse_new_connections(self) -> None:
        """Stopping: every listener drops new handshakes, keeping what it queued."""
        for sock in self.sockets.values():
            refuse_new_connections(sock)

    def close(self, keys: list[str] | None = None) -> None:
        for key in list(self.sockets) if keys is None else keys:
            sock = self.sockets.pop(key, None)
            if sock is not None:
                sock.close()
