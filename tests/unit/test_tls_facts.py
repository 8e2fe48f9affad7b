"""The master's facts on certificates (``pingap.tls.dump_facts``): a worker builds its
certificate store from them for the bytes the master parsed, and parses anything else."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from pingap.config import load_config_text
from pingap.tls import CertificateFacts, build_store, dump_facts, load_facts, pem_digest
from tests.support.h2_backend import make_certificates


def config_for(cert: Path, key: Path):  # type: ignore[no-untyped-def]
    return load_config_text(f'[certificates.site]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
                            'is_default = true\n')


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def test_facts_read_back_build_the_same_store(pems: dict[str, Path]) -> None:
    config = config_for(pems["cert"], pems["key"])
    parsed, problems = build_store(config)
    assert problems == [] and parsed.entries[0].names == ("localhost",)
    facts = load_facts(dump_facts(parsed))
    assert set(facts) == {"site"}
    from_facts, problems = build_store(config, facts)
    assert problems == []
    assert from_facts.entries == parsed.entries
    assert from_facts.select("localhost") == parsed.entries[0]


def test_facts_are_used_for_the_bytes_they_name(pems: dict[str, Path]) -> None:
    """Names and expiry come from the facts, not from parsing, when the digest matches."""
    config = config_for(pems["cert"], pems["key"])
    digest = pem_digest(pems["cert"].read_bytes(), pems["key"].read_bytes())
    when = datetime.datetime(2031, 1, 2, tzinfo=datetime.UTC)
    store, _ = build_store(config, {"site": CertificateFacts(digest, ("told.test",), when)})
    entry = store.entries[0]
    assert (entry.names, entry.not_after, entry.is_default) == (("told.test",), when, True)


def test_facts_for_other_bytes_are_ignored(pems: dict[str, Path]) -> None:
    """A certificate file replaced after the master parsed it: the worker parses what it
    reads now, and the facts' names are not served with other bytes."""
    config = config_for(pems["cert"], pems["key"])
    other = pem_digest(pems["self_cert"].read_bytes(), pems["self_key"].read_bytes())
    when = datetime.datetime(2031, 1, 2, tzinfo=datetime.UTC)
    store, problems = build_store(config, {"site": CertificateFacts(other, ("told.test",),
                                                                    when)})
    assert problems == []
    assert store.entries[0].names == ("localhost",)
    assert store.entries[0].not_after != when


def test_a_mismatched_key_is_still_reported_with_facts(pems: dict[str, Path]) -> None:
    """Facts never vouch for a pair they were not made for: the check runs."""
    config = config_for(pems["cert"], pems["self_key"])
    digest = pem_digest(pems["cert"].read_bytes(), pems["key"].read_bytes())
    when = datetime.datetime(2031, 1, 2, tzinfo=datetime.UTC)
    store, problems = build_store(config, {"site": CertificateFacts(digest, ("x",), when)})
    assert store.entries == []
    assert [p.key for p in problems] == ["certificates.site.tls_key"]


@pytest.mark.parametrize("text", ["", "[]", '{"site": 1}', '{"site": {"names": []}}',
                                  '{"site": {"digest": "d", "names": [], "not_after": "x"}}'])
def test_malformed_facts_are_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        load_facts(text)
