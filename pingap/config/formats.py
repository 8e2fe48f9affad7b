"""Read pingap's HCL and KDL config layouts into the document its TOML would be.

pingap reads ``.hcl`` and ``.kdl`` files besides ``.toml`` (its ``pingap-config``
crate). Both have the same top-level blocks (HCL) or nodes (KDL): ``basic``, and
``server``, ``location``, ``upstream``, ``plugin``, ``certificate``, ``storage`` (or the
plural), each named by its first label or argument. A layout is flat (entries refer to
each other by name, as in TOML) or nested, and nested entries are lifted to their
sections as pingap does:

* a ``location`` inside a ``server`` joins the server's ``locations`` list;
* an ``upstream`` inside a ``location`` is defined at top level, and the first one
  becomes the location's ``upstream`` unless the location sets one;
* a ``plugin`` inside a ``location`` is defined at top level and appended to the
  location's ``plugins``; a ``plugin`` or ``certificate`` inside a ``server`` is only
  defined.

KDL values: a child node with one argument is that value, with several an array (always
an array for the list keys below), with only properties a table; a node whose children
are all ``item`` nodes is an array of tables; repeated nodes append; ``null`` is ``""``.
HCL is parsed by ``python-hcl2``, KDL (v1 and v2, as pingap's ``kdl`` crate) by ``ckdl``;
``kdl-py`` locates a KDL syntax error (ckdl reports none). The three are imported by
the reader that needs them: a TOML config (and every worker) never loads them.

Where we differ from pingap: a block or node type it silently ignores inside a server or
location is an error here, like an unknown key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["FormatError", "hcl_document", "kdl_document"]

#: KDL keys that are arrays even when written with one argument (pingap's list)
LIST_KEYS = frozenset({"addrs", "locations", "plugins", "includes", "modules",
                       "proxy_set_headers", "proxy_add_headers", "webhook_notifications"})

SECTIONS = {"server": "servers", "location": "locations", "upstream": "upstreams",
            "plugin": "plugins", "certificate": "certificates", "storage": "storages"}

_BLOCK = "__is_block__"

Table = dict[str, Any]


class FormatError(ValueError):
    """An HCL/KDL document pingap would refuse; the message is for the user."""


def _kind(name: str) -> str | None:
    """``server``/``servers`` -> ``server``; None for anything else."""
    singular = name[:-1] if name.endswith("s") else name
    return singular if singular in SECTIONS or singular == "basic" else None


class _Assembly:
    """The TOML document being built; a name defined twice is an error (as pingap)."""

    def __init__(self) -> None:
        self.document: Table = {}

    def basic(self, table: Table) -> None:
        if "basic" in self.document:
            raise FormatError("basic is defined twice")
        self.document["basic"] = table

    def add(self, kind: str, name: str, table: Table) -> None:
        section = self.document.setdefault(SECTIONS[kind], {})
        if name in section:
            raise FormatError(f"{kind} '{name}' is defined twice")
        section[name] = table

    def server(self, name: str, table: Table, nested: list[tuple[str, str, Any]]) -> None:
        locations = list(table.get("locations", []))
        for kind, child, body in nested:
            if kind == "location":
                if child not in locations:
                    locations.append(child)
                self.location(child, body)
            else:
                self.add(kind, child, body)
        if locations:
            table["locations"] = locations
        self.add("server", name, table)

    def location(self, name: str, parsed: tuple[Table, list[tuple[str, str, Table]]]) -> None:
        table, nested = parsed
        plugins = list(table.get("plugins", []))
        for kind, child, body in nested:
            self.add(kind, child, body)
            if kind == "upstream":
                table.setdefault("upstream", child)
            elif child not in plugins:
                plugins.append(child)
        if plugins:
            table["plugins"] = plugins
        self.add("location", name, table)


# --- HCL ---------------------------------------------------------------------------------


def _hcl_blocks(value: Any) -> list[tuple[str | None, Table]] | None:
    """``[(label, body)]`` when ``value`` is python-hcl2's form of blocks, else None."""
    if not isinstance(value, list) or not value:
        return None
    blocks: list[tuple[str | None, Table]] = []
    for item in value:
        if not isinstance(item, dict):
            return None
        if item.get(_BLOCK):
            blocks.append((None, item))
        elif len(item) == 1:
            label, body = next(iter(item.items()))
            if not (isinstance(body, dict) and body.get(_BLOCK)):
                return None
            blocks.append((label, body))
        else:
            return None
    return blocks


