"""Webhook notifications: pingap's event categories and payloads, without I/O.

``payload()`` builds the JSON body pingap posts for ``webhook_type`` ``wecom`` or
``dingtalk`` (markdown messages) or any other value (the generic form: ``name``,
``level``, ``hostname``, ``ip``, ``category``, ``message``). The master sends them
(``master/webhook.py``), so each event leaves a host once, not once per worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CATEGORIES = ("backend_status", "upstream_status", "lets_encrypt", "tls_validity",
              "parse_certificate_fail", "diff_config", "reload_config", "reload_config_fail",
              "restart", "restart_fail", "service_discover_fail")
"""pingap's ``webhook_notifications`` values."""

LEVELS = ("info", "warn", "error")


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
