"""Config storage on files: entries edited in place with tomlkit (comments kept), pingap's
layouts for new entries, history, conflicts, and the snapshot workers load."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from master.snapshot import ConfigSnapshots
from master.storage import ConflictError, StorageError, open_storage
from master.storage.documents import (
    Document,
    Layout,
    check_name,
    entry_digest,
    place_entry,
    render_entry,
)
from pingap.config import load_config

COMMENTED = """# my proxy
[basic]
# keep this
log_level = "info" # and this

[upstreams.up]
# where the app runs
addrs = ["127.0.0.1:8001"] # first app
algo = "round_robin"

[locations.lo]
upstream = "up"

[servers.web]
addr = "127.0.0.1:6188"
locations = ["lo"]
"""


def test_edit_keeps_comments_and_untouched_keys() -> None:
    doc = [Document("pingap.toml", COMMENTED.encode())]
    out = place_entry(doc, Layout.SINGLE, "pingap.toml", "upstreams", "up",
                      {"addrs": ["127.0.0.1:8002"], "algo": "round_robin"}).data
    assert out is not None
    text = out.decode()
    assert "# where the app runs" in text and "# my proxy" in text
    assert 'log_level = "info" # and this' in text
    assert 'addrs = ["127.0.0.1:8002"]' in text
    # only the changed value differs from the user's file (its trailing comment stays)
    assert text == COMMENTED.replace('["127.0.0.1:8001"]', '["127.0.0.1:8002"]')


def test_new_entries_go_where_the_layout_puts_them() -> None:
    docs = [Document("servers.toml", b"[servers.web]\naddr = '127.0.0.1:1'\n")]
    assert place_entry(docs, Layout.BY_CATEGORY, "", "upstreams", "a", {"addrs": []}).key == \
        "upstreams.toml"
    assert place_entry(docs, Layout.BY_ENTRY, "", "upstreams", "a", {"addrs": []}).key == \
        "upstreams/a.toml"
    assert place_entry(docs, Layout.BY_ENTRY, "", "basic", "", {"threads": 1}).key == \
        "basic.toml"
    # an existing entry is edited where the user put it, whatever the layout
    assert place_entry(docs, Layout.BY_ENTRY, "", "servers", "web", {"addr": "x"}).key == \
        "servers.toml"


def test_deleting_the_only_entry_of_a_per_entry_file_removes_the_file() -> None:
    docs = [Document("upstreams/a.toml", render_entry("upstreams", "a", {"addrs": []}).encode())]
    placement = place_entry(docs, Layout.BY_ENTRY, "", "upstreams", "a", None)
    assert placement.key == "upstreams/a.toml" and placement.data is None
    with pytest.raises(KeyError):
        place_entry(docs, Layout.BY_ENTRY, "", "upstreams", "missing", None)


def test_names_that_would_escape_or_hide_are_refused() -> None:
    for name in ("../x", "a/b", "a\\b", ".hidden", "", "a\0b"):
        assert check_name("upstreams", name), name
    assert check_name("upstreams", "app-1") is None
    assert check_name("nonsense", "x") == "unknown category 'nonsense'"


def test_single_file_save_keeps_comments_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "pingap.toml"
    path.write_text(COMMENTED)
    storage = open_storage(str(path))
    assert storage.layout is Layout.SINGLE
    key, values = storage.entry("upstreams", "up")
    assert key == "pingap.toml" and values is not None
    storage.save_entry("upstreams", "up", {**values, "addrs": ["127.0.0.1:9"]},
                       expected=entry_digest(values))
    text = path.read_text()
    assert "# where the app runs" in text and '"127.0.0.1:9"' in text
    assert load_config(str(path)).upstreams["up"].addrs[0].startswith("127.0.0.1:9")


def test_stale_version_is_a_conflict_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "pingap.toml"
    path.write_text(COMMENTED)
    storage = open_storage(str(path))
    _, seen = storage.entry("upstreams", "up")
    storage.save_entry("upstreams", "up", {"addrs": ["127.0.0.1:2"]}, expected=entry_digest(seen))
    before = path.read_text()
    with pytest.raises(ConflictError):
        storage.save_entry("upstreams", "up", {"addrs": ["127.0.0.1:3"]},
                           expected=entry_digest(seen))
    with pytest.raises(ConflictError):  # "" = must be new
        storage.save_entry("upstreams", "up", {"addrs": ["127.0.0.1:3"]}, expected="")
    assert path.read_text() == before


def test_separation_and_history(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    storage = open_storage(f"{conf}?separation=true&enable_history=true")
    assert storage.layout is Layout.BY_ENTRY and storage.history_enabled
    storage.save_entry("upstreams", "up", {"addrs": ["127.0.0.1:1"]}, expected="")
    storage.save_entry("upstreams", "up", {"addrs": ["127.0.0.1:2"]})
    assert (conf / "upstreams" / "up.toml").read_text() == \
        '[upstreams.up]\naddrs = ["127.0.0.1:2"]\n'
    history = storage.history("upstreams/up.toml")
    assert [item.data for item in history] == ['[upstreams.up]\naddrs = ["127.0.0.1:1"]']
    assert [p.name[:18] for p in (tmp_path / "conf-history").iterdir()] == ["upstreams-up.toml-"]
    storage.save_entry("upstreams", "up", None)
    assert not (conf / "upstreams" / "up.toml").exists()
    # without separation pingap keeps no history and writes one file per category
    plain = open_storage(str(tmp_path / "conf2") + "?enable_history=true")
    assert plain.layout is Layout.BY_CATEGORY and not plain.history_enabled


def test_sync_copies_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "pingap.toml"
    path.write_text(COMMENTED)
    target = open_storage(f"{tmp_path / 'out'}?separation=true")
    assert open_storage(str(path)).copy_to(target) == 4
    names = sorted(p.relative_to(tmp_path / "out").as_posix()
                   for p in (tmp_path / "out").rglob("*.toml"))
    assert names == ["basic.toml", "locations/lo.toml", "servers/web.toml", "upstreams/up.toml"]
    assert load_config(str(tmp_path / "out")).servers["web"].locations == ("lo",)


@pytest.fixture(autouse=True)
def private_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ConfigSnapshots`` keeps its copies in (and sweeps) ``$TMPDIR``: this test's own."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))


def test_snapshot_copies_documents_and_maps_problems_back(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    storage = open_storage(f"{conf}?separation=true")
    storage.save_entry("upstreams", "up", {"addrs": ["127.0.0.1:1"], "algo": "bogus"})
    (conf / ".hidden.toml").write_text("not toml [")
    snapshots = ConfigSnapshots(storage)
    path = snapshots.take(1)
    assert sorted(p.name for p in Path(path).rglob("*")) == ["up.toml", "upstreams"]
    from pingap.errors import ConfigError
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    mapped = snapshots.user_paths(caught.value, 1)
    assert any(p.file == str(conf / "upstreams" / "up.toml") for p in mapped.problems)
    snapshots.remove()


def test_dropped_generations_take_their_certificate_facts_along(tmp_path: Path) -> None:
    conf = tmp_path / "pingap.toml"
    conf.write_text('[upstreams.up]\naddrs = ["127.0.0.1:1"]\n')
    snapshots = ConfigSnapshots(open_storage(str(conf)))
    paths = {n: (snapshots.take(n), snapshots.write_certificate_facts(n, f"{{{n}}}"))
             for n in (1, 2, 3)}
    assert Path(paths[2][1]).read_text() == "{2}"
    snapshots.drop({3})
    assert sorted(os.listdir(snapshots.root)) == [".master.lock", "certificates-3.json", "gen-3"]
    snapshots.remove()


def test_missing_single_file_snapshot_is_a_storage_error(tmp_path: Path) -> None:
    snapshots = ConfigSnapshots(open_storage(str(tmp_path / "gone.toml")))
    with pytest.raises(StorageError):
        snapshots.take(1)
    snapshots.remove()


def test_sweep_removes_only_unlocked_copies_of_its_own_kind(tmp_path: Path) -> None:
    import fcntl

    from master.snapshot import LOCK_NAME, sweep_abandoned

    def copy(name: str, lock: bool = True, mode: int = 0o700) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "gen-1").mkdir()
        if lock:
            (path / LOCK_NAME).touch()
        path.chmod(mode)
        return path

    abandoned = copy("pingap-config-abandoned")
    held = copy("pingap-config-held")
    unknown = copy("pingap-config-unknown", lock=False)  # not ours to judge
    shared = copy("pingap-config-shared", mode=0o755)  # not a master's private copy
    other = copy("other-abandoned")  # an unlocked copy, but not of this name
    (tmp_path / "pingap-config-link").symlink_to(other)  # never followed
    fd = os.open(held / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert sweep_abandoned(str(tmp_path)) == [str(abandoned)]
    finally:
        os.close(fd)
    assert not abandoned.exists()
    assert held.exists() and unknown.exists() and shared.exists() and other.exists()
    assert (tmp_path / "pingap-config-link").is_symlink()
    assert sweep_abandoned(str(tmp_path)) == [str(held)]  # its holder is gone now
