"""`make run`: demo backends for every loopback backend in the config, then the gateway.

Reads the config's plan, starts `tools.demo_backends` serving each loopback backend
address (tcp backends echo, h1 backends answer HTTP), runs the supervisor in the
foreground and prints what to curl. Ctrl-C (or SIGTERM to this process) stops everything.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

from gateway.config.address import parse_host_port
from supervisor.cli import read_plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run-demo")
    parser.add_argument("--config", default="conf/default.toml")
    args = parser.parse_args(argv)
    plan = read_plan(args.config)
    backend_args: list[str] = []
    for lst in plan.listeners:
        for b in lst.backends:
            if not parse_host_port(b.id, allow_hostname=True).is_loopback:
                continue
            backend_args += ["--tcp-echo" if b.protocol == "tcp" else "--http", b.id]
    demo = subprocess.Popen([sys.executable, "-m", "tools.demo_backends", *backend_args])
    time.sleep(0.5)
    print("\nExpressGateway is starting. Try:", flush=True)
    for lst in plan.listeners:
        where = f"{lst.socket.host}:{lst.socket.port}"
        if lst.protocol == "h1":
            print(f"  curl -v http://{where}/hello")
        elif lst.protocol == "tcp":
            print(
                f"  printf 'hello\\n' | nc -q1 {lst.socket.host} {lst.socket.port}    # echoed by a tcp backend"
            )
    sock = plan.config.runtime.control_socket
    print(f"  .venv/bin/gatewayctl --socket {sock} status | workers | backends | reload")
    if plan.config.observability.metrics_bind:
        print(f"  curl http://{plan.config.observability.metrics_bind}/metrics")
    print("Ctrl-C stops the gateway and the demo backends.\n", flush=True)
    gateway = subprocess.Popen([sys.executable, "-m", "supervisor.cli", args.config])
    # SIGTERM (a `kill` of `make run`'s process) stops the gateway and the backends as
    # Ctrl-C does, instead of leaving them running without it.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return gateway.wait()
    except KeyboardInterrupt:
        gateway.send_signal(signal.SIGINT)
        return gateway.wait()
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait()


if __name__ == "__main__":
    sys.exit(main())
