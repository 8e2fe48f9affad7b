"""The admin API's routes and JSON shapes (pingap's ``/api/...``), without I/O.

``route()`` turns one authenticated request into either an answer (reads come from the
config the worker serves) or a ``MasterCall`` the worker forwards to the master (writes,
history, reload). Categories are pingap's URL names (``upstream``, ``location`` …; the
section names ``upstreams`` … work too). Differences from pingap, all additive:
``GET /api/configs/{category}/{name}`` returns one entry with an ``ETag``; a write that
sends ``If-Match`` with that ETag is refused with 409 when the entry changed meanwhile;
a write answers with the reload's result instead of an empty 204. Secrets (private keys,
passwords, secrets) are returned masked; saving the mask back keeps the stored value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from pingap.actions import Respond
from pingap.aes import aes_decrypt, aes_encrypt

CATEGORIES = {"basic": "basic", "server": "servers", "location": "locations",
              "upstream": "upstreams", "plugin": "plugins", "certificate": "certificates",
              "storage": "storages"}
"""pingap's URL category -> config section."""
SECRET_KEYS = frozenset({"tls_key", "password", "secret", "private_key", "authorizations"})
MASK = "********"
MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class MasterCall:
    """A request only the master can answer: ``op`` is save, delete, history or reload."""

    op: str
    category: str = ""
    name: str = ""
    values: dict[str, Any] | None = None
    expected: str | None = None

    def payload(self) -> dict[str, Any]:
        return {"op": self.op, "category": self.category, "name": self.name,
                "values": self.values, "expected": self.expected}


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminRequest:
    method: str
    path: str            # below the admin prefix, starting with "/"
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""


def entry_digest(values: Mapping[str, Any] | None) -> str:
    """A short version stamp of an entry's values (its ETag): two admins editing the
    same version of an entry send the same stamp, and the second write gets 409."""
    if values is None:
        return ""
    text = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def json_response(status: int, value: Any, headers: list[tuple[bytes, bytes]] | None = None
                  ) -> Respond:
    body = json.dumps(value, sort_keys=True, default=str).encode()
    return Respond(status=status, body=body,
                   headers=[(b"Content-Type", b"application/json; charset=utf-8"),
                            (b"Cache-Control", b"no-store"), *(headers or [])])


def error(status: int, message: str, **extra: Any) -> Respond:
    return json_response(status, {"message": message, **extra})


