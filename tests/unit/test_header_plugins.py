"""request_id, response_headers, cors and accept_encoding, driven through the session:
what reaches the upstream, what the client gets, and the `-t` reports."""

from __future__ import annotations

import os
import re
import time
import uuid

import pytest

from pingap.actions import Forward, Respond
from pingap.config import load_config_text
from pingap.context import ConnectionInfo
from pingap.errors import ConfigError
from pingap.events import RequestReceived
from pingap.plugins.headers import accepts
from pingap.runtime import Runtime, build_runtime
from pingap.session import ProxySession

Headers = list[tuple[bytes, bytes]]


def runtime_of(plugins: str, names: list[str]) -> Runtime:
    listed = ", ".join(f'"{n}"' for n in names)
    return build_runtime(load_config_text(
        '[servers.web]\naddr = "127.0.0.1:8080"\nlocations = ["lo"]\n'
        f'[locations.lo]\nupstream = "up"\nplugins = [{listed}]\n'
        + plugins + '\n[upstreams.up]\naddrs = ["127.0.0.1:9000"]\n'))


def session(rt: Runtime, headers: Headers | None = None, *, method: bytes = b"GET",
            path: bytes = b"/") -> ProxySession:
    req = RequestReceived(method=method, target=path, headers=[(b"Host", b"h"), *(headers or [])],
                          http_version=b"1.1", keep_alive=True, expect_continue=False,
                          content_length=None, chunked=False, host=b"h", path=path, query=b"")
    conn = ConnectionInfo(connection_id=1, remote_addr="10.0.0.1", remote_port=1,
                          server_addr="127.0.0.1", server_port=8080, accepted_at=0.0)
    return ProxySession(rt, rt.servers["web"], conn, req, now=1.0, wall=1.0)


def values(headers: Headers, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name.lower()]