def _hcl_attrs(body: Table) -> Table:
    return {key: value for key, value in body.items()
            if key != _BLOCK and _hcl_blocks(value) is None}


def _hcl_nested(body: Table, allowed: tuple[str, ...], where: str) -> list[tuple[str, str, Any]]:
    nested: list[tuple[str, str, Any]] = []
    for key, value in body.items():
        blocks = _hcl_blocks(value)
        if blocks is None:
            continue
        kind = _kind(key)
        if kind not in allowed:
            raise FormatError(f"a '{key}' block is not allowed inside {where}")
        for label, child in blocks:
            name = _require(label, kind)
            parsed = (_hcl_location(child, f"location '{name}'") if kind == "location"
                      else _hcl_attrs(child))
            nested.append((kind, name, parsed))
    return nested


def _hcl_location(body: Table, where: str) -> tuple[Table, list[tuple[str, str, Table]]]:
    return _hcl_attrs(body), _hcl_nested(body, ("upstream", "plugin"), where)


def _require(label: str | None, kind: str) -> str:
    if not label:
        raise FormatError(f"a {kind} block needs a name label")
    return label


def hcl_document(text: str) -> Table:
    """The TOML document of pingap HCL ``text``; raises FormatError."""
    import hcl2
    from hcl2.utils import SerializationOptions

    options = SerializationOptions(with_comments=False, explicit_blocks=True,
                                   preserve_heredocs=False, strip_string_quotes=True)
    try:
        parsed = hcl2.loads(text, serialization_options=options)
    except Exception as exc:  # lark's parse errors, which carry line and column
        line, column = getattr(exc, "line", None), getattr(exc, "column", None)
        where = f" at line {line}, column {column}" if line is not None else ""
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FormatError(f"invalid HCL{where}: {first}") from None
    assembly = _Assembly()
    for key, value in parsed.items():
        blocks = _hcl_blocks(value)
        if blocks is None:
            continue  # a top-level attribute: pingap reads blocks only
        kind = _kind(key)
        if kind is None:
            raise FormatError(f"unknown HCL block type '{key}'")
        for label, body in blocks:
            _assemble(assembly, kind, label, body, _hcl_attrs, _hcl_location, _hcl_nested)
    return assembly.document


def _assemble(assembly: _Assembly, kind: str, label: str | None, body: Any,
              attrs: Callable[[Any], Table], location: Callable[[Any, str], Any],
              nested: Callable[[Any, tuple[str, ...], str], list[tuple[str, str, Any]]],
              ) -> None:
    if kind == "basic":
        assembly.basic(attrs(body))
        return
    name = _require(label, kind)
    if kind == "server":
        where = f"server '{name}'"
        assembly.server(name, attrs(body), nested(body, ("location", "plugin", "certificate"),
                                                  where))
    elif kind == "location":
        assembly.location(name, location(body, f"location '{name}'"))
    else:
        assembly.add(kind, name, attrs(body))


# --- KDL ---------------------------------------------------------------------------------


def _kdl_value(value: Any) -> Any:
    import ckdl

    if isinstance(value, ckdl.Value):  # a type-annotated value: the annotation is dropped
        value = value.value
    return "" if value is None else value


def _kdl_child_value(node: Any) -> Any:
    if node.children:
        if all(child.name == "item" for child in node.children):
            return [_kdl_table(child) for child in node.children]
        return _kdl_table(node)
    args = [_kdl_value(arg) for arg in node.args]
    props = {key: _kdl_value(value) for key, value in node.properties.items()}
    if not args:
        return props if props else ""
    return args[0] if len(args) == 1 else args