def mask(value: Any) -> Any:
    """``value`` with every secret replaced by ``MASK``."""
    if isinstance(value, dict):
        return {k: (MASK if k in SECRET_KEYS and v not in ("", None, []) else mask(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    return value


def section_of(category: str) -> str | None:
    if category in CATEGORIES:
        return CATEGORIES[category]
    return category if category in CATEGORIES.values() else None


def route(request: AdminRequest, config: Mapping[str, Any],
          digest: Callable[[Mapping[str, Any] | None], str] = entry_digest
          ) -> Respond | MasterCall:
    """Answer (or forward) one authenticated admin API request.

    ``config`` is the served config as pingap's JSON (``{"basic": {...}, "servers":
    {name: {...}}, ...}``); ``digest`` stamps an entry's version (the ETag)."""
    parts = [unquote(p) for p in request.path.split("?", 1)[0].strip("/").split("/")]
    if parts[:1] != ["api"] or len(parts) < 2:
        return error(404, "not found")
    resource, args = parts[1], parts[2:]
    method = request.method
    if resource == "configs":
        return _configs(request, method, args, config, digest)
    if resource == "config-history":
        if method != "GET" or len(args) < 1 or section_of(args[0]) is None:
            return error(400, "Url is invalid(expected /api/config-history/{category}/{name})")
        return MasterCall(op="history", category=section_of(args[0]) or "",
                          name=args[1] if len(args) > 1 else "")
    if resource == "restart" and method == "POST":
        return MasterCall(op="reload")
    if resource == "aes" and method == "POST":
        return _aes(request)
    if resource == "schema" and method == "GET":
        return json_response(200, schema())
    if resource == "route-test" and method == "POST":
        try:
            test = json.loads(request.body or b"{}")
        except ValueError as exc:
            return error(400, f"invalid JSON: {exc}")
        if not isinstance(test, dict) or not isinstance(test.get("url"), str):
            return error(400, 'expected {"server": name, "url": "/path?query", "headers": {}}')
        return MasterCall(op="route-test", values=test)  # answered by the worker
    if resource == "certificates" and method == "GET":
        return MasterCall(op="certificates")  # answered by the worker, from its runtime
    return error(404, "not found")


def _configs(request: AdminRequest, method: str, args: list[str], config: Mapping[str, Any],
             digest: Callable[[Mapping[str, Any] | None], str]) -> Respond | MasterCall:
    if not args or args == [""]:
        if method != "GET":
            return error(405, "method not allowed")
        return json_response(200, mask(config))
    if args[0] == "toml" and method == "GET":
        return json_response(200, {"toml": to_toml(mask(config))})
    if args[0] == "import":
        if method != "POST":
            return error(405, "method not allowed")
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return error(400, "the body must be UTF-8 TOML")
        return MasterCall(op="import", values={"toml": text})
    section = section_of(args[0])
    if section is None:
        return error(400, f"unknown category '{args[0]}'; expected one of: "
                          f"{', '.join(CATEGORIES)}")
    name = args[1] if len(args) > 1 else ""
    if method == "GET":
        current = config.get(section) or {}
        if section == "basic":
            return json_response(200, mask(current), [(b"ETag", _etag(digest(current)))])
        if not name:
            return json_response(200, mask(current))
        entry = current.get(name)
        if entry is None:
            return error(404, f"{section}.{name} not found")
        return json_response(200, mask(entry), [(b"ETag", _etag(digest(entry)))])
    if not name and section != "basic":
        return error(400, "Url is invalid(no name)")
    expected = request.headers.get("if-match")
    expected = expected.strip().strip('"') if expected else None
    if method == "DELETE":
        return MasterCall(op="delete", category=section, name=name, expected=expected)
    if method not in ("POST", "PUT"):
        return error(405, "method not allowed")
    if "application/json" not in request.headers.get("content-type", ""):
        # a cross-site form cannot send JSON without a CORS preflight, which we never allow
        return error(415, "the body must be JSON (Content-Type: application/json)")
    try:
        values = json.loads(request.body or b"null")
    except ValueError as exc:
        return error(400, f"invalid JSON: {exc}")
    if not isinstance(values, dict):
        return error(400, "the body must be a JSON object of the entry's fields")
    return MasterCall(op="save", category=section, name=name, values=values, expected=expected)


def _aes(request: AdminRequest) -> Respond:
    """pingap's ``POST /api/aes``: ``{"category": "encrypt"|other, "key", "data"}`` ->
    ``{"value"}``; any category but ``encrypt`` decrypts, as pingap."""
    try:
        params = json.loads(request.body or b"{}")
    except ValueError as exc:
        return error(400, f"invalid JSON: {exc}")
    if not isinstance(params, dict) or not all(
            isinstance(params.get(k), str) for k in ("category", "key", "data")):
        return error(400, 'expected {"category": "encrypt" or "decrypt", "key": text, '
                     '"data": text}')
    try:
        if params["category"] == "encrypt":
            value = aes_encrypt(params["key"], params["data"])
        else:
            value = aes_decrypt(params["key"], params["data"])
    except ValueError as exc:
        return error(400, str(exc))
    return json_response(200, {"value": value})


def schema() -> dict[str, Any]:
    """Every section's fields (kind and doc line) and every plugin category's options:
    what the UI builds its editors from."""
    from dataclasses import fields

    from pingap.config import model
    from pingap.config.plugin_schema import PLUGIN_SCHEMAS

    classes = {"basic": model.BasicConfig, "servers": model.ServerConfig,
               "locations": model.LocationConfig, "upstreams": model.UpstreamConfig,
               "plugins": model.PluginConfig, "certificates": model.CertificateConfig,
               "storages": model.StorageConfig}
    out: dict[str, Any] = {
        section: {f.name: {"kind": f.metadata["kind"].name.lower(), "doc": f.metadata["doc"]}
                  for f in fields(cls) if "kind" in f.metadata}
        for section, cls in classes.items()}
    out["plugin_categories"] = {category: sorted(spec.options)
                                for category, spec in PLUGIN_SCHEMAS.items()}
    return out


def to_toml(config: Mapping[str, Any]) -> str:
    """The config as one TOML document (the UI's raw view)."""
    import tomlkit

    doc = tomlkit.document()
    for section, value in config.items():
        if value:
            doc[section] = value
    return tomlkit.dumps(doc)


def _etag(value: str) -> bytes:
    return f'"{value}"'.encode()


def unmask(values: Any, stored: Any) -> Any:
    """``values`` with each ``MASK`` replaced by the stored secret it stands for."""
    if isinstance(values, dict):
        stored_map = stored if isinstance(stored, dict) else {}
        return {k: (stored_map.get(k) if v == MASK and k in SECRET_KEYS
                    else unmask(v, stored_map.get(k))) for k, v in values.items()}
    if isinstance(values, list):
        stored_list = stored if isinstance(stored, list) else []
        return [unmask(v, stored_list[i] if i < len(stored_list) else None)
                for i, v in enumerate(values)]
    return values


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminCall(Respond):
    """What the ``admin`` plugin returns for a request under its ``path``: the worker's
    admin service answers it (reading the body, asking the master). Served as is (503)
    by a connection that has no admin service (HTTP/2)."""

    prefix: str
    auth: Any
