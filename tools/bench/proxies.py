"""The proxies under test, each started as a one-worker L4 TCP relay on 127.0.0.1.

Owns: writing each proxy's config into a work directory, starting it pinned to the given
CPUs (taskset) in its own process group, waiting until it serves, the CPU seconds of its
process tree (psutil), and stopping it.
Must never: listen anywhere but 127.0.0.1, or leave a process behind (`stop` kills the
whole process group).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tools.build_native import native_modules

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
READY_TIMEOUT_S = 20.0


class ProxyStartError(RuntimeError):
    """A proxy exited or did not serve within READY_TIMEOUT_S; carries its log tail."""


@dataclass
class Proxy:
    name: str
    version: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _seen: dict[int, psutil.Process] = field(default_factory=dict)

    def cpu_s(self) -> float:
        """User + system CPU seconds of the whole live process tree (workers included)."""
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for p in procs:
            # Keep the Process objects: psutil checks pid reuse against their create time.
            p = self._seen.setdefault(p.pid, p)
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    def processes(self) -> int:
        try:
            return 1 + len(psutil.Process(self.proc.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            return 0

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers, if any outlived the master
        except ProcessLookupError:
            pass
        self.proc.wait()


def cpu_list(text: str) -> list[int]:
    """A taskset-style comma list ("0,2") as ints."""
    return [int(c) for c in text.split(",") if c.strip()]


def add_run_arguments(
    parser: argparse.ArgumentParser, names: Sequence[str], *, connections: int, harness: str
) -> None:
    """The options every bench shares: connections, rounds, which proxies, CPU placement."""
    cpus = sorted(os.sched_getaffinity(0))
    parser.add_argument(
        "--connections",
        type=int,
        default=connections,
        help=f"{'keep-alive ' if connections > 8 else 'parallel '}connections (default {connections})",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per proxy (default 3); medians are reported"
    )
    parser.add_argument(
        "--proxies", default=",".join(names), help=f"comma-separated subset of {','.join(names)}"
    )
    parser.add_argument(
        "--proxy-cpus",
        default=str(cpus[0]),
        help="CPUs the proxy runs on (taskset list, default %(default)s)",
    )
    parser.add_argument(
        "--harness-cpus",
        default=",".join(map(str, cpus[1:] or cpus)),
        help=f"CPUs of {harness} (default %(default)s)",
    )


def _spawn(
    argv: list[str],
    cpus: list[int],
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    prefix = ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            prefix + argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _version(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    return (out.stdout + out.stderr).strip().splitlines()[0]


def _wait_listening(proxy: Proxy, processes: int) -> Proxy:
    """Until the port accepts and the expected process count (master + worker) exists."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proxy.proc.poll() is not None:
            raise ProxyStartError(
                f"{proxy.name} exited {proxy.proc.returncode}: {proxy.log_tail()}"
            )
        try:
            socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5).close()
            if proxy.processes() >= processes:
                time.sleep(0.2)
                return proxy
        except OSError:
            pass
        time.sleep(0.05)
    proxy.stop()
    raise ProxyStartError(f"{proxy.name} not serving after {READY_TIMEOUT_S}s: {proxy.log_tail()}")


def _is_built(tree: Path, source: str) -> bool:
    src = tree / source
    return any(src.with_suffix(s).exists() for s in importlib.machinery.EXTENSION_SUFFIXES)


