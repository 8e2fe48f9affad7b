"""Webhook notifications: pingap's event categories and payloads, without I/O.

``payload()`` builds the JSON body pingap posts for ``webhook_type`` ``wecom`` or
``dingtalk`` (markdown messages) or any other value (the generic form: ``name``,
``level``, ``hostname``, ``ip``, ``category``, ``message``). The master sends them
(``master/webhook.py``), so each event leaves a host once, not once per worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

CATEGORIES = ("backend_status", "upstream_status", "lets_encrypt", "tls_validity",
              "parse_certificate_fail", "diff_config", "reload_config", "reload_config_fail",
              "restart", "restart_fail", "service_discover_fail")
"""pingap's ``webhook_notifications`` values."""

LEVELS = ("info", "warn", "error")

_SECTIONS = (("servers", "server"), ("locations", "location"), ("upstreams", "upstream"),
             ("plugins", "plugin"), ("certificates", "certificate"), ("storages", "storage"))
_SECRET_FIELDS = frozenset({"tls_key", "secret", "value", "dns_service_url"})


def certificate_parse_failures(problems: Iterable[Any]) -> str:
    """pingap's ``parse_certificate_fail`` message for a config's problems: ``<error>(<name>)``
    for each certificate whose ``tls_cert`` or ``tls_key`` cannot be read, joined by
    ``;``; empty when there is none."""
    found = []
    for problem in problems:
        for field in (".tls_cert", ".tls_key"):
            if problem.key.startswith("certificates.") and problem.key.endswith(field):
                name = problem.key[len("certificates."):-len(field)]
                found.append(f"{field[1:]}: {problem.message}({name})")
    return ";".join(found)


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    category: str
    level: str
    title: str
    message: str


def payload(kind: str, note: Notification, hostname: str, ip: str) -> dict[str, Any]:
    """The JSON body pingap posts for ``note`` to a ``kind`` webhook."""
    color = "warning" if note.level in ("warn", "error") else "comment"
    content = (f' <font color="{color}">pingap({note.level})</font>\n'
               f"                >title: {note.title}\n"
               f"                >hostname: {hostname}\n"
               f"                >ip: {ip}\n"
               f"                >category: {note.category}\n"
               f"                >message: {note.message}")
    kind = kind.lower()
    if kind == "wecom":
        return {"msgtype": "markdown", "markdown": {"content": content}}
    if kind == "dingtalk":
        return {"msgtype": "markdown", "markdown": {"title": note.category, "text": content}}
    return {"name": "pingap", "level": note.level, "hostname": hostname, "ip": ip,
            "category": note.category, "message": note.message}


def _field_lines(entry: Any) -> dict[str, str]:
    """``key = value`` per field of a config entry; secrets shown as a mask, so the diff
    says that they changed without ever carrying them."""
    lines = {}
    for item in fields(entry):
        if item.name == "name":
            continue
        value = getattr(entry, item.name)
        if item.name == "options" and isinstance(value, Mapping):
            for key, option in value.items():
                lines[key] = f"{key} = {option!r}"
            continue
        if item.name in _SECRET_FIELDS and value:
            value = f"<hidden, {len(str(value))} chars>"
        lines[item.name] = f"{item.name} = {value!r}"
    return lines


def config_diff(old: Any, new: Any) -> list[str]:
    """pingap's ``diff_config`` message lines between two loaded configs: ``++ [ADDED]
    server:a``, ``-- [REMOVED] location:b``, and ``[MODIFIED] upstream:c`` followed by
    ``- key = old`` / ``+ key = new`` lines; empty when nothing changed."""
    before: dict[str, Any] = {"basic": old.basic}
    after: dict[str, Any] = {"basic": new.basic}
    for section, label in _SECTIONS:
        before.update((f"{label}:{k}", v) for k, v in getattr(old, section).items())
        after.update((f"{label}:{k}", v) for k, v in getattr(new, section).items())
    added = [f"++ [ADDED] {name}" for name in after if name not in before]
    removed = [f"-- [REMOVED] {name}" for name in before if name not in after]
    modified: list[str] = []
    for name, entry in before.items():
        if name not in after or after[name] == entry:
            continue
        was, now = _field_lines(entry), _field_lines(after[name])
        changed = [key for key in {**was, **now} if was.get(key) != now.get(key)]
        if changed:
            modified.append(f"[MODIFIED] {name}")
            modified.extend(f"- {was[key]}" for key in changed if key in was)
            modified.extend(f"+ {now[key]}" for key in changed if key in now)
    return added + removed + modified
