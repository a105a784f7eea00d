"""The soak's backend processes (`soak.backend_server`), each serving every backend kind on
its own loopback ports, and the operations chaos performs on them.

Owns start, readiness, SIGKILL and restart on the same ports, and the health-flap signals.
It must never touch the gateway.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools.ports import free_port

KINDS = ("http", "ws", "tcp", "udp")


def _wait_tcp(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"backend port {port} not listening after {timeout_s:g}s")


def _wait_udp(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                s.sendto(b"ping", ("127.0.0.1", port))
                s.recvfrom(65535)
                return
            except OSError:
                time.sleep(0.05)
    raise TimeoutError(f"backend UDP port {port} not echoing after {timeout_s:g}s")


@dataclass
class Backend:
    name: str
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def on_free_ports(cls, name: str, log_dir: Path) -> Backend:
        ports = {
            k: free_port(socket.SOCK_DGRAM if k == "udp" else socket.SOCK_STREAM) for k in KINDS
        }
        return cls(name, log_dir / f"backend-{name}.log", ports)

    def address(self, kind: str) -> str:
        return f"127.0.0.1:{self.ports[kind]}"

    def start(self, timeout_s: float = 15.0) -> None:
        args = [sys.executable, "-m", "soak.backend_server", "--name", self.name]
        for kind, port in self.ports.items():
            args += [f"--{kind}", str(port)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        for kind in ("http", "ws", "tcp"):
            _wait_tcp(self.ports[kind], timeout_s)
        _wait_udp(self.ports["udp"], timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def set_healthy(self, healthy: bool) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGUSR2 if healthy else signal.SIGUSR1)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None