def start_expressgateway_with(
    workdir: Path,
    name: str,
    listener_toml: str,
    cpus: list[int],
    port: int,
    extra_toml: str = "",
    tree: Path = ROOT,
    *,
    access_log: bool = False,
) -> Proxy:
    """One worker serving ``listener_toml`` (a ``[[listeners]]`` table); ready when the
    supervisor sends READY=1 (sd_notify, as under systemd). Every bench starts it this way.
    ``tree``: the source tree to run (another checkout, for an A/B in the same session); its
    packages shadow this venv's through the working directory and PYTHONPATH. ``access_log``:
    the shipped default (on, at LOG_LEVEL info, into the proxy's log file); off otherwise, at
    LOG_LEVEL warning (nginx and HAProxy log nothing either)."""
    config = workdir / f"{name}.toml"
    config.write_text(
        f"""[runtime]
workers = 1
control_socket = "{workdir / f"{name}-control.sock"}"
drain_timeout_ms = 1000
{extra_toml}
[observability]
log_format = "json"
access_log = {"true" if access_log else "false"}

{listener_toml}"""
    )
    notify_path = str(workdir / f"{name}-notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    level = "info" if access_log else "warning"
    env = {**os.environ, "NOTIFY_SOCKET": notify_path, "LOG_LEVEL": level}
    if tree != ROOT:
        env["PYTHONPATH"] = str(tree)
    log_path = workdir / f"{name}.log"
    proc = _spawn([str(BIN / "expressgateway"), str(config)], cpus, log_path, env, tree)
    version = _version([str(BIN / "expressgateway"), "--version"])
    compiled = len([p for p in native_modules() if _is_built(tree, p)])
    version += f" (mypyc: {compiled}/{len(native_modules())} hot modules)"
    proxy = Proxy("expressgateway", version, proc, port, log_path)
    with notify:
        notify.settimeout(READY_TIMEOUT_S)
        try:
            while b"READY=1" not in notify.recv(4096):
                pass
        except TimeoutError:
            proxy.stop()
            raise ProxyStartError(f"no READY=1 after {READY_TIMEOUT_S}s: {proxy.log_tail()}")
    return proxy


def start_expressgateway(workdir: Path, port: int, backend_port: int, cpus: list[int]) -> Proxy:
    """One worker relaying TCP."""
    listener = f"""[[listeners]]
name = "bench"
address = "127.0.0.1:{port}"
protocol = "tcp"
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
"""
    return start_expressgateway_with(workdir, "expressgateway", listener, cpus, port)


def start_haproxy(workdir: Path, port: int, backend_port: int, cpus: list[int]) -> Proxy:
    """`mode tcp`, one thread, default buffers (no splice: `option splice-*` is off by default)."""
    config = workdir / "haproxy.cfg"
    config.write_text(
        f"""global
    nbthread 1
    maxconn 4096

defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s

listen bench
    bind 127.0.0.1:{port}
    server backend 127.0.0.1:{backend_port}
"""
    )
    log_path = workdir / "haproxy.log"
    proc = _spawn(["haproxy", "-db", "-f", str(config)], cpus, log_path)
    proxy = Proxy("haproxy", _version(["haproxy", "-v"]), proc, port, log_path)
    return _wait_listening(proxy, processes=1)


def start_nginx(workdir: Path, port: int, backend_port: int, cpus: list[int]) -> Proxy:
    """`stream` module, one worker process, default proxy_buffer_size (16k)."""
    config = workdir / "nginx.conf"
    config.write_text(
        f"""load_module {NGINX_STREAM_MODULE};
daemon off;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "nginx-error.log"} warn;

events {{
    worker_connections 4096;
}}

stream {{
    server {{
        listen 127.0.0.1:{port};
        proxy_pass 127.0.0.1:{backend_port};
    }}
}}
"""
    )
    log_path = workdir / "nginx.log"
    argv = ["nginx", "-p", str(workdir), "-e", str(workdir / "nginx-error.log"), "-c", str(config)]
    proc = _spawn(argv, cpus, log_path)
    proxy = Proxy("nginx", _version(["nginx", "-v"]), proc, port, log_path)
    return _wait_listening(proxy, processes=2)


Starter = Callable[[Path, int, int, list[int]], Proxy]
PROXIES: dict[str, Starter] = {
    "expressgateway": start_expressgateway,
    "haproxy": start_haproxy,
    "nginx": start_nginx,
}
