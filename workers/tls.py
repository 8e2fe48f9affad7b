"""TLS termination for servers with ``global_certificates``: one SSL context per
certificate, picked per handshake by SNI (``CertificateStore.select``).

``ssl`` loads keys from files only, so each certificate and key is written to an
anonymous in-memory file (``memfd_create``) that ``ssl`` opens by its ``/proc/self/fd``
path, closed once loaded: a private key never reaches a filesystem, and a worker needs no
writable ``$TMPDIR`` (nor leaves anything there). ``install`` swaps in a renewed
certificate's context for the next handshakes (ACME); a handshake that already picked a
context keeps it. The handshake runs with its own timeout before any HTTP is read.
"""

from __future__ import annotations

import os
import socket
import ssl
import time

import gevent

from pingap.runtime import CertificateStore, ServerRuntime
from pingap.tls import CertificateEntry

HANDSHAKE_TIMEOUT = 10.0


class TLSAcceptor:
    """Wraps accepted sockets of one server in TLS."""

    def __init__(self, store: CertificateStore, server: ServerRuntime) -> None:
        self.store = store
        self.server = server
        self.contexts = {entry.name: self._context(entry) for entry in store.entries}
        default = store.default or (store.entries[0] if store.entries else None)
        self.base = self._context(default) if default is not None else self._bare()
        self.base.sni_callback = self._select

    def _bare(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tune(ctx)
        return ctx

    def _tune(self, ctx: ssl.SSLContext) -> None:
        server = self.server
        if server.tls_min_version:
            ctx.minimum_version = ssl.TLSVersion[server.tls_min_version]
        if server.tls_max_version:
            ctx.maximum_version = ssl.TLSVersion[server.tls_max_version]
        if server.tls_cipher_list:
            ctx.set_ciphers(server.tls_cipher_list)
        ctx.set_alpn_protocols(["h2", "http/1.1"] if server.enabled_h2 else ["http/1.1"])

    def _context(self, entry: CertificateEntry) -> ssl.SSLContext:
        ctx = self._bare()
        fds: list[int] = []
        try:
            for name, data in (("cert", entry.cert_pem), ("key", entry.key_pem)):
                fd = os.memfd_create(f"pingap-tls-{name}", os.MFD_CLOEXEC)
                fds.append(fd)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
        finally:
            for fd in fds:
                os.close(fd)
        return ctx

    def install(self, entry: CertificateEntry) -> None:
        """Serve ``entry`` (new or renewed) from the next handshake on. Call before the
        store learns the entry, so a name the store selects always has a context."""
        self.contexts[entry.name] = self._context(entry)

    def _select(self, sock: ssl.SSLObject, server_name: str | None,
                initial: ssl.SSLContext) -> int | None:
        entry = self.store.select(server_name)
        context = self.contexts.get(entry.name) if entry is not None else None
        if context is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sock.context = context
        return None

    def wrap(self, client: socket.socket) -> tuple[ssl.SSLSocket, float]:
        """The handshaken TLS socket and the handshake's duration; OSError on failure."""
        started = time.monotonic()
        tls = self.base.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        with gevent.Timeout(HANDSHAKE_TIMEOUT, TimeoutError("TLS handshake timed out")):
            tls.do_handshake()
        return tls, time.monotonic() - started
