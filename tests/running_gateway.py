"""A real gateway under test: supervisor process, demo backends, gatewayctl, free ports.

Tests start the real `expressgateway` supervisor (which starts real worker
processes) on loopback with a config written to a temporary directory, talk to it
with real sockets and the real `gatewayctl`, and always clean up every process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tools.ports import free_port as free_port  # tests import it from here

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def wait_for_udp_echo(port: int, timeout_s: float = 10.0) -> None:
    """Until a datagram sent to 127.0.0.1:`port` is answered."""
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                s.sendto(b"ping", ("127.0.0.1", port))
                s.recvfrom(65535)
                return
            except OSError:  # timeout, or ICMP refused before the backend binds
                time.sleep(0.05)
    raise TimeoutError(f"no UDP echo on 127.0.0.1:{port} after {timeout_s}s")


def tcp_config(
    listen_port: int, backend_ports: list[int], extra: str = "", runtime: str = ""
) -> str:
    backends = "".join(
        f'[[listeners.backends]]\naddress = "127.0.0.1:{p}"\n' for p in backend_ports
    )
    return f"""
[runtime]
drain_timeout_ms = 3000
{runtime}

[[listeners]]
name = "echo"
address = "127.0.0.1:{listen_port}"
protocol = "tcp"
{extra}
{backends}
"""


class DemoBackends:
    """`tools.demo_backends` in a subprocess."""

    def __init__(
        self,
        *,
        tcp_echo: list[int] = (),  # type: ignore[assignment]
        http: list[int] = (),  # type: ignore[assignment]
        delay_ms: float = 0,
        udp_echo: list[int] = (),  # type: ignore[assignment]
    ) -> None:
        args = [sys.executable, "-m", "tools.demo_backends"]
        for p in tcp_echo:
            args += ["--tcp-echo", f"127.0.0.1:{p}"]
        for p in http:
            args += ["--http", f"127.0.0.1:{p}"]
        for p in udp_echo:
            args += ["--udp-echo", f"127.0.0.1:{p}"]
        if delay_ms:
            args += ["--http-delay-ms", str(delay_ms)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.DEVNULL)
        for p in [*tcp_echo, *http]:
            wait_for_port(p)
        for p in udp_echo:
            wait_for_udp_echo(p)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class RunningGateway:
    def __init__(self, tmp: Path, config: str, *, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.control = str(tmp / "ctl.sock")
        self.config_path = tmp / "gateway.toml"
        self.log_path = tmp / "gateway.log"
        self.write_config(config)
        self.env = {**os.environ, "LOG_LEVEL": "info", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, config: str) -> None:
        text = config.replace("@CONTROL@", self.control)
        if "control_socket" not in text:
            text = (
                f'[runtime]\ncontrol_socket = "{self.control}"\n' + text
                if "[runtime]" not in text
                else text.replace("[runtime]", f'[runtime]\ncontrol_socket = "{self.control}"', 1)
            )
        self.config_path.write_text(text)

    def start(self, *, wait_ready: bool = True) -> RunningGateway:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "expressgateway"), str(self.config_path)],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                status = self.ctl_json("status")
                if (
                    status["ok"]
                    and status["data"]["state"] == "running"
                    and status["data"]["workers_ready"] == status["data"]["workers_total"]
                ):
                    return
            except (OSError, ValueError, json.JSONDecodeError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"gateway not ready after {timeout_s}s:\n{self.logs()}")

    def ctl(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "gatewayctl"), "--socket", self.control, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def ctl_json(self, *args: str) -> dict[str, Any]:
        out = self.ctl("--json", *args)
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def workers(self) -> list[dict[str, Any]]:
        return self.ctl_json("workers")["data"]  # type: ignore[no-any-return]

    def ready_workers(self) -> list[dict[str, Any]]:
        return [w for w in self.workers() if w["state"] == "ready"]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.logs().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
        return found

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        pids = [w["pid"] for w in self._workers_quietly()]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in pids:
            if self._is_our_worker(pid):  # pids are reused quickly; never kill a stranger
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()
        return self.proc.returncode

    def _is_our_worker(self, pid: int) -> bool:
        assert self.proc is not None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"workers.main" in argv and str(self.proc.pid).encode() in argv

    def _workers_quietly(self) -> list[dict[str, Any]]:
        try:
            return self.workers()
        except Exception:  # the gateway may already be gone; cleanup must go on
            return []


@contextlib.contextmanager
def on_cpu(cpu: int) -> Iterator[None]:
    """Run the calling thread on `cpu`: loopback connections it opens are steered to the
    worker pinned there (the per-CPU sockets carry SO_INCOMING_CPU)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def echo_once(port: int, payload: bytes, timeout_s: float = 10.0) -> bytes:
    """Open a connection, send `payload`, half-close, read until EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
        return b"".join(chunks)
