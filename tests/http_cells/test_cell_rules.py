"""One table of forwarding rules, run against every cell (H1/H2 front x H1/H2 back).

Each row sends a request through the gateway and asserts what the backend saw (hypercorn
reports the request it received) or what the client got back. The same rows run for
every cell, so a rule holds everywhere or the table says where it does not.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

import httpx
import pytest
from asgi_backend import pattern_bytes
from cells import CELL_IDS, CELLS, MAX_BODY_BYTES, Cells

VALID_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def seen(cells: Cells, front: str, back: str, headers: dict[str, str]) -> dict[str, Any]:
    with cells.client(front) as client:
        r = client.get(cells.url(back, "/headers?x=1"), headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["x-backend-says"] == "hi"
    got = r.json()
    got["fields"] = {}
    for name, value in got["headers"]:
        got["fields"].setdefault(name, []).append(value)
    return got


@pytest.mark.parametrize(("front", "back"), CELLS, ids=CELL_IDS)
def test_forwarding_headers(cells: Cells, front: str, back: str) -> None:
    got = seen(
        cells,
        front,
        back,
        {
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-proto": "https",
            "x-forwarded-host": "evil.example",
            "via": "1.0 upstream-proxy",
            "traceparent": VALID_PARENT,
            "tracestate": "vendor=1",
            "x-custom": "kept",
        },
    )
    f = got["fields"]
    assert got["path"] == "/headers?x=1"
    assert got["method"] == "GET"
    assert got["http_version"] == {"h2": "2", "h3": "3"}.get(back, "1.1")
    assert f["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    # The scheme the client used: QUIC is always TLS.
    assert f["x-forwarded-proto"] == ["https" if front == "h3" else "http"]
    assert f["x-forwarded-host"] == [f"127.0.0.1:{cells.ports[back]}"]
    assert f["via"] == ["1.0 upstream-proxy, 1.1 expressgateway"]
    trace = f["traceparent"][0].split("-")
    assert trace[1] == "4bf92f3577b34da6a3ce929d0e0e4736"  # same trace
    assert trace[2] != "00f067aa0ba902b7"  # our own span
    assert f["tracestate"] == ["vendor=1"]
    assert f["x-custom"] == ["kept"]
    # The authority the client used reaches the backend (Host on H1, :authority on H2).
    assert f["host"] == [f"127.0.0.1:{cells.ports[back]}"]


@pytest.mark.parametrize(("front", "back"), CELLS, ids=CELL_IDS)
def test_invalid_traceparent_is_replaced_and_its_tracestate_dropped(
    cells: Cells, front: str, back: str
) -> None:
    f = seen(cells, front, back, {"traceparent": "00-zz", "tracestate": "vendor=1"})["fields"]
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", f["traceparent"][0])
    assert "tracestate" not in f


@pytest.mark.parametrize(("front", "back"), CELLS, ids=CELL_IDS)
def test_te_trailers_reaches_only_multiplexed_backends(cells: Cells, front: str, back: str) -> None:
    f = seen(cells, front, back, {"te": "trailers"})["fields"]
    if back in ("h2", "h3"):
        assert f.get("te") == ["trailers"]
    else:
        assert "te" not in f  # hop-by-hop toward HTTP/1.1


@pytest.mark.parametrize(("front", "back"), CELLS, ids=CELL_IDS)
def test_underscore_header_rejected(cells: Cells, front: str, back: str) -> None:
    with cells.client(front) as client:
        r = client.get(cells.url(back, "/headers"), headers={"x_auth_user": "admin"})
    assert r.status_code == 400


@pytest.mark.parametrize(("front", "back"), CELLS, ids=CELL_IDS)
def test_too_many_headers_is_431(cells: Cells, front: str, back: str) -> None:
    headers = {f"x-h{i}": "v" for i in range(300)}
    with cells.client(front) as client:
        r = client.get(cells.url(back, "/headers"), headers=headers)
    assert r.status_code == 431


@pytest.mark.parametrize(("front", "back"), CELLS, ids=CELL_IDS)
def test_response_status_and_headers_relayed(cells: Cells, front: str, back: str) -> None:
    with cells.client(front) as client:
        r = client.get(cells.url(back, "/status/503"))
        assert r.status_code == 503
        r = client.get(cells.url(back, "/nope"))
        assert r.status_code == 404


@pytest.mark.parametrize(("front", "back"), CELLS, ids=CELL_IDS)
def test_streamed_upload_arrives_whole(cells: Cells, front: str, back: str) -> None:
    payload = pattern_bytes(3 * 1024 * 1024 + 17)

    def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(payload), 100_000):
            yield payload[i : i + 100_000]

    with cells.client(front) as client:
        r = client.post(cells.url(back, "/sha"), content=chunks())
    assert r.status_code == 200
    assert r.json() == {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}


@pytest.mark.parametrize(("front", "back"), CELLS, ids=CELL_IDS)
def test_streamed_download_arrives_whole(cells: Cells, front: str, back: str) -> None:
    n = 5 * 1024 * 1024 + 3
    digest = hashlib.sha256()
    size = 0
    with cells.client(front) as client, client.stream("GET", cells.url(back, f"/bytes/{n}")) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
    assert size == n
    assert digest.hexdigest() == hashlib.sha256(pattern_bytes(n)).hexdigest()


@pytest.mark.parametrize(("front", "back"), CELLS, ids=CELL_IDS)
def test_echo_round_trip(cells: Cells, front: str, back: str) -> None:
    payload = pattern_bytes(700_000)
    with cells.client(front) as client:
        r = client.post(cells.url(back, "/echo"), content=payload)
    assert r.status_code == 200
    assert r.content == payload


@pytest.mark.parametrize(("front", "back"), CELLS, ids=CELL_IDS)
def test_body_over_the_cap_is_413(cells: Cells, front: str, back: str) -> None:
    with cells.client(front) as client:
        declared = client.post(cells.url(back, "/sha"), content=b"x" * (MAX_BODY_BYTES + 1))
        assert declared.status_code == 413

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(MAX_BODY_BYTES // 65536 + 2):
                yield b"y" * 65536

    # A streamed body without a declared length: 413 once it crosses the cap.
    with cells.client(front) as client:
        streamed = client.post(cells.url(back, "/sha"), content=chunks())
    assert streamed.status_code == 413


@pytest.mark.parametrize(("front", "back"), CELLS, ids=CELL_IDS)
def test_head_request_keeps_declared_length(cells: Cells, front: str, back: str) -> None:
    with cells.client(front) as client:
        r = client.head(cells.url(back, "/bytes/1234"))
    assert r.status_code == 200
    assert r.headers["content-length"] == "1234"
    assert r.content == b""


def test_access_log_carries_front_and_back_protocols(cells: Cells) -> None:
    probe = "/headers?access-log-probe"  # a path no other test sends
    with cells.client("h2") as client:
        assert client.get(cells.url("h1", probe)).status_code == 200
    deadline = time.monotonic() + 15  # the access log is flushed once a second
    while time.monotonic() < deadline:
        events = [e for e in cells.gateway.events("access") if e.get("path") == probe]
        if events:
            break
        time.sleep(0.2)
    assert len(events) == 1, f"no single access record for {probe}: {events}"
    assert (events[0]["front"], events[0]["back"]) == ("h2", "h1")
    assert json.dumps(events[0])


def test_metrics_count_exchanges_by_front_and_back_protocol(cells: Cells) -> None:
    with cells.client("h2") as client:
        for _ in range(3):
            assert client.get(cells.url("h1-general", "/headers")).status_code == 200
    with cells.client("h1") as client:
        assert client.get(cells.url("h1-general", "/headers")).status_code == 200
    wanted = {
        'expressgateway_http_exchanges_total{back="h1",front="h2",listener="cell-h1-general"}',
        'expressgateway_http_exchanges_total{back="h1",front="h1",listener="cell-h1-general"}',
    }
    deadline = time.monotonic() + 10  # worker snapshots reach the supervisor each second
    while time.monotonic() < deadline:
        body = httpx.get(f"http://127.0.0.1:{cells.admin_port}/metrics").text
        values = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("expressgateway_http_exchanges_total{")
        }
        if all(values.get(k, 0) >= (3 if 'front="h2"' in k else 1) for k in wanted):
            return
        time.sleep(0.3)
    raise AssertionError(f"missing {wanted} in {values}")


@pytest.mark.parametrize("back", ["h1", "h1-general", "h2"])
def test_grpc_over_http11_is_unimplemented_on_every_h1_path(cells: Cells, back: str) -> None:
    """HTTP/1.1 cannot carry gRPC (its status rides in trailers): the dedicated H1→H1 path
    hands gRPC calls to the core, which answers UNIMPLEMENTED in the headers as the general
    path does (then closes: an answered error ends the connection)."""
    import socket

    call = (
        b"POST /test.Echo/Unary HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc+proto\r\n"
        b"te: trailers\r\ncontent-length: 6\r\n\r\n\x00\x00\x00\x00\x01x"
    )
    with socket.create_connection(("127.0.0.1", cells.ports[back]), timeout=10) as s:
        s.sendall(call)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n")[0].lower() + b"\r\n"
    assert head.startswith(b"http/1.1 200 ") and b"\r\ngrpc-status: 12\r\n" in head, data
    assert b"\r\ncontent-length: 0\r\n" in head, data
