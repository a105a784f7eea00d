"""`python -m tools.bench h2`: HTTP/2 front requests/s and CPU per request (h2load),
ExpressGateway vs nginx, same backend, same run.

Rows: ExpressGateway H2→H1 and nginx H2→H1 (both: HTTP/2 from h2load, HTTP/1.1 keep-alive
to an nginx `return 200` backend); ExpressGateway H2→H2 (an h2c backend, nginx `http2`)
when this build has the `h2` back adapter; the floor of the stack (`h2_floor_proxy`: a
trio + `h2` proxy with one task per stream and nothing else, H2→H1 like the first two);
the backend alone (the harness's ceiling). The
client side is HTTP/2 with prior knowledge (h2c) unless --tls, which puts TLS (ALPN h2) in
front of both proxies (ExpressGateway: an `h1s` listener). One worker each, pinned to
--proxy-cpus; h2load (one thread, --connections connections x --streams streams) and the
backend share --harness-cpus; rounds interleave the proxies (see tools/bench/http1.py).
Owns: the HTTP/2 proxies' configs and the h2load run. Must never run under pytest or leave
a process running.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

from gateway.config import features
from tools.bench.http1 import (
    DIRECT,
    UPSTREAM_IDLE_KEEPALIVE,
    Row,
    Sample,
    _row,
    _start_nginx,
    render,
    start_backend,
)
from tools.bench.proxies import (
    BIN,
    Proxy,
    _spawn,
    _version,
    _wait_listening,
    add_run_arguments,
    cpu_list,
    start_expressgateway_with,
)
from tools.make_certs import make_certs
from tools.ports import free_port

FLOOR = "floor-trio-h2"
PROXY_NAMES = ("expressgateway", "nginx", "expressgateway-h2h2", FLOOR)


class H2loadError(RuntimeError):
    """h2load failed, printed no summary, or saw failed requests."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration-s", type=float, default=8.0, help="per round (default 8)")
    parser.add_argument(
        "--streams", type=int, default=10, help="concurrent streams per connection (default 10)"
    )
    parser.add_argument("--tls", action="store_true", help="TLS + ALPN h2 in front of the proxies")
    add_run_arguments(parser, PROXY_NAMES, connections=4, harness="h2load and the backend")


def _tls_files(workdir: Path) -> tuple[Path, Path]:
    files = make_certs(workdir / "certs") if not (workdir / "certs").exists() else None
    certs = workdir / "certs"
    return (files.cert, files.key) if files else (certs / "server.pem", certs / "server.key")


def start_h2_backend(workdir: Path, port: int, cpus: list[int]) -> Proxy:
    """nginx answering every HTTP/2 (h2c) request with a fixed 200 itself."""
    body = f"""    server {{
        listen 127.0.0.1:{port} http2 backlog=4096;
        http2_max_requests 1000000;
        location / {{
            return 200 "ok";
        }}
    }}
"""
    return _start_nginx(workdir, "h2-backend", body, port, cpus)


def start_nginx_h2(
    workdir: Path, port: int, backend_port: int, cpus: list[int], tls: bool
) -> Proxy:
    ssl = ""
    if tls:
        cert, key = _tls_files(workdir)
        ssl = f"ssl_certificate {cert};\n        ssl_certificate_key {key};"
    body = f"""    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive {UPSTREAM_IDLE_KEEPALIVE};
    }}
    server {{
        listen 127.0.0.1:{port} {"ssl " if tls else ""}http2 backlog=4096;
        http2_max_requests 1000000;
        {ssl}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""
    proxy = _start_nginx(workdir, "nginx-h2", body, port, cpus)
    proxy.name = "nginx"
    return proxy


def start_expressgateway_h2(
    workdir: Path, port: int, backend_port: int, cpus: list[int], tls: bool, back: str
) -> Proxy:
    tls_table = ""
    protocol = "h1"
    if tls:
        cert, key = _tls_files(workdir)
        protocol = "h1s"
        tls_table = f'[listeners.tls]\ncert_path = "{cert}"\nkey_path = "{key}"\n'
    listener = f"""[[listeners]]
