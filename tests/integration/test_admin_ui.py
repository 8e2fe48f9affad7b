"""The admin UI in a real headless Chromium (Selenium): log in, add an upstream and a
location, save, and the proxy serves the new route; a bad regex shows its error beside
the field and changes nothing; roll back from history. The README's screenshots are taken here."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.client import request
from tests.support.configs import per_entry_conf_dir
from tests.support.proc import ROOT, PingapProcess, free_port, port_open, wait_for

DOCS = ROOT / "docs"
"""Where the README's screenshots come from: written there with PINGAP_SCREENSHOTS=1."""
RERENDERS = (StaleElementReferenceException, NoSuchElementException)


def _wait(driver, condition, timeout: float = 60):
    """Wait for ``condition``; the single-page app replaces elements as it re-renders."""
    return WebDriverWait(driver, timeout, ignored_exceptions=RERENDERS).until(condition)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=webdriver.ChromeService("/usr/bin/chromedriver"),
                              options=options)
    yield driver
    driver.quit()


def _served_by(port: int, path: str) -> str | None:
    return request(port, "GET", path).header("X-Backend")


def _set(driver, field: str, value: str) -> None:
    """Type ``value`` into ``field`` until it holds it (a re-render may replace the box)."""
    def typed(d) -> bool:
        box = d.find_element(By.ID, field)
        if box.get_attribute("value") != value:
            box.clear()
            box.send_keys(value)
        return box.get_attribute("value") == value
    _wait(driver, typed, 20)


def _log_in(driver, password: str) -> None:
    """Submit the login form as user "admin"."""
    _set(driver, "user", "admin")
    _set(driver, "password", password)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()


def _save(driver) -> None:
    driver.find_element(By.ID, "save").click()


def _saved(driver) -> None:
    _wait(driver, lambda d: "Saved" in d.find_element(By.ID, "message").text
          or "error" in (d.find_element(By.ID, "message").get_attribute("class") or ""))
    message = driver.find_element(By.ID, "message").text
    assert "Saved" in message, message


def test_admin_ui_edits_and_rolls_back(tmp_path: Path, backends, browser) -> None:
    a, b = backends("a"), backends("b")
    port, admin_port = free_port(), free_port()
    conf = tmp_path / "conf"
    proc = PingapProcess(per_entry_conf_dir(tmp_path, port, a.addr), port, tmp_path,
                         args=["--admin", f"admin:s3cret@127.0.0.1:{admin_port}"])
    driver = browser
    try:
        wait_for(lambda: port_open(admin_port), what="the admin port")
        driver.get(f"http://127.0.0.1:{admin_port}/")
        _log_in(driver, "wrong")
        _wait(driver, lambda d: "refused" in d.find_element(By.ID, "login-error").text)
        _log_in(driver, "s3cret")
        _wait(driver, ec.presence_of_element_located((By.CLASS_NAME, "stat")))
        shots = DOCS if os.environ.get("PINGAP_SCREENSHOTS") else tmp_path

        # a new upstream, a new location, and the server routes to it
        driver.get(f"http://127.0.0.1:{admin_port}/#/edit/upstreams/")
        _set(driver, "entry-name", "api")
        _set(driver, "f-addrs", f'["{b.addr}"]')
        _save(driver)
        _saved(driver)
        driver.get(f"http://127.0.0.1:{admin_port}/#/edit/locations/")
        _set(driver, "entry-name", "api")
        _set(driver, "f-upstream", "api")
        _set(driver, "f-path", "/api")
        _save(driver)
        _saved(driver)
        driver.get(f"http://127.0.0.1:{admin_port}/#/edit/servers/s")
        _wait(driver, lambda d: d.find_element(By.ID, "f-locations").get_attribute("value"))
        _set(driver, "f-locations", '["api", "all"]')
        _save(driver)
        _saved(driver)
        assert _served_by(port, "/api/x") == "b" and _served_by(port, "/x") == "a"

        # the route tester says which location serves a URL, and why the others do not
        driver.get(f"http://127.0.0.1:{admin_port}/#/route")
        _set(driver, "rt-url", "/x")
        driver.find_element(By.CSS_SELECTOR, "#view button").click()
        _wait(driver, lambda d: "all serves it: upstream u" in
              d.find_element(By.ID, "route-result").text)
        assert "path '/x' does not match" in driver.find_element(By.ID, "route-result").text

        # a bad regex: the error sits beside the field, nothing changes
        before = sorted((p.name, p.read_text()) for p in conf.rglob("*.toml"))
        driver.get(f"http://127.0.0.1:{admin_port}/#/edit/locations/api")
        _wait(driver, lambda d: d.find_element(By.ID, "f-path").get_attribute("value") == "/api")
        _set(driver, "f-path", "~^/api/(")
        _save(driver)
        _wait(driver, lambda d: "regex" in d.find_element(By.ID, "e-path").text)
        assert driver.save_screenshot(str(shots / "admin-editor.png"))
        assert sorted((p.name, p.read_text()) for p in conf.rglob("*.toml")) == before
        assert _served_by(port, "/api/x") == "b"

        # edit upstream u, then roll it back from its history
        driver.get(f"http://127.0.0.1:{admin_port}/#/edit/upstreams/u")
        _wait(driver, lambda d: d.find_element(By.ID, "f-addrs").get_attribute("value"))
        _set(driver, "f-addrs", f'["{b.addr}"]')
        _save(driver)
        _saved(driver)
        assert _served_by(port, "/x") == "b"
        driver.find_element(By.ID, "history").click()
        button = _wait(driver, ec.element_to_be_clickable((By.ID, "rollback-0")))
        assert a.addr in driver.find_element(By.CSS_SELECTOR, "pre.diff").text
        button.click()
        _wait(driver, lambda d: d.find_element(By.ID, "f-addrs").get_attribute("value") ==
            f'["{a.addr}"]')
        assert _served_by(port, "/x") == "a"
    finally:
        proc.stop()


