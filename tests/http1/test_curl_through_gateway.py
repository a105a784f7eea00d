"""curl, a real client, through the real gateway (supervisor + worker) to a recording backend."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from gateway_with_backend import GatewayWithBackend

FIVE_MIB = 5 * 1024 * 1024


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", *args],
        capture_output=True,
        check=False,
    )


def test_get_head_and_keepalive_reuse(h1_gateway: GatewayWithBackend) -> None:
    mark = len(h1_gateway.backend.requests)
    urls = [f"{h1_gateway.url}/a", f"{h1_gateway.url}/b?q=1", f"{h1_gateway.url}/c"]
    sink = ["-o", "/dev/null"] * len(urls)
    done = curl("-w", "%{http_code} %{num_connects}\\n", *sink, *urls)
    assert done.returncode == 0, done.stderr
    # One TCP connect for three requests: the gateway kept the client connection alive.
    assert done.stdout.decode().split("\n")[:3] == ["200 1", "200 0", "200 0"]

    get = curl("-i", f"{h1_gateway.url}/plain")
    assert get.returncode == 0, get.stderr
    head, _, body = get.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
    assert b"x-backend: recording" in head.lower()

    head_only = curl("-I", f"{h1_gateway.url}/head")
    assert head_only.returncode == 0, head_only.stderr
    assert head_only.stdout.startswith(b"HTTP/1.1 200")
    assert b"content-length: 2" in head_only.stdout.lower()

    seen = h1_gateway.backend.requests[mark:]
    assert [(r.method, r.target) for r in seen] == [
        (b"GET", b"/a"),
        (b"GET", b"/b?q=1"),
        (b"GET", b"/c"),
        (b"GET", b"/plain"),
        (b"HEAD", b"/head"),
    ]
    forwarded = dict(seen[0].headers)
    assert forwarded[b"x-forwarded-for"] == b"127.0.0.1"
    assert b"traceparent" in forwarded


def test_post_5mib_chunked_upload_and_expect_continue(
    h1_gateway: GatewayWithBackend, tmp_path: Path
) -> None:
    mark = len(h1_gateway.backend.requests)
    payload = os.urandom(FIVE_MIB)
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    url = f"{h1_gateway.url}/upload"

    post = curl("--data-binary", f"@{path}", "-H", "Expect:", url)
    assert post.returncode == 0 and post.stdout == b"ok", post.stderr

    chunked = curl(
        "--data-binary", f"@{path}", "-H", "Transfer-Encoding: chunked", "-H", "Expect:", url
    )
    assert chunked.returncode == 0 and chunked.stdout == b"ok", chunked.stderr

    # curl waits up to --expect100-timeout for "100 Continue" before it sends the body
    # anyway; with 5 s a missing 100 shows up as a slow request (and in -v).
    started = time.monotonic()
    expect = curl(
        "-v",
        "--expect100-timeout",
        "5",
        "--data-binary",
        f"@{path}",
        "-H",
        "Expect: 100-continue",
        url,
    )
    assert expect.returncode == 0 and expect.stdout == b"ok", expect.stderr
    assert b"< HTTP/1.1 100" in expect.stderr
    assert time.monotonic() - started < 4.0

    seen = h1_gateway.backend.requests[mark:]
    assert len(seen) == 3
    for request in seen:
        assert request.method == b"POST"
        assert len(request.body) == FIVE_MIB and request.body == payload
        assert b"expect" not in dict(request.headers)
    # A plain upload keeps its length; a chunked one stays chunked on the next hop.
    assert dict(seen[0].headers)[b"content-length"] == str(FIVE_MIB).encode()
    assert dict(seen[1].headers)[b"transfer-encoding"] == b"chunked"
