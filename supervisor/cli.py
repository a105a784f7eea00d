"""`expressgateway` command line: run the supervisor, or `--check` a config.

    expressgateway [CONFIG]          # positional path; default conf/default.toml
    expressgateway --check CONFIG    # validate only, list every problem, exit 0/2
    expressgateway --version

An invalid config exits 2 before any socket is opened.
"""

from __future__ import annotations

import argparse
import os
import sys

from gateway.config.plan import GatewayPlan, compile_config
from gateway.errors import EXIT_CONFIG, ConfigError
from gateway.version import VERSION

DEFAULT_CONFIG = "conf/default.toml"


def online_cpus() -> list[int]:
    """CPUs this process may run on (respects the affinity systemd or taskset gave us)."""
    return sorted(os.sched_getaffinity(0))


def read_plan(path: str) -> GatewayPlan:
    """Read, validate and plan the config at `path`; raise ConfigError on any problem."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        from gateway.errors import Problem

        raise ConfigError(
            [Problem("<file>", f"cannot read {path}: {exc.strerror}")], path
        ) from None
    plan = compile_config(data, online_cpus=online_cpus(), source=path)
    from supervisor.preflight import preflight

    preflight(plan, source=path)
    return plan


def _summary(plan: GatewayPlan, path: str) -> str:
    protos = ", ".join(
        f"{lst.name}={lst.protocol}@{lst.socket.host}:{lst.socket.port}" for lst in plan.listeners
    )
    backends = sum(len(lst.backends) for lst in plan.listeners)
    return (
        f"{path}: OK — {len(plan.listeners)} listener(s) [{protos}], {backends} backend(s), "
        f"{len(plan.cpus)} worker(s) on CPUs {plan.cpus}, config {plan.config_hash}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="expressgateway",
        description="L4 + L7 load balancer and reverse proxy (supervisor in the foreground).",
    )
    parser.add_argument(
        "config", nargs="?", default=DEFAULT_CONFIG, help=f"TOML config (default {DEFAULT_CONFIG})"
    )
    parser.add_argument(
        "--check", action="store_true", help="validate the config, print every problem, exit 0 or 2"
    )
    parser.add_argument("--version", action="version", version=f"expressgateway {VERSION}")
    args = parser.parse_args(argv)
    try:
        plan = read_plan(args.config)
    except ConfigError as exc:
        print(
            f"{args.config}: invalid configuration ({len(exc.problems)} problem(s)):",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(problem.render(args.config), file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        print(_summary(plan, args.config))
        return 0
    from supervisor.main import run_supervisor

    return run_supervisor(plan, os.path.abspath(args.config))


if __name__ == "__main__":
    sys.exit(main())