def _stat(driver, name: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f"#stat-{name} b").text)


def _number(driver, name: str) -> float | None:
    text = _stat(driver, name).replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None  # not measured yet ("…")


def test_dashboard_is_live(tmp_path: Path, backends, browser) -> None:
    """The dashboard's figures are the host's and refresh by themselves: workers, open
    connections, requests/s, upstream health, certificate expiry."""
    from tests.support.h2_backend import make_certificates

    a = backends("a")
    dead = f"127.0.0.1:{free_port()}"
    certs = make_certificates(tmp_path)
    port, admin_port = free_port(), free_port()
    conf = tmp_path / "pingap.toml"
    conf.write_text(f'[basic]\nthreads = 2\ngrace_period = "1s"\n'
                    f'pid_file = "{tmp_path}/pingap.pid"\n'
                    f'[upstreams.u]\naddrs = ["{a.addr}", "{dead}"]\n'
                    f'health_check = "tcp://u?check_frequency=200ms&failure=1&success=1"\n'
                    f'[locations.all]\nupstream = "u"\n[servers.s]\n'
                    f'addr = "127.0.0.1:{port}"\nlocations = ["all"]\n'
                    f'[certificates.site]\ntls_cert = "{certs["cert"]}"\n'
                    f'tls_key = "{certs["key"]}"\n')
    proc = PingapProcess(conf, port, tmp_path,
                         args=["--admin", f"admin:s3cret@127.0.0.1:{admin_port}"])
    driver = browser
    try:
        wait_for(lambda: port_open(admin_port), what="the admin port")
        driver.get(f"http://127.0.0.1:{admin_port}/")
        _log_in(driver, "s3cret")
        _wait(driver, lambda d: _number(d, "workers") == 2)
        _wait(driver, lambda d: f"{dead} down" in d.find_element(By.ID, "upstream-u").text)
        assert f"{a.addr} up" in driver.find_element(By.ID, "upstream-u").text
        assert "1/2 up" in driver.find_element(By.ID, "upstream-u").text
        assert "days" in driver.find_element(By.ID, "certificate-site").text
        # the page refreshes itself: requests and connections made elsewhere show up
        accepted = _wait(driver, lambda d: _number(d, "accepted"))
        baseline = _wait(driver, lambda d: (n := _number(d, "connections")) is not None
                         and (n,))[0]
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        try:
            _wait(driver, lambda d: (_number(d, "connections") or 0) >= baseline + 5)
        finally:
            for sock in idle:
                sock.close()
        for _ in range(60):
            assert request(port, "GET", "/").status == 200
        _wait(driver, lambda d: (_number(d, "accepted") or 0) >= accepted + 60)
        _wait(driver, lambda d: (_number(d, "rps") or 0) > 0)
        _wait(driver, lambda d: (_number(d, "connections") or 0) < baseline + 5)
        shots = DOCS if os.environ.get("PINGAP_SCREENSHOTS") else tmp_path
        assert driver.save_screenshot(str(shots / "admin-dashboard.png"))
    finally:
        proc.stop()


def test_ui_files_cannot_escape_their_directory(tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    conf = tmp_path / "pingap.toml"
    conf.write_text(f'[basic]\npid_file = "{tmp_path}/pingap.pid"\n[upstreams.u]\n'
                    f'addrs = ["127.0.0.1:1"]\n[locations.all]\nupstream = "u"\n'
                    f'[servers.s]\naddr = "127.0.0.1:{port}"\nlocations = ["all"]\n')
    proc = PingapProcess(conf, port, tmp_path, args=["--admin", f"a:b@127.0.0.1:{admin_port}"])
    try:
        wait_for(lambda: port_open(admin_port), what="the admin port")
        assert request(admin_port, "GET", "/app.js").status == 200
        for path in ("/../../../etc/passwd", "/..%2f..%2fsetup.cfg", "/__init__.py",
                     "/%2e%2e/auth.py", "/web/app.js"):
            assert request(admin_port, "GET", path).status in (400, 404), path
    finally:
        proc.stop()
