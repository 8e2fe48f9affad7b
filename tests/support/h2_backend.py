"""A real HTTP/2 test backend (h2 on stdlib sockets, threads), plus test certificates.

Run as ``python -m tests.support.h2_backend --port P [--name N] [--record FILE]
[--tls CERT KEY] [--alpn h2,http/1.1] [--max-streams N]``. With ``--tls`` it speaks TLS
and serves HTTP/2 when ALPN picks ``h2``, else HTTP/1.1 (``tests.support.backend``);
without, it serves h2c with prior knowledge, or HTTP/1.1 when the preface is absent.
Each connection and each request is appended to the record file as one JSON line.

HTTP/2 endpoints:
  /big?n=BYTES             a deterministic body of n bytes, sent as flow control allows;
                           each time the send window closes a {"event": "blocked"} line
                           records how many body bytes had been sent
  /trailers                body "hello" and the trailer x-checksum: abc123
  /upload                  {"length", "sha256", "trailers"} of the request body
  /barrier?name=X&n=N      answer only once N requests wait on barrier X (500 after 10 s)
  /hold?name=X             answered by /goaway's release=X (500 after 10 s)
  /goaway[?last=prev][&release=X]
                           GOAWAY: by default answer, then GOAWAY naming this stream as the
                           last; with last=prev, GOAWAY naming the stream before it and no
                           answer. With release=X, the held stream's whole answer is sent
                           in the same write as the GOAWAY (so the client reads them
                           together). The connection closes once no stream is left.
  /refuse                  RST_STREAM(REFUSED_STREAM)
  /status?code=N           that status
  anything else            JSON echo: backend, connection id, method, path, authority,
                           scheme, headers, body length/sha256, trailers
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import socket
import ssl
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes

from tests.support.backend import Backend as H1Backend
from tests.support.backend import pattern

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
WAIT = 10.0

_connection_ids = itertools.count(1)
_barriers: dict[str, threading.Barrier] = {}
_holds: dict[str, threading.Event] = {}
_registry_lock = threading.Lock()


def _barrier(name: str, parties: int) -> threading.Barrier:
    with _registry_lock:
        return _barriers.setdefault(name, threading.Barrier(parties))


def _hold(name: str) -> threading.Event:
    with _registry_lock:
        return _holds.setdefault(name, threading.Event())


class Recorder:
    def __init__(self, name: str, path: str | None) -> None:
        self.name = name
        self.path = path
        self.lock = threading.Lock()

    def log(self, entry: dict[str, Any]) -> None:
        if self.path:
            with self.lock, open(self.path, "a") as f:
                f.write(json.dumps({"backend": self.name, **entry}) + "\n")


class Stream:
    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.body = hashlib.sha256()
        self.length = 0
        self.trailers: list[tuple[bytes, bytes]] = []
        self.reset = False


class H2ServerConnection:
    """One HTTP/2 connection: a reader thread, and one responder thread per request."""

    def __init__(self, sock: socket.socket, recorder: Recorder, max_streams: int | None,
                 protocol: str) -> None:
        self.sock = sock
        self.recorder = recorder
        self.id = next(_connection_ids)
        self.protocol = protocol
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.cond = threading.Condition()  # guards h2 and socket writes; notified on changes
        self.streams: dict[int, Stream] = {}
        self.active = 0
        self.goaway_sent = False
        self.closed = False
        self.held: dict[str, int] = {}   # /hold name -> its stream, on this connection
        self.max_streams = max_streams

    # --- plumbing -----------------------------------------------------------------------

    def flush(self) -> None:
        """Send what h2 queued; the caller holds ``cond``."""
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def run(self) -> None:
        self.recorder.log({"event": "connection", "connection": self.id,
                           "protocol": self.protocol})
        with self.cond:
            self.h2.initiate_connection()
            if self.max_streams:
                self.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
            self.flush()
        try:
            while not self.closed:
                data = self.sock.recv(65536)
                if not data:
                    break
                with self.cond:
                    for event in self.h2.receive_data(data):
                        self.handle(event)
                    self.flush()
                    self.cond.notify_all()
        except (OSError, H2Error):
            pass
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()
            self.sock.close()

    def handle(self, event: object) -> None:
        if isinstance(event, RequestReceived):
            self.streams[event.stream_id] = Stream(list(event.headers))
            self.active += 1
        elif isinstance(event, DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.body.update(event.data)
                stream.length += len(event.data)
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, TrailersReceived):
            self.streams[event.stream_id].trailers = list(event.headers)
        elif isinstance(event, StreamEnded):
            threading.Thread(target=self.respond, args=(event.stream_id,),
                             daemon=True).start()
        elif isinstance(event, StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.reset = True
        elif isinstance(event, ConnectionTerminated):
            self.closed = True
        elif isinstance(event, (WindowUpdated, RemoteSettingsChanged)):
            pass  # the reader's notify_all wakes the senders

    def stream_done(self) -> None:
        """A responder finished (cond held): after a GOAWAY, the last one closes."""
        self.active -= 1
        if self.goaway_sent and self.active <= 0:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- responses ----------------------------------------------------------------------

    def send_headers(self, stream_id: int, status: int,
                     headers: list[tuple[bytes, bytes]] | None = None,
                     end_stream: bool = False) -> None:
        with self.cond:
            self.h2.send_headers(stream_id, [(b":status", str(status).encode()),
                                             *(headers or [])], end_stream=end_stream)
            self.flush()

    def send_body(self, stream_id: int, data: bytes, end_stream: bool = True) -> None:
        """Send ``data`` as the peer's flow-control windows allow."""
        sent = 0
        with self.cond:
            while sent < len(data):
                stream = self.streams[stream_id]
                if stream.reset or self.closed:
                    return
                window = min(self.h2.local_flow_control_window(stream_id),
                             self.h2.max_outbound_frame_size, len(data) - sent)
                if window <= 0:
                    self.recorder.log({"event": "blocked", "connection": self.id,
                                       "stream": stream_id, "sent": sent})
                    if not self.cond.wait(WAIT):
                        return
                    continue
                self.h2.send_data(stream_id, data[sent:sent + window])
                sent += window
                self.flush()
            if end_stream:
                self.h2.end_stream(stream_id)
                self.flush()

    def respond(self, stream_id: int) -> None:
        try:
            self._respond(stream_id)
        except (OSError, H2Error):
            pass
        finally:
            with self.cond:
                self.stream_done()

    def _respond(self, stream_id: int) -> None:
        stream = self.streams[stream_id]
        head = {k: v for k, v in stream.headers if k.startswith(b":")}
        target = head.get(b":path", b"/").decode("latin-1")
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        info = {"connection": self.id, "protocol": self.protocol, "stream": stream_id,
                "method": head.get(b":method", b"").decode(),
                "path": target, "authority": head.get(b":authority", b"").decode("latin-1"),
                "scheme": head.get(b":scheme", b"").decode(),
                "headers": [[k.decode("latin-1"), v.decode("latin-1")]
                            for k, v in stream.headers if not k.startswith(b":")],
                "length": stream.length, "sha256": stream.body.hexdigest(),
                "trailers": [[k.decode("latin-1"), v.decode("latin-1")]
                             for k, v in stream.trailers]}
        self.recorder.log({"event": "request", **info})
        path = url.path
        if path == "/big":
            n = int(query.get("n", "0"))
            self.send_headers(stream_id, 200, [(b"content-type", b"application/octet-stream")])
            self.send_body(stream_id, pattern(n))
            return
        if path == "/trailers":
            self.send_headers(stream_id, 200)
            self.send_body(stream_id, b"hello", end_stream=False)
            with self.cond:
                self.h2.send_headers(stream_id, [(b"x-checksum", b"abc123")], end_stream=True)
                self.flush()
            return
        if path == "/refuse":
            with self.cond:
                self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
                self.flush()
            return
        if path == "/barrier":
            try:
                _barrier(query["name"], int(query["n"])).wait(WAIT)
            except threading.BrokenBarrierError:
                self.answer(stream_id, 500, {"error": "barrier broken"})
                return
        if path == "/hold":
            with self.cond:
                self.held[query["name"]] = stream_id
                self.cond.notify_all()
            if not _hold(query["name"]).wait(WAIT):
                self.answer(stream_id, 500, {"error": "never released"})
            return  # /goaway answered it
        if path == "/goaway":
            if query.get("last") != "prev":
                self.answer(stream_id, 200, info)
            last = stream_id - 2 if query.get("last") == "prev" else stream_id
            with self.cond:
                if "release" in query:  # the held request's thread may not have run yet
                    self.cond.wait_for(lambda: query["release"] in self.held, WAIT)
                self.h2.close_connection(last_stream_id=max(last, 0))
                # h2 closes its state machine on a sent GOAWAY; the streams it let live
                # still need to answer
                self.h2.state_machine.state = ConnectionState.SERVER_OPEN
                held = self.held.get(query.get("release", ""))
                if held is not None:
                    body = json.dumps({"held": held}).encode()
                    self.h2.send_headers(held, [(b":status", b"200"),
                                                (b"content-length", str(len(body)).encode())])
                    self.h2.send_data(held, body, end_stream=True)
                self.flush()  # GOAWAY and the held answer in one write
                self.goaway_sent = True
            if "release" in query:
                _hold(query["release"]).set()
            return
        if path == "/upload":
            info = {"length": info["length"], "sha256": info["sha256"],
                    "trailers": info["trailers"]}
        status = int(query.get("code", "200")) if path == "/status" else 200
        self.answer(stream_id, status, info)

    def answer(self, stream_id: int, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_headers(stream_id, status, [(b"content-type", b"application/json"),
                                              (b"content-length", str(len(body)).encode()),
                                              (b"x-backend", self.recorder.name.encode())])
        self.send_body(stream_id, body)


def serve(client: socket.socket, recorder: Recorder, context: ssl.SSLContext | None,
          max_streams: int | None) -> None:
    try:
        client.settimeout(30)
        if context is not None:
            client = context.wrap_socket(client, server_side=True)
            is_h2 = client.selected_alpn_protocol() == "h2"
            protocol = "h2" if is_h2 else "http/1.1"
        else:
            head = b""
            while len(head) < len(PREFACE) and PREFACE.startswith(head):
                more = client.recv(len(PREFACE), socket.MSG_PEEK)
                if len(more) == len(head):
                    break
                head = more
            if not head:  # connected and closed (a readiness probe): not a client
                client.close()
                return
            is_h2 = head == PREFACE
            protocol = "h2c" if is_h2 else "http/1.1"
        client.settimeout(None)
    except (OSError, ValueError):
        client.close()
        return
    if is_h2:
        H2ServerConnection(client, recorder, max_streams, protocol).run()
    else:
        recorder.log({"event": "connection", "connection": next(_connection_ids),
                      "protocol": protocol})
        H1Backend(recorder.name, recorder.path).serve(client)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="h2backend")
    parser.add_argument("--record", default=None)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--alpn", default="h2,http/1.1")
    parser.add_argument("--max-streams", type=int, default=None)
    args = parser.parse_args()
    recorder = Recorder(args.name, args.record)
    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*args.tls)
        context.set_alpn_protocols(args.alpn.split(","))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(512)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, recorder, context, args.max_streams),
                         daemon=True).start()


