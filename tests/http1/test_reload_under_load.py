"""Twenty reloads under wrk load (32 keep-alive connections): not one request may fail.

The real gateway (2 workers) proxies to an nginx that answers 200 itself; wrk hammers
the gateway while `gatewayctl reload` runs 20 times. The same is done to an nginx proxy
with `nginx -s reload` for comparison (printed, not asserted).
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from h1_gateway_config import h1_gateway_config
from nginx_peer import NginxProxy
from running_gateway import RunningGateway, free_port

RELOADS = 20
CONNECTIONS = 32
# Each connection pauses this long between requests (a wrk Lua `delay`): 32 connections
# stay busy, but the load leaves the 2 cores enough room to boot 20 worker generations.
# It also opens the window in which a drain meets a keep-alive connection between requests.
PAUSE_MS = 5


@dataclass
class WrkResult:
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]
    output: str

    @property
    def failed(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def parse_wrk(output: str) -> WrkResult:
    requests = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if requests is None:
        raise AssertionError(f"wrk printed no summary:\n{output}")
    socket_errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    if errors:
        socket_errors = dict(zip(socket_errors, map(int, errors.groups()), strict=True))
    return WrkResult(
        int(requests.group(1)), int(non_2xx.group(1)) if non_2xx else 0, socket_errors, output
    )


def load_during(port: int, action: Callable[[], None], workdir: Path) -> WrkResult:
    """wrk against ``port`` from 1 s before ``action`` until 1 s after it; SIGINT ends wrk."""
    script = workdir / f"pause-{port}.lua"
    script.write_text(f"function delay()\n  return {PAUSE_MS}\nend\n")
    wrk = subprocess.Popen(
        [
            "nice",  # the load yields to the booting generations, which must get Ready
            "-n",
            "10",
            "wrk",
            "-t2",
            f"-c{CONNECTIONS}",
            "-d120s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(1.0)
        action()
        time.sleep(1.0)
    finally:
        wrk.send_signal(signal.SIGINT)  # wrk stops and prints its summary
        output, _ = wrk.communicate(timeout=20)
    return parse_wrk(output)


@pytest.mark.slow
def test_twenty_reloads_under_wrk_load_fail_no_request(tmp_path: Path) -> None:
    backend_port, gateway_port, nginx_port = free_port(), free_port(), free_port()
    backend = NginxProxy(tmp_path / "backend", [], fixed_200_ports=(backend_port,)).start()
    gateway = RunningGateway(tmp_path, h1_gateway_config([(gateway_port, backend_port)], workers=2))
    nginx = NginxProxy(tmp_path / "proxy", [(nginx_port, backend_port)], workers=2)
    try:
        gateway.start()
        nginx.start()

        def reload_gateway() -> None:
            for _ in range(RELOADS):
                done = gateway.ctl("reload")
                assert done.returncode == 0, done.stdout + done.stderr

        def reload_nginx() -> None:
            for _ in range(RELOADS):
                nginx.reload()
                time.sleep(0.25)  # nginx -s reload only signals; let workers turn over

        started = time.monotonic()
        ours = load_during(gateway_port, reload_gateway, tmp_path)
        our_s = time.monotonic() - started
        started = time.monotonic()
        theirs = load_during(nginx_port, reload_nginx, tmp_path)
        their_s = time.monotonic() - started
        generations = {w["generation"] for w in gateway.ready_workers()}
    finally:
        gateway.stop()
        nginx.stop()
        backend.stop()

    print(f"\n{RELOADS} reloads under wrk -c{CONNECTIONS}:")
    for name, result, wall_s in (("expressgateway", ours, our_s), ("nginx", theirs, their_s)):
        print(
            f"  {name:<15} {result.requests:>8} requests in {wall_s:5.1f}s  "
            f"non-2xx {result.non_2xx}  socket errors {result.socket_errors}"
        )
    assert generations == {RELOADS + 1}
    assert ours.requests > 1000, ours.output
    assert ours.failed == 0, ours.output
