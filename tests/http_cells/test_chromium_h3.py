"""A real browser over HTTP/3 through the ``quic`` listener: headless Chromium (Debian's
chromium + chromedriver, driven by selenium) opens a page and fetches a 10 MiB object from
the gateway, which terminates QUIC + HTTP/3 and proxies to an HTTP/1.1 backend (hypercorn).

Chromium only speaks HTTP/3 to an origin it is told to (``--origin-to-force-quic-on``; its
Alt-Svc path refuses a test certificate, see conformance-kit.md §3) and trusts the test
certificate by its public key's hash (``--ignore-certificate-errors-spki-list``). The page's
own Resource Timing (``nextHopProtocol``) says which protocol carried each load.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgi_backend import pattern_bytes
from cells import hypercorn_backend
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from running_gateway import RunningGateway, free_port

from tools.make_certs import make_certs

SIZE = 10 * 1024 * 1024

# Fetch the object, hash it in the page (WebCrypto: a secure context, which https is), and
# read back the protocol each load went over.
FETCH = """
const done = arguments[arguments.length - 1];
(async () => {
  const url = new URL(arguments[0], location.href).href;
  const response = await fetch(url, {cache: "no-store"});
  const body = await response.arrayBuffer();
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
  const entry = performance.getEntriesByName(url).pop();
  return {
    status: response.status,
    length: body.byteLength,
    sha256: Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""),
    fetch_protocol: entry ? entry.nextHopProtocol : null,
    page_protocol: performance.getEntriesByType("navigation")[0].nextHopProtocol,
  };
})().then(done, (err) => done({error: String(err)}));
"""


def _spki_sha256(cert_path: Path) -> str:
    """base64 SHA-256 of the leaf's SubjectPublicKeyInfo (the chain file starts with it)."""
    leaf = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def quic_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningGateway, int, Path]]:
    tmp = tmp_path_factory.mktemp("chromium")
    certs = make_certs(tmp / "certs")
    backend_port, quic_port = free_port(), free_port()
    config = f"""
[runtime]
workers = 2

[observability]
log_format = "json"

[[listeners]]
name = "web-h3"
address = "127.0.0.1:{quic_port}"
protocol = "quic"
[listeners.tls]
cert_path = "{certs.cert}"
key_path = "{certs.key}"
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
protocol = "h1"
"""
    with hypercorn_backend(backend_port):
        gw = RunningGateway(tmp, config)
        try:
            gw.start()
            yield gw, quic_port, certs.cert
        finally:
            gw.stop()


def _chromium(port: int, cert: Path, profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless",
        "--no-sandbox",  # the tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--origin-to-force-quic-on=127.0.0.1:{port}",
        f"--ignore-certificate-errors-spki-list={_spki_sha256(cert)}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(15)
    driver.set_script_timeout(20)
    return driver


def _access(gw: RunningGateway, path: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5  # the access log is flushed every 250 ms
    while True:
        events = [e for e in gw.events("access") if e.get("path") == path]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def test_chromium_loads_a_page_and_10_mib_over_h3(
    quic_gateway: tuple[RunningGateway, int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page and the fetched object both arrive over h3 (the page's Resource Timing and
    the gateway's access log agree), the object whole: its SHA-256, computed in the page,
    is the backend's pattern's."""
    gw, port, cert = quic_gateway
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must not look online
    driver = _chromium(port, cert, tmp_path / "profile")
    try:
        driver.get(f"https://127.0.0.1:{port}/page")
        assert driver.title == "cells", driver.page_source[:500]
        got = driver.execute_async_script(FETCH, f"/bytes/{SIZE}")
    finally:
        driver.quit()
    assert got == {
        "status": 200,
        "length": SIZE,
        "sha256": hashlib.sha256(pattern_bytes(SIZE)).hexdigest(),
        "fetch_protocol": "h3",
        "page_protocol": "h3",
    }
    for path, size in (("/page", None), (f"/bytes/{SIZE}", SIZE)):
        lines = _access(gw, path)
        assert lines, f"no access line for {path}"
        assert [(e["listener"], e["front"], e["back"], e["status"]) for e in lines] == [
            ("web-h3", "h3", "h1", 200)
        ], lines
        if size is not None:
            assert lines[0]["bytes_out"] == size, lines