def _kdl_set(table: Table, key: str, value: Any) -> None:
    """pingap's insert-or-append: a repeated list key extends its array."""
    existing = table.get(key)
    if isinstance(existing, list):
        existing.extend(value if isinstance(value, list) else [value])
    else:
        table[key] = value


def _kdl_props(node: Any) -> Table:
    return {key: [_kdl_value(value)] if key in LIST_KEYS else _kdl_value(value)
            for key, value in node.properties.items()}


def _kdl_table(node: Any, skip: tuple[str, ...] = ()) -> Table:
    table = _kdl_props(node)
    for child in node.children:
        if _kdl_kind(child) in skip:
            continue
        # ``location "a" "b"`` in a server and ``plugin "p"`` in a location are the lists
        key = {"location": "locations", "plugin": "plugins"}.get(child.name, child.name)
        if key in LIST_KEYS and not child.children:
            _kdl_set(table, key, [_kdl_value(arg) for arg in child.args])
        else:
            _kdl_set(table, key, _kdl_child_value(child))
    return table


def _kdl_kind(node: Any) -> str | None:
    """The entry kind a child node defines (``upstream "x" {..}``), None for a key.

    pingap: an upstream, location or certificate node defines an entry when it has
    children; a plugin node also when it has properties (``plugin "p" category=".."``).
    """
    kind = _kind(node.name)
    if kind is None or kind == "basic":
        return None
    if node.children or (kind == "plugin" and node.properties):
        return kind
    return None


def _kdl_name(node: Any) -> str:
    if not node.args:
        raise FormatError(f"a '{node.name}' node needs a name as its first argument")
    name = _kdl_value(node.args[0])
    return str(name).lower() if isinstance(name, bool) else str(name)


def _kdl_nested(node: Any, allowed: tuple[str, ...], where: str) -> list[tuple[str, str, Any]]:
    nested: list[tuple[str, str, Any]] = []
    for child in node.children:
        kind = _kdl_kind(child)
        if kind is None:
            continue
        if kind not in allowed:
            raise FormatError(f"a '{child.name}' node is not allowed inside {where}")
        name = _kdl_name(child)
        parsed = (_kdl_location(child, f"location '{name}'") if kind == "location"
                  else _kdl_table(child))
        nested.append((kind, name, parsed))
    return nested


def _kdl_location(node: Any, where: str) -> tuple[Table, list[tuple[str, str, Table]]]:
    entries = ("upstream", "plugin")
    table = _kdl_table(node, skip=entries)
    return table, _kdl_nested(node, entries, where)


def _kdl_attrs_for(kind: str) -> Callable[[Any], Table]:
    skip = ("location", "plugin", "certificate") if kind == "server" else ()
    return lambda node: _kdl_table(node, skip=skip)


def _kdl_position(text: str) -> str:
    """Where the KDL v1 parser ``kdl-py`` stops, as a hint: ``ckdl`` (which also reads
    v2) gives no position. For a v2 document the hint may point at v2-only syntax."""
    import kdl

    try:
        kdl.parse(text)
    except kdl.ParseError as exc:
        position, _, message = str(exc).partition(" parse error: ")
        line, _, column = position.partition(":")
        return f"; read as KDL v1: line {line}, column {column}: {message}"
    return ""


def kdl_document(text: str) -> Table:
    """The TOML document of pingap KDL ``text`` (KDL v1 or v2); raises FormatError."""
    import ckdl

    try:
        parsed = ckdl.parse(text, version="any")
    except ckdl.ParseError:
        raise FormatError(f"invalid KDL (v1 or v2){_kdl_position(text)}") from None
    assembly = _Assembly()
    for node in parsed.nodes:
        kind = _kind(node.name)
        if kind is None:
            raise FormatError(f"unknown KDL node type '{node.name}'")
        label = None if kind == "basic" else _kdl_name(node)
        _assemble(assembly, kind, label, node, _kdl_attrs_for(kind), _kdl_location,
                  _kdl_nested)
    return assembly.document
