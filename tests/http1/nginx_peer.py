"""nginx as the reference reverse proxy the HTTP/1.1 tests compare ExpressGateway with.

Owns: writing an `http {}` config (one server per (listen port, backend port) pair,
HTTP/1.1 keep-alive upstreams), starting nginx in the foreground as root in a temporary
prefix, `nginx -s reload`, and stopping it. Must never listen anywhere but 127.0.0.1 or
leave a process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from running_gateway import wait_for_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_fixed_200_server(listen_port: int) -> str:
    """A server block answering every request with a fixed 200 (the fast backend)."""
    return f"""
    server {{
        listen 127.0.0.1:{listen_port} reuseport backlog=4096;
        location / {{
            return 200 "ok";
        }}
    }}"""


def nginx_http_config(
    prefix: Path, pairs: list[tuple[int, int]], *, workers: int = 1, extra_servers: str = ""
) -> str:
    servers = [extra_servers]
    for i, (listen_port, backend_port) in enumerate(pairs):
        servers.append(
            f"""
    upstream backend_{i} {{
        server 127.0.0.1:{backend_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{listen_port};
        location / {{
            proxy_pass http://backend_{i};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
    }}"""
        )
    return f"""user root;
daemon off;
worker_processes {workers};
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {prefix / "client_body"};
    proxy_temp_path {prefix / "proxy"};
    fastcgi_temp_path {prefix / "fastcgi"};
    uwsgi_temp_path {prefix / "uwsgi"};
    scgi_temp_path {prefix / "scgi"};
    keepalive_requests 100000;
{"".join(servers)}
}}
"""


class NginxProxy:
    def __init__(
        self,
        prefix: Path,
        pairs: list[tuple[int, int]],
        *,
        workers: int = 1,
        fixed_200_ports: tuple[int, ...] = (),
    ) -> None:
        """Proxy each (listen, backend) pair; also answer 200 itself on ``fixed_200_ports``."""
        prefix.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.config = prefix / "nginx.conf"
        extra = "".join(nginx_fixed_200_server(p) for p in fixed_200_ports)
        self.config.write_text(
            nginx_http_config(prefix, pairs, workers=workers, extra_servers=extra)
        )
        self.ports = [p for p, _ in pairs] + list(fixed_200_ports)
        self.proc: subprocess.Popen[bytes] | None = None

    def _argv(self, *extra: str) -> list[str]:
        return [
            NGINX,
            "-p",
            str(self.prefix),
            "-e",
            str(self.prefix / "error.log"),
            "-c",
            str(self.config),
            *extra,
        ]

    def start(self) -> NginxProxy:
        self.proc = subprocess.Popen(
            self._argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for port in self.ports:
            wait_for_port(port)
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited {self.proc.returncode}: {self.error_log()}")
        return self

    def reload(self) -> None:
        subprocess.run(self._argv("-s", "reload"), check=True, capture_output=True, timeout=10)

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # any worker that outlived its master
        except ProcessLookupError:
            pass
