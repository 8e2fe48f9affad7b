"""Load pingap's TOML configuration into a typed, validated ``PingapConfig``.

``load_config(path)`` reads one file or a directory of files (pingap's ``conf/`` and
``?separation=true`` layouts), expands storage ``includes``, checks every key and
value and the references between sections, and returns the frozen model — or raises
``ConfigError`` listing *every* problem found, each with its file and dotted key
(``conf/locations.toml: locations.lo.upsteam: unknown key; did you mean 'upstream'?``).

Where we deliberately differ from pingap (which silently ignores these):

* unknown keys and sections are errors, with a "did you mean" hint;
* a value of the wrong type is an error (pingap: a parse error for typed sections,
  the default value for plugin options);
* a location naming an unknown plugin is an error (pingap skips the name);
* an invalid plugin is an error at every load (pingap drops it, except under ``-t``);
* an unknown ``algo``, ``alpn``, ``discovery`` or hash type is an error (pingap falls
  back to round robin / H1 / static / path hashing);
* a storage fragment that does not parse, or two fragments setting the same key, is an
  error (pingap drops the includes);
* durations may also be TOML numbers (seconds); humantime needs a unit.

Fields pingap has and we do not act on yet are listed in ``NOT_YET_SUPPORTED``;
setting one adds a warning to ``PingapConfig.warnings``.

Modules: ``sources`` (files -> raw tables), ``build`` (raw -> typed, key and type
checks), ``checks`` (values and references), ``plugin_schema`` (plugin options),
``model`` (the dataclasses), ``addresses`` (listen address syntax).
"""

from __future__ import annotations

import dataclasses

from pingap.config.addresses import parse_host_port, split_listen_addrs
from pingap.config.build import build_config
from pingap.config.checks import check_config
from pingap.config.model import (
    NOT_YET_SUPPORTED,
    OBSOLETE_KEYS,
    BasicConfig,
    CertificateConfig,
    LocationConfig,
    PingapConfig,
    PluginConfig,
    ServerConfig,
    StorageConfig,
    UpstreamConfig,
    field_docs,
)
from pingap.config.plugin_schema import PLUGIN_SCHEMAS, PluginSchema
from pingap.config.sources import Report, Source, merge_sources, merged_document, read_sources
from pingap.errors import ConfigError, Problem

__all__ = [
    "NOT_YET_SUPPORTED",
    "OBSOLETE_KEYS",
    "PLUGIN_SCHEMAS",
    "BasicConfig",
    "CertificateConfig",
    "ConfigError",
    "LocationConfig",
    "PingapConfig",
    "PluginConfig",
    "PluginSchema",
    "Problem",
    "Report",
    "ServerConfig",
    "StorageConfig",
    "UpstreamConfig",
    "collect_config",
    "collect_config_sources",
    "config_as_toml",
    "field_docs",
    "load_config",
    "load_config_sources",
    "load_config_text",
    "sorted_problems",
    "parse_host_port",
    "split_listen_addrs",
]


def load_config(path: str) -> PingapConfig:
    """Load and validate the config at ``path`` (a file or a directory).

    Raises ``ConfigError`` with every problem found; warnings (fields accepted but not
    acted on) are returned in ``PingapConfig.warnings``. ``pingap.runtime.load_runtime``
    also compiles it (the second half of the checks) in the same pass.
    """
    report = Report()
    return _raise_errors(collect_config(path, report), report)


def load_config_sources(sources: list[Source]) -> PingapConfig:
    """Load and validate a config given as documents (e.g. read from etcd)."""
    report = Report()
    return _raise_errors(_collect(sources, report), report)


def collect_config_sources(sources: list[Source], report: Report) -> PingapConfig:
    """``collect_config`` of documents (e.g. read from etcd): never raises."""
    return _collect(sources, report)


def load_config_text(text: str, file: str = "<string>") -> PingapConfig:
    """Load and validate a whole config given as TOML text; ``file`` names it in problems."""
    report = Report()
    return _raise_errors(_collect([Source(file, text.encode("utf-8"))], report), report)


def collect_config(path: str, report: Report) -> PingapConfig:
    """The config at ``path`` with every problem added to ``report`` (never raises).

    Entries with problems are still there (a bad value keeps its field's default), so a
    later phase can check them too: one run reports everything.
    """
    return _collect(read_sources(path, report), report)


def config_as_toml(path: str) -> str:
    """The config at ``path`` (TOML, HCL or KDL, a file or a directory) as one TOML
    document, ``includes`` kept; raises ConfigError when a file cannot be read or parsed.
    Values are not checked (``pingap -t`` does that)."""
    import tomlkit  # only this conversion writes TOML

    report = Report()
    document = merged_document(read_sources(path, report), report)
    if report.errors:
        raise ConfigError(sorted_problems(report.errors))
    return tomlkit.dumps(document)


def _collect(sources: list[Source], report: Report) -> PingapConfig:
    raw = merge_sources(sources, report)
    config = build_config(raw, report)
    check_config(config, report)
    return dataclasses.replace(config, warnings=tuple(report.warnings))


def _raise_errors(config: PingapConfig, report: Report) -> PingapConfig:
    if report.errors:
        raise ConfigError(sorted_problems(report.errors))
    return config


def sorted_problems(problems: list[Problem]) -> list[Problem]:
    """Grouped by file (stable: discovery order within a file)."""
    return sorted(problems, key=lambda problem: problem.file)
