"""The HTTP cache: storability and freshness, entries on disk, the plugin's hit, miss,
fill, revalidation and purge decisions against real stores."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pingap import conditional
from pingap.actions import CONTINUE, Respond
from pingap.plugins.cache import Cache, file_store_options
from pingap.plugins.cache.memory import BUDGET, MemoryStore, memory_size
from pingap.plugins.cache.policy import Entry, answer, freshness, make_entry
from pingap.state import SIZE, SharedState
from tests.unit.body_support import header, make_ctx, run
from workers.cache_store import CacheStores, FileStore

NOW = 1_700_000_000.0


def fresh(headers: dict[str, str], status: int = 200, **kw: object) -> float | None:
    items = [(k.encode(), v.encode()) for k, v in headers.items()]
    return freshness(status, items, check_cache_control=bool(kw.get("check", False)),
                     max_ttl=kw.get("max_ttl"), now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Cache-Control": "max-age=60"}, 60),
    ({"Cache-Control": "public, max-age=60, s-maxage=300"}, 300),
    ({"Cache-Control": "max-age=60", "Age": "20"}, 40),
    ({"Cache-Control": "max-age=60", "Age": "90"}, None),
    ({"Cache-Control": "max-age=0"}, None),
    ({"Cache-Control": "private, max-age=60"}, None),
    ({"Cache-Control": "no-store"}, None),
    ({"Cache-Control": "no-cache, max-age=60"}, None),
    ({"Cache-Control": "public"}, None),
    ({"Cache-Control": "max-age=60", "Set-Cookie": "a=b"}, None),
    ({"Cache-Control": "max-age=60", "Vary": "*"}, None),
    ({}, 1.0),
    ({"Expires": conditional.http_date(NOW + 120), "Date": conditional.http_date(NOW)}, 120),
    ({"Expires": "0"}, None),
])
def test_freshness(headers: dict[str, str], expected: float | None) -> None:
    assert fresh(headers) == expected


def test_freshness_options_and_statuses() -> None:
    assert fresh({}, check=True) is None
    assert fresh({"Cache-Control": "max-age=7200"}, max_ttl=3600.0) == 3600
    assert fresh({"Cache-Control": "max-age=60"}, status=404) == 60
    assert fresh({"Cache-Control": "max-age=60"}, status=500) is None
    assert fresh({"Cache-Control": "max-age=60"}, status=206) is None


def test_entry_round_trip_and_truncation() -> None:
    entry = make_entry(200, [(b"ETag", b'"1"'), (b"Vary", b"Accept-Language"), (b"Age", b"3")],
                       b"body", [(b"Accept-Language", b"fr")], 60, NOW)
    assert entry.initial_age == 3 and entry.vary == ((b"accept-language", b"fr"),)
    data = entry.dumps()
    assert Entry.loads(data) == entry
    assert Entry.loads(data[:-1]) is None
    assert Entry.loads(b"garbage") is None
    assert entry.age(NOW + 10) == 13


def test_answer_adds_age_and_answers_conditionals() -> None:
    entry = make_entry(200, [(b"ETag", b'"v1"'), (b"Content-Length", b"4")], b"body", [], 60, NOW)
    status, headers, body = answer(entry, [], NOW + 5, b"hit")
    assert (status, body) == (200, b"body")
    assert header(headers, "age") == b"5" and header(headers, "x-cache-status") == b"hit"
    status, headers, body = answer(entry, [(b"If-None-Match", b'"v1"')], NOW, b"hit")
    assert status == 304 and body == b"" and header(headers, "content-length") is None


def test_memory_size_and_bound() -> None:
    assert memory_size("memory://pingap?max_size=20") == BUDGET // 5
    assert memory_size("memory://pingap?max_size=1mb") == 1_000_000
    assert memory_size("") == BUDGET == 256_000_000  # pingap's 256mb
    assert memory_size("memory://pingap?max_size=500") == BUDGET  # at most 100 %
    assert memory_size("memory://pingap?max_size=5gb") == 1024 ** 3  # pingap's 1 GiB cap
    with pytest.raises(ValueError, match="memory://p\\?max_size=lots"):
        Cache("c", {"directory": "memory://p?max_size=lots"})
    store = MemoryStore(max_size=3000)
    for i in range(10):
        store.put(str(i), make_entry(200, [], b"x" * 1000, [], 60, NOW))
    assert store.get("0") is None and store.get("9") is not None


# --- the plugin ---------------------------------------------------------------------

@pytest.fixture(params=["memory", "file"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[CacheStores, str]:
    directory = "memory://t" if request.param == "memory" else str(tmp_path / "cache")
    return CacheStores(), directory


def cache_plugin(stores: tuple[CacheStores, str], **options: object) -> Cache:
    opener, directory = stores
    plugin = Cache("c", {"directory": directory, "purge_ip_list": ["127.0.0.1"], **options})
    plugin.bind(SimpleNamespace(cache_store=opener))
    return plugin


def miss_and_fill(plugin: Cache, path: str, headers: list[tuple[bytes, bytes]], body: bytes,
                  *, method: str = "GET", req: dict[str, str] | None = None) -> object:
    ctx = make_ctx(path, method=method, headers=req)
    assert plugin.handle_request("request", ctx) is CONTINUE
    out = list(headers)
    assert plugin.handle_response(ctx, 200, out) is None
    assert header(out, "x-cache-status") == b"miss"
    body_filter = plugin.body_filter(ctx, 200, out)
    if body_filter is not None:
        assert run(body_filter, [body[:3], body[3:]]) == body
    for cleanup in ctx.cleanups or ():
        cleanup()
    return body_filter


def lookup(plugin: Cache, path: str, *, method: str = "GET",
           req: dict[str, str] | None = None) -> Respond | None:
    result = plugin.handle_request("request", make_ctx(path, method=method, headers=req))
    return result if isinstance(result, Respond) else None


CACHEABLE = [(b"Content-Type", b"text/plain"), (b"Cache-Control", b"max-age=60"),
             (b"ETag", b'"e1"'), (b"Content-Length", b"5")]


def test_miss_fill_then_hit(stores: tuple[CacheStores, str]) -> None:
    plugin = cache_plugin(stores)
    assert lookup(plugin, "/a") is None
    miss_and_fill(plugin, "/a", CACHEABLE, b"hello")
    hit = lookup(plugin, "/a")
    assert hit is not None and hit.status == 200 and hit.body == b"hello"
    assert header(hit.headers, "x-cache-status") == b"hit"
    assert header(hit.headers, "age") == b"0"
    assert header(hit.headers, "x-cache-lookup") == b"0ms"
    assert lookup(plugin, "/a", method="HEAD") is None  # HEAD has its own key, as pingap
    assert lookup(plugin, "/a?x=1") is None
    not_modified = lookup(plugin, "/a", req={"If-None-Match": '"e1"'})
    assert not_modified is not None and not_modified.status == 304


def test_uncacheable_and_oversized_are_not_stored(stores: tuple[CacheStores, str]) -> None:
    plugin = cache_plugin(stores, max_file_size="4b")
    assert miss_and_fill(plugin, "/big", CACHEABLE, b"hello") is None  # Content-Length says so
    unknown = [h for h in CACHEABLE if h[0] != b"Content-Length"]
    assert miss_and_fill(plugin, "/big2", unknown, b"hello") is not None
    assert lookup(plugin, "/big2") is None  # stopped keeping it while streaming
    plugin = cache_plugin(stores)
    miss_and_fill(plugin, "/cookie", [*CACHEABLE, (b"Set-Cookie", b"s=1")], b"hello")
    assert lookup(plugin, "/cookie") is None


def test_a_response_cut_short_is_never_stored(stores: tuple[CacheStores, str]) -> None:
    plugin = cache_plugin(stores)
    ctx = make_ctx("/cut")
    plugin.handle_request("request", ctx)
    out = list(CACHEABLE)
    plugin.handle_response(ctx, 200, out)
    body_filter = plugin.body_filter(ctx, 200, out)
    assert body_filter is not None
    body_filter.feed(b"hel")  # the client went away: finish() never comes
    for cleanup in ctx.cleanups or ():
        cleanup()
    assert lookup(plugin, "/cut") is None


def test_vary_and_key_headers(stores: tuple[CacheStores, str]) -> None:
    plugin = cache_plugin(stores, headers=["X-Tenant"])
    vary = [*CACHEABLE, (b"Vary", b"Accept-Language")]
    miss_and_fill(plugin, "/v", vary, b"hello", req={"Accept-Language": "fr", "X-Tenant": "a"})
    assert lookup(plugin, "/v", req={"Accept-Language": "fr", "X-Tenant": "a"}) is not None
    assert lookup(plugin, "/v", req={"Accept-Language": "de", "X-Tenant": "a"}) is None
    assert lookup(plugin, "/v", req={"Accept-Language": "fr", "X-Tenant": "b"}) is None


def test_stale_entry_is_revalidated(stores: tuple[CacheStores, str]) -> None:
    plugin = cache_plugin(stores)
    short = [(b"Content-Type", b"text/plain"), (b"Cache-Control", b"max-age=1"),
             (b"ETag", b'"e1"'), (b"Last-Modified", b"Mon, 01 Jan 2024 00:00:00 GMT")]
    miss_and_fill(plugin, "/r", short, b"hello")
    key = plugin.key(make_ctx("/r"), "GET")
    assert plugin.store is not None
    entry = plugin.store.get(key)
    assert entry is not None
    plugin.store.put(key, Entry(entry.status, entry.headers, entry.body, entry.stored - 10,
                                entry.expires - 10, entry.vary))
    ctx = make_ctx("/r", headers={"If-None-Match": '"client"'})
    assert plugin.handle_request("request", ctx) is CONTINUE
    assert header(ctx.request_headers, "if-none-match") == b'"e1"'
    assert header(ctx.request_headers, "if-modified-since") == b"Mon, 01 Jan 2024 00:00:00 GMT"
    replaced = plugin.handle_response(ctx, 304, [(b"Cache-Control", b"max-age=60"),
                                                 (b"ETag", b'"e1"')])
    assert isinstance(replaced, Respond)
    assert replaced.status == 200 and replaced.body == b"hello"
    assert header(replaced.headers, "x-cache-status") == b"revalidated"
    assert header(replaced.headers, "cache-control") == b"max-age=60"
    hit = lookup(plugin, "/r")
    assert hit is not None and header(hit.headers, "x-cache-status") == b"hit"


def test_stale_entry_replaced_by_a_new_200(stores: tuple[CacheStores, str]) -> None:
    plugin = cache_plugin(stores)
    miss_and_fill(plugin, "/n", [(b"Cache-Control", b"max-age=1")], b"old")
    key = plugin.key(make_ctx("/n"), "GET")
    assert plugin.store is not None
    entry = plugin.store.get(key)
    assert entry is not None
    plugin.store.put(key, Entry(entry.status, entry.headers, entry.body, 0, 1, entry.vary))
    ctx = make_ctx("/n")
    plugin.handle_request("request", ctx)
    out = [(b"Cache-Control", b"max-age=60")]
    plugin.handle_response(ctx, 200, out)
    assert header(out, "x-cache-status") == b"expired"
    body_filter = plugin.body_filter(ctx, 200, out)
    assert body_filter is not None and run(body_filter, [b"new"]) == b"new"
    hit = lookup(plugin, "/n")
    assert hit is not None and hit.body == b"new"


def test_purge(stores: tuple[CacheStores, str]) -> None:
    plugin = cache_plugin(stores)
    miss_and_fill(plugin, "/p", CACHEABLE, b"hello")
    miss_and_fill(plugin, "/p", CACHEABLE, b"", method="HEAD")
    denied = plugin.handle_request("request", make_ctx("/p", method="PURGE", client_ip="10.9.9.9"))
    assert isinstance(denied, Respond) and denied.status == 403
    assert lookup(plugin, "/p") is not None
    purged = plugin.handle_request("request", make_ctx("/p", method="PURGE", client_ip="127.0.0.1"))
    assert isinstance(purged, Respond) and purged.status == 204
    assert lookup(plugin, "/p") is None and lookup(plugin, "/p", method="HEAD") is None


def test_purge_everything(stores: tuple[CacheStores, str]) -> None:
    plugin = cache_plugin(stores, namespace="web")
    miss_and_fill(plugin, "/1", CACHEABLE, b"hello")
    miss_and_fill(plugin, "/2", CACHEABLE, b"hello")
    result = plugin.handle_request("request", make_ctx("/*", method="PURGE",
                                                       client_ip="127.0.0.1"))
    assert isinstance(result, Respond)
    if plugin.directory.startswith("memory://"):
        assert result.status == 501
    else:
        assert (result.status, result.body) == (200, b"purged: 2, fail: 0")
        assert lookup(plugin, "/1") is None


def test_skip_and_methods(stores: tuple[CacheStores, str]) -> None:
    plugin = cache_plugin(stores, skip="^/api/")
    ctx = make_ctx("/api/x")
    assert plugin.handle_request("request", ctx) is CONTINUE and ctx.plugin_state("c") is None
    ctx = make_ctx("/x", method="POST")
    assert plugin.handle_request("request", ctx) is CONTINUE and ctx.plugin_state("c") is None


# --- the file store -----------------------------------------------------------------

def test_file_store_survives_a_new_instance_and_writes_atomically(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path), file_store_options(f"{tmp_path}?levels=1:2").levels)
    entry = make_entry(200, [(b"A", b"b")], b"x" * 1000, [], 60, NOW)
    store.put("abcdef", entry)
    assert (tmp_path / "a" / "bc" / "abcdef").exists()
    assert FileStore(str(tmp_path), (1, 2)).get("abcdef") == entry
    assert not [n for n in os.listdir(tmp_path / "a" / "bc") if n.startswith(".tmp")]
    (tmp_path / "a" / "bc" / "abcdef").write_bytes(entry.dumps()[:-10])  # a torn file
    assert store.get("abcdef") is None
    assert not (tmp_path / "a" / "bc" / "abcdef").exists()  # removed, as pingap


def test_file_lock_excludes_a_second_filler(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path))
    first = store.lock("k", 1.0)
    assert first is not None and not first.waited
    assert store.lock("k", 0.05) is None  # held: the waiter gives up after its time
    first.release()
    second = store.lock("k", 0.05)
    assert second is not None
    second.release()


def test_file_store_options_are_checked_at_config_time() -> None:
    options = file_store_options("/opt/c?levels=1:2&inactive=1h&reading_max=10&writing_max=2"
                                 "&cache_max=100&cache_file_max_weight=8&max_size=10mb"
                                 "&cache_file_max_size=4096")  # ignored, as pingap
    assert options == ("/opt/c", (1, 2), 3600.0, 10, 2, 100, 8, 10_000_000)
    defaults = file_store_options("~/c")
    assert defaults.inactive == 48 * 3600 and defaults.max_size == 0
    assert (defaults.reading_max, defaults.writing_max, defaults.cache_max,
            defaults.cache_file_max_weight) == (10_000, 1_000, 0, 256)  # pingap's
    for bad in ("/c?levels=1:2:3", "/c?levels=4", "/c?levels=a", "/c?inactive=soon",
                "/c?reading_max=-1", "/c?writing_max=many", "/c?max_size=big"):
        with pytest.raises(ValueError):
            Cache("c", {"directory": bad})


def disk_store(tmp_path: Path, query: str) -> FileStore:
    store = CacheStores()(f"{tmp_path}?{query}")
    assert isinstance(store, FileStore)
    return store


def entry_of(size: int) -> Entry:
    return make_entry(200, [], b"x" * size, [], 60, NOW)


def test_max_size_evicts_the_least_recently_used(tmp_path: Path) -> None:
    store = disk_store(tmp_path, "max_size=10kb")
    for key in ("a", "b", "c"):
        store.put(key, entry_of(2500))
    assert store.get("a") is not None  # used: now the most recent
    store.put("d", entry_of(2500))  # 4 x 2.6 KB: over 10 KB, b goes (down to 9 KB)
    assert store.get("b") is None  # the least recently used went
    assert all(store.get(k) is not None for k in ("a", "c", "d"))
    assert sum(f.stat().st_size for f in tmp_path.iterdir() if f.is_file()) <= 10_000
    store.put("huge", entry_of(20_000))  # never fits: not stored, nothing evicted for it
    assert store.get("huge") is None and store.get("a") is not None


def test_max_size_holds_for_the_writes_of_every_worker(tmp_path: Path) -> None:
    workers = [disk_store(tmp_path, "max_size=100kb") for _ in range(4)]
    for n in range(60):
        workers[n % 4].put(f"k{n}", entry_of(4000))
        used = sum(f.stat().st_size for f in tmp_path.iterdir() if f.is_file())
        assert used <= 100_000, n  # by one account, not four that miss each other
    assert all(workers[0].get(f"k{n}") is not None for n in range(55, 60))
    workers[1].purge_namespace("")
    workers[2].put("after", entry_of(4000))  # an unknown account is measured again
    size = len(entry_of(4000).dumps())
    assert workers[3].disk.account() == (size, size)  # measured empty, then the write


def test_max_size_counts_what_is_already_on_disk(tmp_path: Path) -> None:
    disk_store(tmp_path, "").put("old", entry_of(6000))  # a previous run's entry
    store = disk_store(tmp_path, "max_size=10kb")
    store.put("new", entry_of(6000))
    assert store.get("old") is None and store.get("new") is not None


def test_reading_and_writing_caps(tmp_path: Path) -> None:
    store = disk_store(tmp_path, "reading_max=1&writing_max=1")
    store.put("a", entry_of(10))
    first = store.write_slot()
    assert first is not None and store.write_slot() is None  # over writing_max
    first.release()
    first.release()  # once only
    second = store.write_slot()
    assert second is not None
    second.release()
    held = store.disk.reading.acquire()  # a read in progress
    assert store.get("a") is None  # over reading_max: a miss
    assert held is not None
    held.release()
    assert store.get("a") is not None
    assert disk_store(tmp_path / "n", "writing_max=0").write_slot() is not None  # 0: no cap


def host_stores(shared: SharedState, owner: int, directory: str) -> FileStore:
    store = CacheStores(shared, owner)(directory)
    assert isinstance(store, FileStore)
    return store


def test_caps_count_every_worker_of_the_host(tmp_path: Path) -> None:
    shared = SharedState(bytearray(SIZE))
    shared.initialise()
    directory = f"{tmp_path}?reading_max=1&writing_max=2"
    one, two = host_stores(shared, 1, directory), host_stores(shared, 2, directory)
    first, second = one.write_slot(), two.write_slot()
    assert first is not None and second is not None
    assert one.write_slot() is None and two.write_slot() is None  # 2 on the host
    first.release()
    first.release()  # once only
    third = two.write_slot()
    assert third is not None and one.write_slot() is None
    # another directory string is another cache, with its own counts (pingap)
    assert host_stores(shared, 1, f"{tmp_path}?writing_max=2&x=1").write_slot() is not None
    one.put("big", entry_of(100_000))
    one.put("small", entry_of(10))
    reading = one.get("big")  # sent from its file: the host's one read
    assert reading is not None and reading.part is not None
    assert two.get("small") is None  # over reading_max on the host: a miss
    reading.part.file.close()
    assert two.get("small") == entry_of(10)


def test_a_dead_workers_reads_and_fills_are_reclaimed(tmp_path: Path) -> None:
    shared = SharedState(bytearray(SIZE))
    shared.initialise()
    directory = f"{tmp_path}?reading_max=1&writing_max=1"
    dead = host_stores(shared, 1, directory)
    assert dead.write_slot() is not None and dead.disk.reading.acquire() is not None
    live = host_stores(shared, 2, directory)
    assert live.write_slot() is None and live.disk.reading.acquire() is None
    shared.drop_owner(1)  # the master reaps the dead worker
    slot = live.write_slot()
    assert slot is not None and live.disk.reading.acquire() is not None
    slot.release()
    shared.drop_owner(2)
    # a worker that died with counts the master did not void (its master died too):
    # the next worker in its slot zeroes them when it opens the directory
    assert dead.write_slot() is not None and dead.disk.reading.acquire() is not None
    assert live.write_slot() is None
    host_stores(shared, 1, directory)
    assert live.write_slot() is not None and live.disk.reading.acquire() is not None


def test_large_entries_are_sent_from_their_file_and_read_until_closed(tmp_path: Path) -> None:
    store = disk_store(tmp_path, "reading_max=1")
    big = entry_of(100_000)
    store.put("big", big)
    store.put("small", entry_of(10))
    got = store.get("big")
    assert got is not None and got.body == b"" and got.part is not None
    assert got.size == 100_000 and got.headers == big.headers
    assert os.pread(got.part.file.fileno(), got.part.length, got.part.offset) == big.body
    assert store.get("small") is None  # the big read is still in progress
    got.part.file.close()
    assert store.get("small") == entry_of(10)
    (tmp_path / "big").write_bytes(big.dumps()[:60_000])  # torn: never an entry
    assert store.get("big") is None and not (tmp_path / "big").exists()


def test_a_hit_from_a_file_streams_and_a_revalidation_keeps_its_body(tmp_path: Path) -> None:
    plugin = cache_plugin((CacheStores(), str(tmp_path)))
    body = b"y" * 50_000
    headers = [(b"Cache-Control", b"max-age=60"), (b"ETag", b'"e1"')]
    miss_and_fill(plugin, "/f", headers, body)
    ctx = make_ctx("/f")
    hit = plugin.handle_request("request", ctx)
    assert isinstance(hit, Respond) and hit.body == b"" and len(hit.stream) == 1
    part = hit.stream[0]
    assert not isinstance(part, bytes)
    assert os.pread(part.file.fileno(), part.length, part.offset) == body
    assert header(hit.headers, "content-length") == b"50000"
    for cleanup in ctx.cleanups or ():
        cleanup()
    with pytest.raises(ValueError):
        part.file.fileno()  # closed when the request finished
    assert plugin.store is not None
    key = plugin.key(make_ctx("/f"), "GET")
    stale = plugin.store.get(key)
    assert stale is not None and stale.part is not None
    stale.part.file.close()
    plugin.store.put(key, make_entry(200, headers, body, [], -1, NOW))  # expired
    ctx = make_ctx("/f")
    assert plugin.handle_request("request", ctx) is CONTINUE
    assert header(ctx.request_headers, "if-none-match") == b'"e1"'
    served = plugin.handle_response(ctx, 304, [(b"Cache-Control", b"max-age=60")])
    assert served is not None and header(served.headers, "x-cache-status") == b"revalidated"
    for cleanup in ctx.cleanups or ():
        cleanup()
    again = lookup(plugin, "/f")
    assert again is not None and header(again.headers, "x-cache-status") == b"hit"
    assert os.pread(again.stream[0].file.fileno(), 50_000,  # type: ignore[union-attr]
                    again.stream[0].offset) == body  # type: ignore[union-attr]


def test_hot_layer_serves_from_memory_and_follows_the_file(tmp_path: Path) -> None:
    store = disk_store(tmp_path, "cache_max=100&cache_file_max_weight=2")
    small, big = entry_of(100), entry_of(9000)
    store.put("s", small)
    store.put("b", big)
    # rewrite both files in place (same inode, size and mtime): only the hot one is
    # still served, from memory
    for key in ("s", "b"):
        path = tmp_path / key
        st = path.stat()
        with open(path, "r+b") as handle:
            handle.write(b"\0" * st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.get("s") == small
    assert store.get("b") is None  # 2 pages or more: not kept in memory
    store.put("s", entry_of(200))  # replaced (another worker would do the same)
    assert store.get("s") == entry_of(200)
    assert store.delete("s") and store.get("s") is None


def test_an_entry_that_cannot_be_touched_is_still_read(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = disk_store(tmp_path, "")
    store.put("small", entry_of(10))
    store.put("big", entry_of(100_000))

    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # another owner's file

    monkeypatch.setattr(os, "utime", refused)
    assert store.get("small") == entry_of(10)
    big = store.get("big")
    assert big is not None and big.size == 100_000 and big.part is not None
    big.part.file.close()


def test_the_sweep_covers_every_namespace_of_the_directory(tmp_path: Path) -> None:
    stores = CacheStores()
    web = stores(f"{tmp_path}?inactive=1h", "web")
    api = stores(f"{tmp_path}?inactive=1h", "api")
    entry = make_entry(200, [], b"x", [], 60, NOW)
    web.put("k", entry)
    api.put("k", entry)
    for key in ("web", "api"):
        os.utime(tmp_path / key / "k", (NOW - 7200, NOW - 7200))
    assert web.sweep() == 2
    assert web.get("k") is None and api.get("k") is None


def test_inactive_entries_are_swept_and_reads_keep_them(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path), inactive=3600)
    entry = make_entry(200, [], b"x", [], 60, NOW)
    store.put("old", entry)
    store.put("used", entry)
    past = NOW - 7200  # both written two hours ago (NOW is in the past too)
    for key in ("old", "used"):
        os.utime(tmp_path / key, (past, past))
    assert store.get("used") == entry  # a read marks it as used again
    store.mark_uncacheable("k")
    dead = tmp_path / ".tmp-used-0bad"  # what a crash mid-write left
    dead.write_bytes(entry.dumps()[:5])
    os.utime(dead, (time.time(), time.time() - 7200))
    live = tmp_path / ".tmp-used-0ok"  # a write in progress
    live.write_bytes(b"")
    store.lock("gone", 1.0).release()  # type: ignore[union-attr]
    store.lock("filled", 1.0).release()  # type: ignore[union-attr]
    os.utime(tmp_path / ".locks" / "gone", (past, past))
    store.mark_uncacheable("ended")
    os.utime(tmp_path / ".locks" / "ended.nc", (past, past))
    assert store.sweep() == 2
    assert not dead.exists() and live.exists()
    assert sorted(os.listdir(tmp_path / ".locks")) == ["filled", "k.nc"]
    assert store.get("old") is None and store.get("used") == entry
    assert store.is_uncacheable("k")  # a marker still in force stays


def test_uncacheable_keys_skip_the_lock_and_predictor_skips_lookup(
        stores: tuple[CacheStores, str]) -> None:
    plugin = cache_plugin(stores, lock="5s")
    assert plugin.store is not None
    miss_and_fill(plugin, "/api", [(b"Cache-Control", b"no-store")], b"x")
    key = plugin.key(make_ctx("/api"), "GET")
    assert plugin.store.is_uncacheable(key)
    held = plugin.store.lock(key, 0.1)  # another request holds the key's lock ...
    assert held is not None
    ctx = make_ctx("/api")
    assert plugin.handle_request("request", ctx) is CONTINUE  # ... and is not waited for
    assert ctx.plugin_state("c").ticket is None
    held.release()
    predicted = cache_plugin(stores, predictor=True)
    ctx = make_ctx("/api")
    assert predicted.handle_request("request", ctx) is CONTINUE
    assert ctx.plugin_state("c") is None  # no lookup, no cache headers
    miss_and_fill(plugin, "/api", CACHEABLE, b"hello")  # cacheable again: stored
    assert not plugin.store.is_uncacheable(key)
    assert lookup(plugin, "/api") is not None


def test_eviction_on_a_file_cache_is_a_warning(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    Cache("pages", {"directory": "memory://m", "eviction": True})
    assert not caplog.records
    Cache("pages", {"directory": str(tmp_path), "eviction": True})
    assert "plugins.pages: `eviction` applies to the memory cache only" in caplog.text


def test_an_unusable_cache_directory_fails_the_bind_by_name(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    plugin = Cache("pages", {"directory": str(tmp_path / "file" / "cache")})
    with pytest.raises(ValueError, match=r"plugins\.pages: cannot use the cache directory"):
        plugin.bind(SimpleNamespace(cache_store=CacheStores()))