name = "bench"
address = "127.0.0.1:{port}"
protocol = "{protocol}"
{tls_table}[listeners.http]
pool_max_idle_per_backend = {UPSTREAM_IDLE_KEEPALIVE}
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
protocol = "{back}"
"""
    name = "expressgateway" if back == "h1" else "expressgateway-h2h2"
    proxy = start_expressgateway_with(
        workdir, name, listener, cpus, port, "max_keepalive_requests = 0\n"
    )
    proxy.name = name
    return proxy


def start_floor(workdir: Path, port: int, backend_port: int, cpus: list[int], tls: bool) -> Proxy:
    argv = [str(BIN / "python"), "-m", "tools.bench.h2_floor_proxy", str(port), str(backend_port)]
    if tls:
        argv += [str(p) for p in _tls_files(workdir)]
    proc = _spawn(argv, cpus, workdir / "floor.log")
    version = "trio " + _version(
        [str(BIN / "python"), "-c", "import trio; print(trio.__version__)"]
    )
    version += ", h2 " + _version([str(BIN / "python"), "-c", "import h2; print(h2.__version__)"])
    return _wait_listening(Proxy(FLOOR, version, proc, port, workdir / "floor.log"), processes=1)


def run_h2load(port: int, args: argparse.Namespace) -> tuple[int, float]:
    """(requests, seconds) of one h2load run; raises H2loadError on any failure."""
    scheme = "https" if args.tls else "http"
    argv = [
        "taskset",
        "-c",
        args.harness_cpus,
        "h2load",
        "-t1",
        f"-c{args.connections}",
        f"-m{args.streams}",
        f"-D{args.duration_s:g}",
        f"{scheme}://127.0.0.1:{port}/",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration_s + 60)
    text = out.stdout + out.stderr
    done = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
        text,
    )
    took = re.search(r"finished in ([\d.]+)(ms|s)", text)
    if out.returncode != 0 or done is None or took is None:
        raise H2loadError(f"h2load failed ({out.returncode}):\n{text}")
    if int(done.group(3)) or int(done.group(4)) or "2xx" not in text:
        raise H2loadError(f"h2load saw failures:\n{text}")
    scale = {"ms": 0.001, "s": 1.0}[took.group(2)]
    return int(done.group(2)), float(took.group(1)) * scale


def main(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.proxies.split(",") if n.strip()]
    if "h2" not in features.BUILT_BACKEND_PROTOCOLS:
        names = [n for n in names if n != "expressgateway-h2h2"]
    if args.tls and "h1s" not in features.BUILT_LISTENER_PROTOCOLS:
        raise SystemExit("--tls needs h1s listeners, which this build does not have")
    harness = cpu_list(args.harness_cpus)
    proxy_cpus = cpu_list(args.proxy_cpus)
    with tempfile.TemporaryDirectory(prefix="eg-bench-h2-") as tmp:
        workdir = Path(tmp)
        backend = start_backend(workdir, free_port(), harness)
        h2_backend = start_h2_backend(workdir, free_port(), harness)
        proxies: dict[str, Proxy | None] = {DIRECT: None}
        try:
            for name in names:
                print(f"… starting {name}", flush=True)
                if name == "nginx":
                    proxies[name] = start_nginx_h2(
                        workdir, free_port(), backend.port, proxy_cpus, args.tls
                    )
                elif name == FLOOR:
                    proxies[name] = start_floor(
                        workdir, free_port(), backend.port, proxy_cpus, args.tls
                    )
                else:
                    back = "h2" if name == "expressgateway-h2h2" else "h1"
                    target = h2_backend if back == "h2" else backend
                    proxies[name] = start_expressgateway_h2(
                        workdir, free_port(), target.port, proxy_cpus, args.tls, back
                    )
            rows = _measure(proxies, h2_backend, args)
        finally:
            for proxy in proxies.values():
                if proxy is not None:
                    proxy.stop()
            backend.stop()
            h2_backend.stop()
    text = render(rows, args)
    text = text.replace(
        "HTTP/1.1 proxy: wrk -t1",
        f"HTTP/2 front ({'TLS' if args.tls else 'h2c'}): h2load -t1 -m{args.streams}",
    )
    print(text.replace("wrk+backend", "h2load+backend"))
    return 0


def _measure(
    proxies: dict[str, Proxy | None], h2_backend: Proxy, args: argparse.Namespace
) -> list[Row]:
    samples: dict[str, list[Sample]] = {name: [] for name in proxies}
    tls_direct = args.tls
    for proxy in proxies.values():
        if proxy is None and tls_direct:
            continue
        run_h2load(proxy.port if proxy else h2_backend.port, args)  # warm-up
    for r in range(args.rounds):
        print(f"… round {r + 1}/{args.rounds}", flush=True)
        for name, proxy in proxies.items():
            if proxy is None and tls_direct:
                continue  # the backend speaks h2c only
            cpu_before = proxy.cpu_s() if proxy else 0.0
            requests, wall_s = run_h2load(proxy.port if proxy else h2_backend.port, args)
            cpu_after = proxy.cpu_s() if proxy else 0.0
            samples[name].append(Sample(requests, wall_s, cpu_after - cpu_before))
    nginx = samples.get("nginx")
    return [
        _row(name, proxy.version if proxy else h2_backend.version, samples[name], nginx)
        for name, proxy in proxies.items()
        if samples[name]
    ]
