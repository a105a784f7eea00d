"""Performing one planned fault and checking that the gateway took it as it should.

Each action is blocking (it runs in a thread of the runner) and returns a `ChaosOutcome`:
when it started and ended, whether the gateway behaved (a reload succeeded, a killed worker
was replaced, an invalid reload was refused with the generation unchanged, a flapping
backend was seen going down and up), and a detail line for the report. It must never
decide which client errors are acceptable (that is `chaos_schedule` and `error_budget`).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from soak import chaos_schedule as cs
from soak.backends import Backend
from soak.gateway_process import GatewayError, GatewayHandle

SETTLE_S = 40.0  # a new generation boots and the old one drains (5 s budget) well within this


@dataclass
class ChaosOutcome:
    seq: int
    kind: str
    planned_s: float
    started_s: float
    ended_s: float
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ChaosEnv:
    gateway: GatewayHandle
    backend: Backend | None  # the one backend faults are done to (None when attached)
    config_path: Path | None
    valid_config: str
    invalid_config: str
    rng: random.Random
    backend_down_s: float
    flap_s: float


def _ready_worker(env: ChaosEnv) -> dict[str, Any]:
    generation = env.gateway.status()["generation"]
    ready = [
        w for w in env.gateway.workers() if w["state"] == "ready" and w["generation"] == generation
    ]
    if not ready:
        raise GatewayError("no ready worker to act on")
    return env.rng.choice(sorted(ready, key=lambda w: w["id"]))


def _reload(env: ChaosEnv) -> tuple[bool, str]:
    out = env.gateway.ctl("reload")
    settled = env.gateway.wait_settled(SETTLE_S)
    return (
        out.returncode == 0 and settled,
        f"gatewayctl reload exit {out.returncode}; settled={settled}",
    )


def _sighup(env: ChaosEnv) -> tuple[bool, str]:
    before = env.gateway.status()["generation"]
    os.kill(env.gateway.supervisor_pid(), signal.SIGHUP)
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        if env.gateway.status()["generation"] > before and env.gateway.is_settled():
            return True, f"generation {before} -> {env.gateway.status()['generation']}"
        time.sleep(0.2)
    return False, f"generation still {before} after {SETTLE_S:g}s"


def _worker_kill(env: ChaosEnv) -> tuple[bool, str]:
    worker = _ready_worker(env)
    os.kill(worker["pid"], signal.SIGKILL)
    time.sleep(0.5)
    settled = env.gateway.wait_settled(SETTLE_S)
    return settled, f"SIGKILL worker {worker['id']} pid {worker['pid']}; replaced={settled}"


def _drain(env: ChaosEnv) -> tuple[bool, str]:
    worker = _ready_worker(env)
    out = env.gateway.ctl("drain", str(worker["id"]))
    settled = env.gateway.wait_settled(SETTLE_S)
    return (
        out.returncode == 0 and settled,
        f"gatewayctl drain {worker['id']} (pid {worker['pid']}) exit {out.returncode}; settled={settled}",
    )


def _backend_restart(env: ChaosEnv) -> tuple[bool, str]:
    assert env.backend is not None
    old = env.backend.pid
    env.backend.kill()
    time.sleep(env.backend_down_s)
    env.backend.start()
    return (
        True,
        f"backend {env.backend.name} pid {old} killed, down {env.backend_down_s:g}s, now pid {env.backend.pid}",
    )


def _health_of(env: ChaosEnv) -> set[str]:
    assert env.backend is not None
    addr = env.backend.address("http")
    rows = env.gateway.ctl_json("backends")["data"]
    return {str(r["health"]) for r in rows if r["backend"] == addr}


def _wait_health(env: ChaosEnv, want: str, timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if _health_of(env) == {want}:
            return round(time.monotonic() - started, 1)
        time.sleep(0.1)
    return None


def _health_flap(env: ChaosEnv) -> tuple[bool, str]:
    assert env.backend is not None
    env.backend.set_healthy(False)
    down_after = _wait_health(env, "down", 10.0)
    time.sleep(env.flap_s)
    env.backend.set_healthy(True)
    up_after = _wait_health(env, "up", 10.0)
    ok = down_after is not None and up_after is not None
    return (
        ok,
        f"backend {env.backend.name} seen down after {down_after}s, up again after {up_after}s",
    )


def _invalid_reload(env: ChaosEnv) -> tuple[bool, str]:
    assert env.config_path is not None
    before = env.gateway.status()["generation"]
    env.config_path.write_text(env.invalid_config)
    try:
        out = env.gateway.ctl("reload")
    finally:
        env.config_path.write_text(env.valid_config)
    after = env.gateway.status()["generation"]
    refused = out.returncode == 1 and "weight" in (out.stdout + out.stderr)
    first = (out.stdout + out.stderr).strip().splitlines()[:1]
    return (
        refused and after == before,
        f"gatewayctl reload exit {out.returncode}, generation {before} -> {after}: {first}",
    )


ACTIONS: dict[str, Callable[[ChaosEnv], tuple[bool, str]]] = {
    cs.RELOAD: _reload,
    cs.SIGHUP: _sighup,
    cs.WORKER_KILL: _worker_kill,
    cs.DRAIN: _drain,
    cs.BACKEND_RESTART: _backend_restart,
    cs.HEALTH_FLAP: _health_flap,
    cs.INVALID_RELOAD: _invalid_reload,
}


def perform(event: cs.ChaosEvent, env: ChaosEnv, clock: Callable[[], float]) -> ChaosOutcome:
    """Do `event`; `clock()` gives seconds since the run started."""
    started = clock()
    try:
        ok, detail = ACTIONS[event.kind](env)
    except (OSError, GatewayError, KeyError, subprocess.TimeoutExpired, TimeoutError) as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return ChaosOutcome(event.seq, event.kind, event.at_s, started, clock(), ok, detail)