# --- test certificates ---------------------------------------------------------------------


def make_certificates(directory: Path) -> dict[str, Path]:
    """A test CA, a leaf it signed for ``localhost``/127.0.0.1, and a self-signed leaf.

    Returns the PEM paths: ``ca``, ``cert``/``key`` (CA-signed), ``self_cert``/``self_key``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("pingap test CA"))
          .issuer_name(name("pingap test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start)
          .not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))

    import ipaddress
    sans = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])

    def leaf(issuer_key: ec.EllipticCurvePrivateKey | None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name("localhost"))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end)
                   .add_extension(sans, critical=False)
                   .add_extension(x509.ExtendedKeyUsage(
                       [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        if issuer_key is None:
            cert = builder.issuer_name(name("localhost")).sign(key, hashes.SHA256())
        else:
            cert = (builder.issuer_name(ca.subject)
                    .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                        ca_key.public_key()), critical=False)
                    .sign(issuer_key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)

    paths = {name_: directory / f"{name_}.pem"
             for name_ in ("ca", "cert", "key", "self_cert", "self_key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert, key = leaf(ca_key)
    paths["cert"].write_bytes(cert)
    paths["key"].write_bytes(key)
    cert, key = leaf(None)
    paths["self_cert"].write_bytes(cert)
    paths["self_key"].write_bytes(key)
    return paths


if __name__ == "__main__":
    main()
