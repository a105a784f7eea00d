"""The chaos plan: which faults, when, and which client errors each may cause.

Pure: a seeded `random.Random` in, a list of `ChaosEvent` out, so the same seed gives the
same run. The allowed error classes are the contract a fault is judged by: anything a
client sees outside these classes, or outside the event's window, is an unexpected error
and fails the run. It must never perform a fault (that is `chaos_actions`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RELOAD = "reload"  # gatewayctl reload
SIGHUP = "sighup"  # the same reload, asked by signal
WORKER_KILL = "worker_kill"  # SIGKILL one ready worker; the supervisor respawns it
DRAIN = "drain"  # gatewayctl drain <worker>: replace it, then drain it
BACKEND_RESTART = "backend_restart"  # SIGKILL backend B, start it again after a pause
HEALTH_FLAP = "health_flap"  # backend B answers /healthz 503 for a while, then 200
INVALID_RELOAD = "invalid_reload"  # reload an invalid file: refused, traffic untouched

KINDS: tuple[str, ...] = (
    RELOAD,
    SIGHUP,
    WORKER_KILL,
    DRAIN,
    BACKEND_RESTART,
    HEALTH_FLAP,
    INVALID_RELOAD,
)
# Faults that need backends the runner owns (not available against a gateway it attached to).
NEEDS_OWN_BACKENDS = frozenset({BACKEND_RESTART, HEALTH_FLAP, INVALID_RELOAD})
# Faults during which two sets of workers are alive (the new ones start, the old drain or
# are reaped): the gateway's total memory, fds and threads step up and back by design.
REPLACES_WORKERS = frozenset({RELOAD, SIGHUP, WORKER_KILL, DRAIN})

# Client error classes each fault may cause, and why.
#  - graceful replacement (reload, SIGHUP, drain): a draining worker finishes in-flight work
#    within the drain budget; nothing may fail. UDP is the one exception: the new generation
#    gets new sockets, so replies to a session the old generation owned can be lost.
#  - a SIGKILLed worker takes its open connections with it: resets, early EOFs, and a
#    request that was in flight may time out; UDP sessions it held lose replies.
#  - a SIGKILLed backend: requests in flight to it end in 502 or a cut connection; tunnels
#    (TCP, WebSocket) through it close; UDP sessions pinned to it lose replies until they
#    expire. New requests must not fail (connect failures are retried on the other backend).
#  - a health flap and a refused reload must cause nothing at all.
_CUT = frozenset({"reset", "eof_early", "ws_closed", "udp_lost"})
ALLOWED_ERRORS: dict[str, frozenset[str]] = {
    RELOAD: frozenset({"udp_lost"}),
    SIGHUP: frozenset({"udp_lost"}),
    DRAIN: frozenset({"udp_lost"}),
    WORKER_KILL: _CUT | {"timeout"},
    BACKEND_RESTART: _CUT | {"status_502"},
    HEALTH_FLAP: frozenset(),
    INVALID_RELOAD: frozenset(),
}

# How long after an event ends its consequences may still show (seconds), beyond the
# drain budget for graceful kinds: client timeouts and UDP session expiry.
AFTERMATH_S: dict[str, float] = {
    RELOAD: 2.0,
    SIGHUP: 2.0,
    DRAIN: 2.0,
    WORKER_KILL: 12.0,  # a request in flight on the killed worker times out after 10 s
    BACKEND_RESTART: 6.0,  # the UDP session idle timeout (3 s) plus a margin
    HEALTH_FLAP: 0.0,
    INVALID_RELOAD: 0.0,
}


@dataclass(frozen=True)
class ChaosEvent:
    seq: int
    at_s: float  # seconds from the run's start
    kind: str


def plan(
    kinds: tuple[str, ...], start_s: float, end_s: float, every_s: float, rng: random.Random
) -> list[ChaosEvent]:
    """Events every `every_s` (±20 %, seeded) between start_s and end_s, cycling through
    `kinds` in shuffled rounds so every kind occurs as often as the others."""
    events: list[ChaosEvent] = []
    if not kinds or every_s <= 0:
        return events
    at = start_s
    order: list[str] = []
    while at < end_s:
        if not order:
            order = list(kinds)
            rng.shuffle(order)
        events.append(ChaosEvent(len(events), round(at, 3), order.pop()))
        at += every_s * rng.uniform(0.8, 1.2)
    return events
