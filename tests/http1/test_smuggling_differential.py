"""Differential request-smuggling suite: the same raw bytes through ExpressGateway and nginx.

Each case gets its own recording backend behind each proxy, so what a backend received
belongs to exactly one case and one proxy. The test asserts our side (the status we
answer, nothing forwarded for a refused head, and never more complete requests at the
backend than 200s the client saw: the extra one would be a smuggled request). The nginx
side is recorded for the comparison table only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
from h1_gateway_config import h1_gateway_config
from nginx_peer import NginxProxy
from recording_backend import RecordingBackend
from running_gateway import RunningGateway, free_port
from smuggling_cases import CASES, Case

STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
IDLE_S = 0.8
TOTAL_S = 4.0


async def exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw``, then read until EOF, TOTAL_S, or IDLE_S without a byte."""
    received = bytearray()
    with trio.move_on_after(TOTAL_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            try:
                await stream.send_all(raw)
                while True:
                    with trio.move_on_after(IDLE_S) as idle:
                        data = await stream.receive_some(65536)
                    if idle.cancelled_caught or not data:
                        break
                    received += data
            except trio.BrokenResourceError:
                pass  # the proxy may close while we still send a long head
    return bytes(received)


def statuses(response: bytes) -> list[int]:
    return [int(s) for s in STATUS_LINE.findall(response)]


def backend_view(backend: RecordingBackend) -> str:
    """A short description of what one backend received, for the table."""
    if not backend.connections:
        return "nothing"
    targets = [r.target.decode("latin-1") for r in backend.requests]
    text = f"{backend.raw_bytes}B reqs={targets}"
    if backend.errors:
        text += " ERR"
    return text


def failures_for(case: Case, response: bytes, backend: RecordingBackend) -> list[str]:
    seen = statuses(response)
    problems = []
    if not seen or seen[0] != case.status:
        problems.append(f"answered {seen}, expected first {case.status}")
    if case.rejected_before_forwarding and backend.raw_bytes:
        problems.append(f"a refused head still reached the backend: {backend.raw_bytes} bytes")
    backend_requests = len(backend.requests)
    if backend_requests > seen.count(200):
        problems.append(
            f"SMUGGLED: backend completed {backend_requests} requests, client saw "
            f"{seen.count(200)} 200s: {[r.target for r in backend.requests]}"
        )
    if backend.errors and case.rejected_before_forwarding is False and case.status == 200:
        problems.append(f"we forwarded bytes a strict parser refused: {backend.errors}")
    first = backend.requests[0] if backend.requests else None
    # RFC 9112 §3.2.2: the target's authority wins, and the next hop must agree.
    forwarded_as = (first.target, dict(first.headers).get(b"host")) if first else None
    if case.name == "absolute_form" and forwarded_as != (b"/abs", b"example.test"):
        problems.append(f"absolute-form forwarded as {forwarded_as!r}")
    if case.name == "upgrade_h2c" and first is not None:
        names = {n.lower() for n, _ in first.headers}
        if names & {b"upgrade", b"http2-settings"}:
            problems.append(f"declined h2c upgrade still forwarded its fields: {names}")
    return problems


@pytest.mark.root
@pytest.mark.parametrize("h1_fast_path", ["true", "false"], ids=["fast-path", "general-core"])
async def test_smuggling_differential_against_nginx(tmp_path: Path, h1_fast_path: str) -> None:
    ours = [RecordingBackend() for _ in CASES]
    theirs = [RecordingBackend() for _ in CASES]
    async with trio.open_nursery() as nursery:
        for backend in [*ours, *theirs]:
            await nursery.start(backend.serve)
        our_pairs = [(free_port(), b.port) for b in ours]
        nginx_pairs = [(free_port(), b.port) for b in theirs]
        (tmp_path / "eg").mkdir()
        gateway = RunningGateway(
            tmp_path / "eg",
            h1_gateway_config(
                our_pairs, http=f"header_timeout_ms = 2000\nh1_fast_path = {h1_fast_path}"
            ),
        )
        nginx = NginxProxy(tmp_path / "nginx", nginx_pairs)
        try:
            await trio.to_thread.run_sync(gateway.start)
            await trio.to_thread.run_sync(nginx.start)
            responses: dict[tuple[str, int], bytes] = {}

            async def run(case_index: int, pairs: list[tuple[int, int]], key: str) -> None:
                responses[(key, case_index)] = await exchange(
                    pairs[case_index][0], CASES[case_index].raw
                )

            async with trio.open_nursery() as clients:
                for i in range(len(CASES)):
                    clients.start_soon(run, i, our_pairs, "eg")
                    clients.start_soon(run, i, nginx_pairs, "nginx")
            await trio.sleep(0.3)  # let the backends finish reading what was forwarded
        finally:
            await trio.to_thread.run_sync(gateway.stop)
            await trio.to_thread.run_sync(nginx.stop)
        nursery.cancel_scope.cancel()

    rows = [("case", "expressgateway", "backend via us", "nginx", "backend via nginx")]
    failures = []
    for i, case in enumerate(CASES):
        ours_seen, nginx_seen = statuses(responses[("eg", i)]), statuses(responses[("nginx", i)])
        rows.append(
            (
                case.name,
                str(ours_seen),
                backend_view(ours[i]),
                str(nginx_seen),
                backend_view(theirs[i]),
            )
        )
        failures += [f"{case.name}: {p}" for p in failures_for(case, responses[("eg", i)], ours[i])]
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    print()
    for row in rows:
        print("  ".join(cell.ljust(widths[c])[:70] for c, cell in enumerate(row)))
    assert not failures, "\n".join(failures)
