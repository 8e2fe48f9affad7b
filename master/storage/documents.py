"""Edit config entries inside TOML documents, keeping the user's comments and layout.

A storage holds TOML documents under relative keys (``pingap.toml``, ``servers.toml``,
``servers/web.toml``). This module is bytes in, bytes out: given the documents and the
storage's layout it decides which document holds (or will hold) an entry and returns the
document's new text, edited with ``tomlkit`` so that every comment, blank line and key
order the user wrote survives an admin edit. Keys whose value did not change are left
untouched (their comments included).
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pingap.admin.api import entry_digest
from pingap.config.sources import SECTIONS

if TYPE_CHECKING:
    from tomlkit.items import Table

__all__ = ["CATEGORIES", "Document", "Layout", "Placement", "check_name", "entry_digest",
           "entry_values", "place_entry", "render_entry"]

CATEGORIES = ("basic", *SECTIONS)
"""pingap's config categories: ``basic`` and the named-entry sections."""


class Layout(enum.Enum):
    """pingap's ``ConfigMode``: where a new entry is written."""

    SINGLE = "single"        # one file holds everything
    BY_CATEGORY = "category"  # servers.toml, locations.toml ... (a directory)
    BY_ENTRY = "entry"        # basic.toml, servers/web.toml ... (?separation=true, etcd)


@dataclass(frozen=True, slots=True)
class Document:
    """One TOML document of a storage; ``revision`` is the backend's version of it."""

    key: str
    data: bytes
    revision: int = 0


@dataclass(frozen=True, slots=True)
class Placement:
    """The outcome of an edit: write ``data`` to ``key`` (None: remove the document)."""

    key: str
    data: bytes | None
    previous: Document | None


def check_name(category: str, name: str) -> str | None:
    """Why ``name`` cannot name an entry of ``category`` (None when it can).

    Names become file names in the per-entry layout, so they stay one path segment and
    never start with a dot (the loader skips hidden files)."""
    if category not in CATEGORIES:
        return f"unknown category '{category}'"
    if category == "basic":
        return None
    if not name or name.startswith(".") or any(c in name for c in "/\\\0"):
        return "invalid name: it must be non-empty, not start with '.', and have no '/', '\\' or NUL"
    return None


def _parse(document: Document) -> dict[str, Any]:
    try:
        return tomllib.loads(document.data.decode("utf-8-sig"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def entry_values(documents: Sequence[Document], category: str, name: str
                 ) -> tuple[Document | None, dict[str, Any] | None]:
    """(the document holding the entry, its values) or (None, None)."""
    for document in documents:
        parsed = _parse(document)
        if category == "basic":
            if isinstance(parsed.get("basic"), dict):
                return document, parsed["basic"]
            continue
        table = parsed.get(category)
        if isinstance(table, dict) and isinstance(table.get(name), dict):
            return document, table[name]
    return None, None


def _new_key(layout: Layout, single_key: str, category: str, name: str) -> str:
    if layout is Layout.SINGLE:
        return single_key
    if layout is Layout.BY_CATEGORY or category == "basic":
        return f"{category}.toml"
    return f"{category}/{name}.toml"


def _merge_into(table: Table | Any, values: Mapping[str, Any]) -> None:
    """Make ``table`` hold exactly ``values``; unchanged keys keep their comments."""
    for key in [k for k in table if k not in values]:
        del table[key]
    for key, value in values.items():
        if key in table and _plain(table[key]) == value:
            continue
        table[key] = value


def _plain(item: Any) -> Any:
    return item.unwrap() if hasattr(item, "unwrap") else item


def place_entry(documents: Sequence[Document], layout: Layout, single_key: str,
                category: str, name: str, values: Mapping[str, Any] | None) -> Placement:
    """Write ``values`` as entry ``category.name`` (None: delete it).

    The entry is edited in the document that already holds it, wherever the user put
    it; a new entry goes where ``layout`` puts new entries."""
    # tomlkit (~2 MB) only where an entry is written: a master that is never edited
    # does not load it
    import tomlkit
    from tomlkit.items import Table

    holder, _ = entry_values(documents, category, name)
    if holder is None and values is None:
        raise KeyError(f"{category}.{name}" if category != "basic" else "basic")
    if holder is None:
        key = _new_key(layout, single_key, category, name)
        holder = next((d for d in documents if d.key == key), None)
    else:
        key = holder.key
    text = holder.data.decode("utf-8-sig") if holder is not None else ""
    doc = tomlkit.parse(text)
    if category == "basic":
        if values is None:
            doc.pop("basic", None)
        elif isinstance(doc.get("basic"), Table):
            _merge_into(doc["basic"], values)
        else:
            table = tomlkit.table()
            _merge_into(table, values)
            doc["basic"] = table
    else:
        section = doc.get(category)
        if values is None:
            if isinstance(section, Table):
                section.pop(name, None)
                if not section:
                    doc.pop(category, None)
        else:
            if not isinstance(section, Table):
                section = tomlkit.table(is_super_table=True)
                doc[category] = section
            if isinstance(section.get(name), Table):
                _merge_into(section[name], values)
            else:
                table = tomlkit.table()
                _merge_into(table, values)
                section[name] = table
    out = tomlkit.dumps(doc)
    removed = not out.strip() and layout is Layout.BY_ENTRY and key != single_key
    return Placement(key, None if removed else out.encode(), holder)


def render_entry(category: str, name: str, values: Mapping[str, Any]) -> str:
    """The entry alone as a TOML document (``[servers.web]`` ...)."""
    placement = place_entry((), Layout.BY_ENTRY, "", category, name, values)
    return (placement.data or b"").decode()
