"""The gateway under soak, seen from outside: its processes, its control socket, its
admin URL.

`OwnedGateway` starts `expressgateway CONFIG` (from this interpreter's environment) and
stops it; `AttachedGateway` drives one that is already running (bare metal) and never
stops it. Both answer `ctl(...)` through the real `gatewayctl` and name the supervisor's
pid. Nothing here decides what a fault is or judges a sample.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

BIN = Path(sys.executable).parent


class GatewayError(RuntimeError):
    pass


class GatewayHandle:
    """What every gateway under soak answers: gatewayctl calls, status, its supervisor pid."""

    control_socket: str
    admin_url: str

    def ctl(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "gatewayctl"), "--socket", self.control_socket, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def ctl_json(self, *args: str, timeout_s: float = 30.0) -> dict[str, Any]:
        out = self.ctl("--json", *args, timeout_s=timeout_s)
        try:
            answer: dict[str, Any] = json.loads(out.stdout)
        except json.JSONDecodeError:
            raise GatewayError(f"gatewayctl {' '.join(args)}: {out.stderr.strip()!r}")
        return answer

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = self.ctl_json("status")["data"]
        return data

    def workers(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.ctl_json("workers")["data"]
        return data

    def supervisor_pid(self) -> int:
        return int(self.status()["pid"])

    def is_settled(self) -> bool:
        """Running, every worker of the current generation ready, none draining."""
        status = self.status()
        return bool(
            status.get("state") == "running"
            and status.get("workers_ready") == status.get("workers_total")
            and status.get("workers_draining") == 0
        )

    def wait_settled(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.is_settled():
                    return True
            except (OSError, GatewayError, KeyError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.2)
        return False


class OwnedGateway(GatewayHandle):
    def __init__(self, config_path: Path, control_socket: str, metrics_port: int, log_path: Path):
        self.config_path = config_path
        self.control_socket = control_socket
        self.admin_url = f"http://127.0.0.1:{metrics_port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "expressgateway"), str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LOG_LEVEL": "info"},
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise GatewayError(
                    f"gateway exited with {self.proc.returncode}; see {self.log_path}"
                )
            if self.wait_settled(0.5):
                return
        raise GatewayError(f"gateway not ready after {timeout_s:g}s; see {self.log_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        children: list[psutil.Process] = []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for child in children:  # psutil checks the create time: never a recycled pid
            try:
                child.kill()
            except psutil.Error:
                pass
        return self.proc.returncode


class AttachedGateway(GatewayHandle):
    """A gateway someone else started: driven and sampled, never started or stopped."""

    def __init__(self, control_socket: str, admin_url: str):
        self.control_socket = control_socket
        self.admin_url = admin_url.rstrip("/")

    def alive(self) -> bool:
        try:
            return psutil.pid_exists(self.supervisor_pid())
        except (OSError, GatewayError, KeyError, subprocess.TimeoutExpired):
            return False