def problems_of(plugins: str, names: list[str]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        runtime_of(plugins, names)
    return {p.key: p.message for p in caught.value.problems}


# --- request_id --------------------------------------------------------------------------

UUID7 = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_request_id_uuid7_reaches_upstream_response_and_context() -> None:
    rt = runtime_of('[plugins.rid]\ncategory = "request_id"\n', ["rid"])
    s = session(rt)
    assert isinstance(s.route(), Forward)
    _, _, up = s.upstream_request()
    [sent] = values(up, b"x-request-id")
    assert UUID7.match(sent)
    assert s.ctx.request_id == sent.decode()
    out = s.response_headers(200, [(b"Content-Length", b"0")])
    assert values(out, b"x-request-id") == [sent]
    other = session(rt)
    other.route()
    assert other.ctx.request_id != s.ctx.request_id


def test_uuid7_is_a_version_7_uuid_of_now_and_never_repeats() -> None:
    from pingap.plugins.headers import uuid7

    before = time.time_ns() // 1_000_000
    ids = [uuid7() for _ in range(2000)]  # past several refills of the random buffer
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    assert len({i[14:] for i in ids}) == len(ids)  # the random part alone never repeats
    for text in ids:
        value = uuid.UUID(text)
        assert (value.version, value.variant) == (7, uuid.RFC_4122)
        assert str(value) == text
        assert before <= value.int >> 80 <= after


def test_uuid7_in_a_forked_child_does_not_repeat_the_parents_random_bits() -> None:
    from pingap.plugins.headers import uuid7

    uuid7()  # the parent has random bytes buffered
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, " ".join(uuid7() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    mine = [uuid7() for _ in range(5)]
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        theirs = pipe.read().decode().split()
    assert len(theirs) == 5
    assert not {t[14:] for t in theirs} & {m[14:] for m in mine}


def test_request_id_nanoid_size_and_header_name() -> None:
    rt = runtime_of('[plugins.rid]\ncategory = "request_id"\nalgorithm = "nanoid"\nsize = 12\n'
                    'header_name = "X-Trace-Id"\n', ["rid"])
    s = session(rt)
    s.route()
    _, _, up = s.upstream_request()
    [sent] = values(up, b"x-trace-id")
    assert re.fullmatch(rb"[A-Za-z0-9_-]{12}", sent)
    assert values(up, b"x-request-id") == []
    # as pingap, the response always carries it as X-Request-Id
    assert values(s.response_headers(200, []), b"x-request-id") == [sent]


def test_request_id_incoming_id_is_kept() -> None:
    rt = runtime_of('[plugins.rid]\ncategory = "request_id"\n', ["rid"])
    s = session(rt, [(b"X-Request-Id", b"abc-123")])
    s.route()
    _, _, up = s.upstream_request()
    assert values(up, b"x-request-id") == [b"abc-123"]
    assert s.ctx.request_id == "abc-123"


def test_builtin_request_id_and_bad_options() -> None:
    rt = runtime_of("", ["pingap:requestId"])
    s = session(rt)
    s.route()
    assert s.ctx.request_id and UUID7.match(s.ctx.request_id.encode())
    problems = problems_of('[plugins.rid]\ncategory = "request_id"\nheader_name = "Bad Name"\n'
                           'size = 0\n', ["rid"])
    assert "plugins.rid.header_name" in problems


# --- response_headers --------------------------------------------------------------------

def test_response_headers_without_variables_give_every_response_the_same_edit() -> None:
    """Static set rules are worked out once at load; each response still gets its own
    edit (a later rule for a name winning), and editing one response's headers does not
    reach the next."""
    rt = runtime_of('[plugins.resp]\ncategory = "response_headers"\n'
                    'set_headers = ["X-A: 1", "X-B: 2", "x-a: 3"]\n'
                    'remove_headers = ["Server"]\n', ["resp"])
    outs = []
    for _ in range(2):
        s = session(rt)
        s.route()
        out = s.response_headers(200, [(b"Server", b"up"), (b"X-A", b"upstream"),
                                       (b"Content-Length", b"0")])
        outs.append(out)
        assert [(n.lower(), v) for n, v in out if n.lower() in (b"x-a", b"x-b", b"server")] \
            == [(b"x-b", b"2"), (b"x-a", b"3")]
        out.append((b"X-A", b"added later"))
    assert outs[0] is not outs[1]
    assert values(outs[1], b"x-a") == [b"3", b"added later"]


RESP = """
[plugins.resp]
category = "response_headers"
add_headers = ["X-Added: 1", "X-Removed: gone"]
remove_headers = ["Server", "X-Removed"]
set_headers = ["X-Frame-Options: DENY", "X-Client: $client_ip"]
set_headers_not_exists = ["Cache-Control: no-cache", "X-Absent: yes"]
rename_headers = ["X-Internal-Trace: X-Trace-Id"]
"""


def test_response_headers_operations_in_pingap_order() -> None:
    s = session(runtime_of(RESP, ["resp"]))
    s.route()
    out = s.response_headers(200, [(b"Server", b"up"), (b"X-Frame-Options", b"SAMEORIGIN"),
                                   (b"Cache-Control", b"max-age=1"),
                                   (b"X-Internal-Trace", b"t1"), (b"X-Added", b"0")])
    assert values(out, b"server") == []
    assert values(out, b"x-added") == [b"0", b"1"]
    assert values(out, b"x-removed") == []              # added, then removed
    assert values(out, b"x-frame-options") == [b"DENY"]
    assert values(out, b"x-client") == [b"10.0.0.1"]
    assert values(out, b"cache-control") == [b"max-age=1"]
    assert values(out, b"x-absent") == [b"yes"]
    assert values(out, b"x-internal-trace") == [] and values(out, b"x-trace-id") == [b"t1"]


def test_response_headers_upstream_mode_runs_before_response_plugins() -> None:
    rt = runtime_of("""
[plugins.up]
category = "response_headers"
mode = "upstream"
set_headers = ["X-Step: upstream"]
[plugins.down]
category = "response_headers"
rename_headers = ["X-Step: X-Seen"]
""", ["down", "up"])
    s = session(rt)
    s.route()
    out = s.response_headers(200, [])
    assert values(out, b"x-seen") == [b"upstream"]


def test_response_headers_echo_request_id_doc_example() -> None:
    rt = runtime_of('[plugins.rid]\ncategory = "request_id"\n'
                    '[plugins.echoId]\ncategory = "response_headers"\n'
                    'set_headers = ["X-Request-Id: $http_x_request_id"]\n', ["rid", "echoId"])
    s = session(rt)
    s.route()
    assert values(s.response_headers(200, []), b"x-request-id") == [s.ctx.request_id.encode()]


def test_response_headers_bad_entries_reported_with_key() -> None:
    problems = problems_of('[plugins.resp]\ncategory = "response_headers"\n'
                           'set_headers = ["no-colon"]\nremove_headers = ["bad name"]\n'
                           'rename_headers = ["X-A"]\n', ["resp"])
    assert set(problems) == {"plugins.resp.set_headers[0]", "plugins.resp.remove_headers[0]",
                             "plugins.resp.rename_headers[0]"}


# --- cors --------------------------------------------------------------------------------

CORS = """
[plugins.cors]
category = "cors"
path = "^/api/"
allow_origin = "https://app.example.com, https://admin.example.com"
allow_methods = "GET, POST"
allow_headers = "Content-Type"
expose_headers = "X-Request-Id"
allow_credentials = true
max_age = "24h"
"""


def test_cors_preflight_from_a_listed_origin() -> None:
    s = session(runtime_of(CORS, ["cors"]), [(b"Origin", b"https://app.example.com"),
                                             (b"Access-Control-Request-Method", b"POST")],
                method=b"OPTIONS", path=b"/api/users")
    answer = s.route()
    assert isinstance(answer, Respond) and answer.status == 204 and answer.body == b""
    h = dict(answer.headers)
    assert h[b"Access-Control-Allow-Origin"] == b"https://app.example.com"
    assert h[b"Access-Control-Allow-Methods"] == b"GET, POST"
    assert h[b"Access-Control-Allow-Headers"] == b"Content-Type"
    assert h[b"Access-Control-Allow-Credentials"] == b"true"
    assert h[b"Access-Control-Max-Age"] == b"86400"
    assert h[b"Vary"] == b"Origin"
    assert b"Content-Length" not in h  # a 204 has no body length


def test_cors_non_listed_origin_is_denied() -> None:
    rt = runtime_of(CORS, ["cors"])
    evil = [(b"Origin", b"https://evil.example.net")]
    answer = session(rt, evil, method=b"OPTIONS", path=b"/api/users").route()
    assert isinstance(answer, Respond) and answer.status == 403
    assert not values(answer.headers, b"access-control-allow-origin")
    s = session(rt, evil, path=b"/api/users")
    assert isinstance(s.route(), Forward)
    out = s.response_headers(200, [])
    assert not [n for n, _ in out if n.lower().startswith(b"access-control-")]


def test_cors_actual_response_and_path_filter() -> None:
    rt = runtime_of(CORS, ["cors"])
    s = session(rt, [(b"Origin", b"https://admin.example.com")], path=b"/api/x")
    s.route()
    out = s.response_headers(200, [(b"Vary", b"Accept-Encoding")])
    assert values(out, b"access-control-allow-origin") == [b"https://admin.example.com"]
    assert values(out, b"access-control-expose-headers") == [b"X-Request-Id"]
    assert values(out, b"vary") == [b"Accept-Encoding", b"Origin"]
    # outside `path`, and without Origin: untouched
    s = session(rt, [(b"Origin", b"https://admin.example.com")], path=b"/other")
    assert isinstance(s.route(), Forward)
    assert values(s.response_headers(200, []), b"access-control-allow-origin") == []
    s = session(rt, path=b"/api/x")
    s.route()
    assert values(s.response_headers(200, []), b"access-control-allow-origin") == []


def test_cors_star_default_and_http_origin() -> None:
    s = session(runtime_of('[plugins.c]\ncategory = "cors"\n', ["c"]), method=b"OPTIONS")
    answer = s.route()
    assert isinstance(answer, Respond)
    h = dict(answer.headers)
    assert h[b"Access-Control-Allow-Origin"] == b"*"
    assert h[b"Access-Control-Allow-Methods"] == b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
    assert h[b"Access-Control-Max-Age"] == b"3600" and b"Vary" not in h
    rt = runtime_of('[plugins.c]\ncategory = "cors"\nallow_origin = "$http_origin"\n'
                    'max_age = "0s"\n', ["c"])
    s = session(rt, [(b"Origin", b"https://x.test")], method=b"OPTIONS")
    h = dict(s.route().headers)  # type: ignore[union-attr]
    assert h[b"Access-Control-Allow-Origin"] == b"https://x.test"
    assert b"Access-Control-Max-Age" not in h and h[b"Vary"] == b"Origin"


def test_cors_bad_path_regex_reported() -> None:
    problems = problems_of('[plugins.c]\ncategory = "cors"\npath = "(unclosed"\n', ["c"])
    assert "plugins.c.path" in problems


# --- accept_encoding ---------------------------------------------------------------------


@pytest.mark.parametrize(("sent", "only_one", "forwarded"), [
    (b"gzip, deflate, br", True, [b"br"]),
    (b"zstd, gzip", True, [b"zstd"]),
    (b"deflate", True, []),
    (b"br;q=0, gzip", True, [b"gzip"]),
    (b"gzip, deflate, br", False, [b"br, gzip"]),
    (b"x-gzip", False, []),
])
def test_accept_encoding(sent: bytes, only_one: bool, forwarded: list[bytes]) -> None:
    rt = runtime_of('[plugins.ae]\ncategory = "accept_encoding"\nencodings = "zstd, br, gzip"\n'
                    f'only_one_encoding = {str(only_one).lower()}\n', ["ae"])
    s = session(rt, [(b"Accept-Encoding", sent)])
    s.route()
    assert values(s.upstream_request()[2], b"accept-encoding") == forwarded


def test_accept_encoding_builtin_and_absent_header() -> None:
    rt = runtime_of("", ["pingap:acceptEncodingAdjustment"])
    s = session(rt, [(b"Accept-Encoding", b"gzip, br")])
    s.route()
    assert values(s.upstream_request()[2], b"accept-encoding") == [b"br"]
    s = session(rt)
    s.route()
    assert values(s.upstream_request()[2], b"accept-encoding") == []


def test_accepts_weights() -> None:
    assert accepts("gzip;q=0.5", "gzip") and not accepts("gzip; q=0", "gzip")
    assert not accepts("gzip;q=0.0", "GZIP") and accepts("GZip", "gzip")


def test_plugins_by_step_skips_hooks_that_would_do_nothing() -> None:
    from pingap.plugins import Plugin, plugins_by_step

    class Everywhere(Plugin):  # acts_in unset: asked at every request step
        pass

    rt = runtime_of(RESP + '[plugins.rid]\ncategory = "request_id"\nstep = "proxy_upstream"\n'
                    + CORS, ["rid", "resp", "cors"])
    rid, resp, cors = rt.locations["lo"].plugins
    anywhere = Everywhere("e", {})
    table = plugins_by_step((rid, resp, cors, anywhere))
    assert table["early_request"] == (anywhere,)
    assert table["request"] == (cors, anywhere)
    assert table["proxy_upstream"] == (rid, anywhere)
    assert table["upstream_response"] == (resp,)
    assert table["response"] == (resp, cors)
    assert rt.locations["lo"].plugin_steps == plugins_by_step((rid, resp, cors))
