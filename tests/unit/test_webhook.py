"""pingap's webhook payloads: wecom and dingtalk markdown, and the generic JSON form."""

from __future__ import annotations

from pingap.webhook import CATEGORIES, Notification, payload

NOTE = Notification(category="backend_status", level="error",
                    title="Upstream backend status changed",
                    message="upstream u(127.0.0.1:1) becomes unhealthy")


def test_generic_form_has_pingaps_fields() -> None:
    assert payload("", NOTE, "host1", "10.0.0.1") == {
        "name": "pingap", "level": "error", "hostname": "host1", "ip": "10.0.0.1",
        "category": "backend_status", "message": NOTE.message}


def test_wecom_and_dingtalk_are_markdown() -> None:
    wecom = payload("WeCom", NOTE, "host1", "10.0.0.1")
    assert wecom["msgtype"] == "markdown"
    content = wecom["markdown"]["content"]
    assert '<font color="warning">pingap(error)</font>' in content
    assert ">hostname: host1" in content and f">message: {NOTE.message}" in content
    ding = payload("dingtalk", NOTE, "host1", "10.0.0.1")
    assert ding["markdown"]["title"] == "backend_status"
    assert ding["markdown"]["text"] == content


def test_categories_are_pingaps() -> None:
    assert {"backend_status", "reload_config", "reload_config_fail", "lets_encrypt",
            "service_discover_fail"} <= set(CATEGORIES)
