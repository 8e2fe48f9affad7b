"""Read config files and merge them into raw (untyped) per-entry tables.

One job: turn ``-c <path>`` into ``RawConfig`` — the ``[basic]`` keys and every
``[<section>.<name>]`` table, each remembering the file (and storage) each of its keys
came from, with ``includes`` already expanded. Nothing here knows field types.

* a file (existing, or a path ending in ``.toml``, ``.hcl`` or ``.kdl``) is the whole
  config; HCL and KDL files are read by ``pingap.config.formats`` into the tables their
  TOML would have;
* a directory contributes every ``**/*.toml`` under it (without any: every ``.hcl``,
  else every ``.kdl``, as pingap), in lexical order of the
  relative path (pingap's ``conf/`` layout and its ``?separation=true`` layout
  ``servers/web.toml`` … both load), except hidden files and directories (pingap
  reads those too); a ``?…`` suffix on the path is ignored;
* each file is parsed on its own, so one syntax error names its file and line and the
  other files are still checked; entries are merged per table, and an entry (or a
  ``[basic]`` key) defined in two files is a problem naming both (pingap concatenates
  the files, so it fails there too, with a line number of the concatenation).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pingap.config.formats import FormatError, hcl_document, kdl_document
from pingap.errors import Problem

__all__ = ["SECTIONS", "RawConfig", "RawEntry", "Report", "Source", "merge_sources",
           "merged_document", "read_sources"]

SECTIONS = ("servers", "locations", "upstreams", "plugins", "certificates", "storages")
"""The named-entry sections, in the order they are built and checked."""

INCLUDING_SECTIONS = ("servers", "locations", "upstreams")

FORMATS = (".toml", ".hcl", ".kdl")
"""Config file extensions, in the order a directory is searched (pingap's)."""
"""Sections whose entries may pull storage fragments in with ``includes``."""

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = " (at end of document)"


@dataclass(slots=True)
class Report:
    """Problems found so far: ``errors`` stop the load, ``warnings`` do not."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Source:
    """The bytes of one config file, and its path as given (relative stays relative)."""

    file: str
    data: bytes


@dataclass(slots=True)
class RawEntry:
    """One section entry (or ``[basic]``) as parsed TOML, plus where each key came from.

    ``origins`` maps a key to ``(file, note)`` when it did not come from ``file``: a
    ``[basic]`` key from another file, or a key merged in from a storage by ``includes``.
    """

    section: str
    name: str
    file: str
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """Dotted key path of the entry: ``basic`` or ``<section>.<name>``."""
        return self.section if self.section == "basic" else f"{self.section}.{self.name}"

    def problem(self, key: str, message: str) -> Problem:
        """A Problem about ``key`` (``"weight"``, ``"addrs[1]"``, or ``""`` for the entry)."""
        top = re.split(r"[.\[]", key, maxsplit=1)[0]
        file, note = self.origins.get(top, (self.file, ""))
        return Problem(file, f"{self.path}.{key}" if key else self.path, message + note)


@dataclass(slots=True)
class RawConfig:
    """Every entry of every file, merged; ``basic`` is None when no file had ``[basic]``."""

    basic: RawEntry | None = None
    sections: dict[str, dict[str, RawEntry]] = field(
        default_factory=lambda: {section: {} for section in SECTIONS}
    )
    digest: str = ""


def read_sources(path: str, report: Report) -> list[Source]:
    """The config files ``path`` names, read in load order; problems go to ``report``."""
    base = path.partition("?")[0]  # pingap's "?separation=true&enable_history=true"
    if not base.strip():
        report.errors.append(Problem("", "path", "no configuration path given (-c / PINGAP_CONF)"))
        return []
    root = Path(base)
    if root.is_dir():
        return _read_directory(base, root, report)
    if root.is_file() or base.endswith(FORMATS):
        return [source for source in (_read_file(base, report),) if source is not None]
    report.errors.append(Problem(base, "path", "no such file or directory"))
    return []


def _read_directory(base: str, root: Path, report: Report) -> list[Source]:
    """Every ``.toml`` file; without any, every ``.hcl``; without any, every ``.kdl``
    (pingap's order: one format per directory)."""
    for extension in FORMATS:
        found = sorted(
            relative
            for relative in (item.relative_to(root).as_posix()
                             for item in root.rglob(f"*{extension}"))
            # Hidden entries are skipped: Kubernetes mounts a ConfigMap as symlinks into
            # a "..data" directory, which would otherwise define every entry twice.
            if not any(part.startswith(".") for part in relative.split("/"))
            and (root / relative).is_file()
        )
        if found:
            sources = (_read_file(os.path.join(base, relative), report) for relative in found)
            return [source for source in sources if source is not None]
    report.warnings.append(
        Problem(base, "path", "no .toml, .hcl or .kdl files found; the config is empty")
    )
    return []


def _read_file(file: str, report: Report) -> Source | None:
    try:
        return Source(file, Path(file).read_bytes())
    except FileNotFoundError:
        report.errors.append(Problem(file, "path", "no such file"))
    except OSError as exc:
        report.errors.append(Problem(file, "path", f"cannot read: {exc.strerror or exc}"))
    return None


def _parse(source: Source, report: Report) -> dict[str, Any] | None:
    try:
        text = source.data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        report.errors.append(Problem(source.file, "file", f"not valid UTF-8 (byte {exc.start})"))
        return None
    if source.file.endswith((".hcl", ".kdl")):
        reader = hcl_document if source.file.endswith(".hcl") else kdl_document
        try:
            return reader(text)
        except FormatError as exc:
            report.errors.append(Problem(source.file, "file", str(exc)))
            return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION.search(message)
        if position is not None:
            line, column = position.groups()
            detail = f"{message[: position.start()]} (column {column})"
        elif message.endswith(_AT_END):
            line, detail = str(text.count("\n") + 1), message[: -len(_AT_END)] + " (at end of file)"
        else:
            line, detail = "?", message
        report.errors.append(Problem(source.file, f"line {line}", f"invalid TOML: {detail}"))
        return None


def merge_sources(sources: list[Source], report: Report) -> RawConfig:
    """Parse every source and merge the tables; then expand ``includes``."""
    raw = _merge(sources, report)
    _expand_includes(raw, report)
    return raw


def merged_document(sources: list[Source], report: Report) -> dict[str, Any]:
    """Every source as one TOML document: entries merged by section, ``includes`` kept
    as written (what ``pingap --to-toml`` prints)."""
    raw = _merge(sources, report)
    document: dict[str, Any] = {}
    if raw.basic is not None:
        document["basic"] = raw.basic.values
    for section, entries in raw.sections.items():
        if entries:
            document[section] = {name: entry.values for name, entry in entries.items()}
    return document


def _merge(sources: list[Source], report: Report) -> RawConfig:
    raw = RawConfig()
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.data)
        digest.update(b"\n")
        document = _parse(source, report)
        if document is not None:
            _merge_document(raw, source.file, document, report)
    raw.digest = digest.hexdigest()
    return raw


def _did_you_mean(word: str, candidates: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return "a value"


def _merge_document(raw: RawConfig, file: str, document: dict[str, Any], report: Report) -> None:
    for top, value in document.items():
        if top == "basic":
            _merge_basic(raw, file, value, report)
        elif top in SECTIONS:
            if not isinstance(value, dict):
                report.errors.append(
                    Problem(
                        file, top, f"expected a table of [{top}.<name>] entries, got {_kind(value)}"
                    )
                )
                continue
            for name, table in value.items():
                _merge_entry(raw, file, top, name, table, report)
        else:
            hint = _did_you_mean(top, ("basic", *SECTIONS))
            report.errors.append(Problem(file, top, f"unknown section{hint}"))


def _merge_basic(raw: RawConfig, file: str, value: Any, report: Report) -> None:
    if not isinstance(value, dict):
        report.errors.append(Problem(file, "basic", f"expected a table, got {_kind(value)}"))
        return
    if raw.basic is None:
        raw.basic = RawEntry("basic", "", file)
    basic = raw.basic
    for key, item in value.items():
        if key in basic.values:
            first = basic.origins.get(key, (basic.file, ""))[0]
            report.errors.append(
                Problem(file, f"basic.{key}", f"also set in {first}; set it in one file only")
            )
            continue
        basic.values[key] = item
        if file != basic.file:
            basic.origins[key] = (file, "")


def _merge_entry(
    raw: RawConfig, file: str, section: str, name: str, table: Any, report: Report
) -> None:
    key = f"{section}.{name}"
    if not isinstance(table, dict):
        report.errors.append(Problem(file, key, f"expected a table [{key}], got {_kind(table)}"))
        return
    if not name or any(c in name for c in "/\\\0"):
        report.errors.append(
            Problem(file, key, "invalid name: it must be non-empty, without '/', '\\' or NUL")
        )
        return
    entries = raw.sections[section]
    if name in entries:
        first = entries[name].file
        where = f"in {first} and in {file}" if first != file else f"twice in {file}"
        report.errors.append(Problem(file, key, f"defined {where}; define it once"))
        return
    entries[name] = RawEntry(section, name, file, dict(table))


def _expand_includes(raw: RawConfig, report: Report) -> None:
    """Merge storage fragments into the entries naming them in ``includes`` (spec §2.2)."""
    storages = raw.sections["storages"]
    for section in INCLUDING_SECTIONS:
        for entry in raw.sections[section].values():
            includes = entry.values.get("includes")
            if not includes or not isinstance(includes, list):
                continue  # absent, empty, or a type error reported with the fields
            fragments: list[tuple[RawEntry, dict[str, Any]]] = []
            for index, name in enumerate(includes):
                if not isinstance(name, str):
                    continue  # reported with the fields
                storage = storages.get(name)
                if storage is None:
                    hint = _did_you_mean(name, list(storages))
                    report.errors.append(
                        entry.problem(f"includes[{index}]", f"unknown storage '{name}'{hint}")
                    )
                    continue
                value = storage.values.get("value")
                if not isinstance(value, str):
                    continue  # a missing or mistyped value is reported with the storage
                try:
                    fragments.append((storage, tomllib.loads(value)))
                except tomllib.TOMLDecodeError as exc:
                    report.errors.append(
                        storage.problem(
                            "value", f"not a TOML fragment (included by {entry.path}): {exc}"
                        )
                    )
            _merge_fragments(entry, fragments, report)


def _merge_fragments(
    entry: RawEntry, fragments: list[tuple[RawEntry, dict[str, Any]]], report: Report
) -> None:
    """Included keys overwrite the entry's; two fragments may not set the same key.

    pingap joins the fragments with newlines and parses the result, so a key set by two
    fragments makes the parse fail and pingap silently drops every include.
    """
    owners: dict[str, RawEntry] = {}
    for storage, values in fragments:
        for key in values:
            if key in owners:
                report.errors.append(
                    entry.problem(
                        "includes",
                        f"storages '{owners[key].name}' and '{storage.name}' both set '{key}'",
                    )
                )
                return
            owners[key] = storage
    for storage, values in fragments:
        for key, value in values.items():
            entry.values[key] = value
            entry.origins[key] = (storage.file, f" (included from storage '{storage.name}')")
