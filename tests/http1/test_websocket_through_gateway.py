"""WebSocket through the real gateway: the `websockets` library on both ends, and Autobahn.

The Autobahn cases run through kosoku (Autobahn's case files on Python 3), once straight
against the echo backend and once through the gateway, at the same time: the gateway must
add no failure. 9.* (limits/performance, 100 s each) and 12.*/13.* (permessage-deflate,
which we do not negotiate end to end) are excluded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from h1_gateway_config import h1_gateway_config
from running_gateway import BIN, RunningGateway, free_port, wait_for_port
from websockets.sync.client import connect

HERE = Path(__file__).resolve().parent
KOSOKU = BIN / "kosoku"
EXCLUDED = ["9.*", "12.*", "13.*"]


@pytest.fixture(scope="module")
def ws_echo_port() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "ws_echo_backend.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def ws_gateway_port(ws_echo_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    gateway = RunningGateway(
        tmp_path_factory.mktemp("wsgw"), h1_gateway_config([(port, ws_echo_port)])
    )
    try:
        gateway.start()
        yield port
    finally:
        gateway.stop()


def test_websockets_client_echo_through_gateway(ws_gateway_port: int) -> None:
    big = os.urandom(1024 * 1024)
    with connect(f"ws://127.0.0.1:{ws_gateway_port}/echo", max_size=None) as ws:
        assert ws.response.status_code == 101
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=5) == b"\x00\x01binary"
        ws.send(big)
        assert ws.recv(timeout=10) == big
        ws.send(["frag", "mented"])  # one message in several frames
        assert ws.recv(timeout=5) == "fragmented"
        ws.ping(b"p").wait(timeout=5)
    assert ws.close_code == 1000


def _run_kosoku(port: int, outdir: Path) -> subprocess.Popen[bytes]:
    args = [str(KOSOKU), "-o", str(outdir)]
    for pattern in EXCLUDED:
        args += ["-x", pattern]
    return subprocess.Popen(
        [*args, f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _results(outdir: Path) -> dict[str, dict[str, object]]:
    index = json.loads((outdir / "index.json").read_text())
    (agent,) = index.values()
    return agent  # type: ignore[no-any-return]


def _failed(results: dict[str, dict[str, object]]) -> dict[str, str]:
    ok = {"OK", "NON-STRICT", "INFORMATIONAL"}
    return {
        case: f"{r['behavior']}/{r['behaviorClose']}"
        for case, r in results.items()
        if r["behavior"] not in ok or r["behaviorClose"] not in ok
    }


@pytest.mark.slow
def test_autobahn_cases_through_gateway(
    ws_gateway_port: int, ws_echo_port: int, tmp_path: Path
) -> None:
    direct = _run_kosoku(ws_echo_port, tmp_path / "direct")
    proxied = _run_kosoku(ws_gateway_port, tmp_path / "proxied")
    direct.communicate(timeout=120)
    proxied_out, _ = proxied.communicate(timeout=120)
    assert direct.returncode is not None
    direct_results = _results(tmp_path / "direct")
    proxied_results = _results(tmp_path / "proxied")
    assert len(proxied_results) > 200, proxied_out.decode(errors="replace")[-2000:]
    assert set(proxied_results) == set(direct_results)
    baseline_failures = _failed(direct_results)
    ours = _failed(proxied_results)
    print(f"\nautobahn: {len(proxied_results)} cases, excluded {EXCLUDED}")
    print(f"  backend alone failed: {baseline_failures or 'none'}")
    print(f"  through the gateway failed: {ours or 'none'}")
    added = {case: why for case, why in ours.items() if case not in baseline_failures}
    assert not added, f"cases the gateway broke: {added}"
