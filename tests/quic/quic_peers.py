"""Real QUIC peers for passthrough tests: aioquic HTTP/3 servers, a rebinding UDP relay,
and the gateway config that puts a quic_passthrough listener in front of the servers."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

from running_gateway import ROOT, free_port

from tools.make_certs import CertFiles

HERE = Path(__file__).resolve().parent


class H3Backends:
    """`tests/quic/h3_backend.py` processes named b0, b1, ... on free UDP ports."""

    def __init__(
        self,
        tmp: Path,
        certs: CertFiles,
        count: int,
        *,
        retry: bool = True,
        quic_lb_sids: list[str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.tmp = tmp
        self.ports = [free_port(socket.SOCK_DGRAM) for _ in range(count)]
        self.names = [f"b{i}" for i in range(count)]
        self.logs = [tmp / f"backend-{name}.log" for name in self.names]
        self.procs: list[subprocess.Popen[str]] = []
        for i, (port, name, log) in enumerate(zip(self.ports, self.names, self.logs, strict=True)):
            args = [
                sys.executable, str(HERE / "h3_backend.py"),
                "--host", host, "--port", str(port), "--name", name,
                "--cert", str(certs.cert), "--key", str(certs.key), "--log", str(log),
            ]  # fmt: skip
            if not retry:
                args.append("--no-retry")
            if quic_lb_sids:
                args += ["--quic-lb-sid", quic_lb_sids[i]]
            self.procs.append(subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True))
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", f"backend did not start: {line!r}"

    def kill(self, i: int) -> None:
        self.procs[i].kill()
        self.procs[i].wait()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def served(self) -> dict[str, set[str]]:
        """odcid -> the backends that accepted a connection with it (from their logs)."""
        seen: dict[str, set[str]] = defaultdict(set)
        for log in self.logs:
            if log.exists():
                for line in log.read_text().splitlines():
                    name, odcid = line.split()
                    seen[odcid].add(name)
        return seen


def passthrough_config(
    port: int,
    backends: H3Backends,
    *,
    extra: str = "",
    quic_lb: str = "",
    workers: int = 2,
    admin: int | None = None,
    host: str = "127.0.0.1",
) -> str:
    metrics = f'[observability]\nmetrics_bind = "127.0.0.1:{admin}"\n' if admin else ""
    text = f"""
[runtime]
workers = {workers}
drain_timeout_ms = 2000
{metrics}
[[listeners]]
name = "quicpt"
address = "{host}:{port}"
protocol = "quic_passthrough"
[listeners.balancer]
policy = "maglev"
[listeners.quic_passthrough]
{extra}
{quic_lb}
"""
    for i, p in enumerate(backends.ports):
        text += f'[[listeners.backends]]\naddress = "127.0.0.1:{p}"\n'
        if quic_lb:
            text += f'quic_server_id = "{i + 1:04x}"\n'
    return text


def run_clients(
    port: int,
    certs: CertFiles,
    *,
    connections: int,
    cpu: int | None = None,
    concurrency: int = 10,
    requests: int = 5,
    until_file: Path | None = None,
    pause_ms: int = 0,
    timeout_s: float = 20.0,
    host: str = "127.0.0.1",
) -> subprocess.Popen[str]:
    args = [
        sys.executable, str(HERE / "h3_clients.py"), "--host", host,
        "--port", str(port), "--ca", str(certs.ca_cert),
        "--connections", str(connections), "--requests", str(requests),
        "--concurrency", str(concurrency), "--pause-ms", str(pause_ms), "--timeout-s", str(timeout_s),
    ]  # fmt: skip
    if cpu is not None:
        args += ["--cpu", str(cpu)]
    if until_file is not None:
        args += ["--until-file", str(until_file)]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def results_of(proc: subprocess.Popen[str], timeout_s: float = 120.0) -> list[dict[str, object]]:
    out, _ = proc.communicate(timeout=timeout_s)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class RebindingRelay:
    """A UDP relay between one client and the gateway that can switch the source port it
    sends from (a NAT rebinding): replies on every upstream socket go back to the client."""

    def __init__(self, target: tuple[str, int], cpu: int = 0, source_ip: str = "127.0.0.1") -> None:
        self.target = target
        self.source_ip = source_ip
        # The relay's sending thread is pinned: on loopback its CPU picks the gateway worker.
        self.cpu = cpu
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.address = self.front.getsockname()
        self.client: tuple[str, int] | None = None
        self.ups: list[socket.socket] = [self._upstream()]
        self._stop_r, self._stop_w = os.pipe()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _upstream(self, port: int = 0) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((self.source_ip, port))
        return s

    def rebind(self, port: int = 0) -> int:
        """From now on send from a new source port (`port`, or any); returns it."""
        with self._lock:
            up = self._upstream(port)
            self.ups.append(up)
            return int(up.getsockname()[1])

    def source_ports(self) -> list[int]:
        return [int(s.getsockname()[1]) for s in self.ups]

    def move_to_cpu(self, cpu: int) -> None:
        """From now on send from `cpu` (so the datagrams reach that CPU's worker)."""
        self.cpu = cpu

    def _run(self) -> None:
        pinned = -1
        while True:
            if pinned != self.cpu:
                pinned = self.cpu
                os.sched_setaffinity(0, {pinned})  # this thread only
            with self._lock:
                socks = [self.front, *self.ups]
            ready, _, _ = select.select([*socks, self._stop_r], [], [], 0.2)
            if self._stop_r in ready:
                return
            for s in ready:
                data, addr = s.recvfrom(65535)
                if s is self.front:
                    self.client = addr
                    with self._lock:
                        current = self.ups[-1]
                    current.sendto(data, self.target)
                elif self.client is not None:
                    self.front.sendto(data, self.client)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join()
        for s in [self.front, *self.ups]:
            s.close()
        os.close(self._stop_r)
        os.close(self._stop_w)
