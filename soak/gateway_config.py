"""The gateway config a soak run serves: one listener per scenario, two backends each.

Pure text generation. The drain budget, health-check pace and HTTP timeouts are set so a
short run still sees every fault begin and end; the scenarios add their own listener
tables (a slowloris scenario sets its header timeout). `invalid=True` renders the same file
with one backend weight of 0, which the gateway must refuse on reload. It must never write
files or start anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from soak.backends import Backend
from soak.scenario import Scenario
from tools.make_certs import CertFiles

DRAIN_TIMEOUT_MS = 5000

_HEALTH = {
    "http": 'kind = "http"\npath = "/healthz"\ninterval_ms = 500\ntimeout_ms = 400\nrise = 2\nfall = 2',
    "ws": 'kind = "tcp"\ninterval_ms = 1000\ntimeout_ms = 500\nrise = 2\nfall = 2',
    "tcp": 'kind = "tcp"\ninterval_ms = 1000\ntimeout_ms = 500\nrise = 2\nfall = 2',
}


@dataclass(frozen=True)
class GatewayPorts:
    control_socket: str
    metrics_port: int
    listeners: Mapping[str, int]  # scenario name -> listen port


def render(
    scenarios: Sequence[Scenario],
    backends: Sequence[Backend],
    ports: GatewayPorts,
    *,
    workers: str = '"auto"',
    access_log: bool = False,
    invalid: bool = False,
    certs: CertFiles | None = None,
) -> str:
    lines = [
        "# Written by expressgateway-soak for one run.",
        "[runtime]",
        f"workers = {workers}",
        f"drain_timeout_ms = {DRAIN_TIMEOUT_MS}",
        "worker_boot_timeout_ms = 30000",
        f'control_socket = "{ports.control_socket}"',
        "",
        "[observability]",
        f'metrics_bind = "127.0.0.1:{ports.metrics_port}"',
        'log_format = "json"',
        f"access_log = {'true' if access_log else 'false'}",
    ]
    for n, sc in enumerate(scenarios):
        lines += [
            "",
            "[[listeners]]",
            f'name = "{sc.name}"',
            f'address = "127.0.0.1:{ports.listeners[sc.name]}"',
            f'protocol = "{sc.front}"',
        ]
        if sc.backend in _HEALTH:
            lines += ["", "[listeners.health]", _HEALTH[sc.backend]]
        if sc.tls:
            if certs is None:
                raise ValueError(f"scenario {sc.name} needs TLS certificates")
            lines += ["", "[listeners.tls]", f'cert_path = "{certs.cert}"', f'key_path = "{certs.key}"']  # fmt: skip
        for table, body in sc.listener_tables.items():
            lines += ["", f"[listeners.{table}]", body]
        for i, b in enumerate(backends):
            lines += ["", "[[listeners.backends]]", f'address = "{b.address(sc.backend)}"']
            if sc.backend_protocol:
                lines.append(f'protocol = "{sc.backend_protocol}"')
            if invalid and n == 0 and i == 0:
                lines.append("weight = 0")
    return "\n".join(lines) + "\n"
