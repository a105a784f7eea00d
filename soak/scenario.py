"""What a scenario is: a listener the gateway serves, the backend it reaches, and a load
loop a client process runs against it.

A scenario module (one per file in `soak.scenarios`) defines `SCENARIO = Scenario(...)`.
The runner never looks inside `run`; the client process never looks at the gateway. A
scenario must never start processes or talk to anything but its target address.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from soak.recorder import Recorder


@dataclass
class ClientContext:
    """Handed to a scenario's `run` in the client process."""

    host: str
    port: int
    scale: float
    rng: random.Random
    recorder: Recorder
    stop_at: float  # wall-clock time (time.time()) the load must end by
    ca_path: str | None = None  # the CA that signed a TLS listener's certificate

    def count(self, base: int) -> int:
        """`base` tasks/connections at scale 1, scaled, never below 1."""
        return max(1, round(base * self.scale))


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    front: str  # listener protocol: "h1" | "tcp" | "udp" (later "h2", "h3", "quic", ...)
    backend: str  # backend port kind: "http" | "ws" | "tcp" | "udp"
    run: Callable[[ClientContext], Awaitable[None]]
    default: bool = True  # False: only when named (the leak injector for tests)
    tls: bool = False  # the listener terminates TLS (tls, h1s, quic): the runner makes a cert
    backend_protocol: str | None = None  # `protocol` of each backend when not the natural one
    # Extra TOML lines for this scenario's listener, by table: {"http": "header_timeout_ms = 5000"}
    listener_tables: dict[str, str] = field(default_factory=dict)
    # False for an attack whose "latency" is the gateway's reap time: it is bounded by the
    # `not_reaped` error class (judged), and its completions are too sparse for a p99 per
    # window (a short run can have fewer windows with one than a verdict needs). Still plotted.
    latency_judged: bool = True
