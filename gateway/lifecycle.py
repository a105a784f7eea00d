"""The worker lifecycle as a transition table, and the restart backoff policy.

States: starting -> ready -> draining -> exited (plus starting -> exited when a
boot fails, and any live state -> exited on a crash). A transition not in the
table is a bug in the caller and raises `IllegalTransition`. Pure: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from gateway.errors import GatewayError


class WorkerState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    EXITED = "exited"


class WorkerInput(StrEnum):
    BECAME_READY = "became_ready"
    DRAIN = "drain"
    EXITED = "exited"


class IllegalTransition(GatewayError, RuntimeError):
    pass


S, I = WorkerState, WorkerInput  # noqa: E741 - table shorthand
TRANSITIONS: dict[tuple[WorkerState, WorkerInput], WorkerState] = {
    (S.STARTING, I.BECAME_READY): S.READY,
    (S.STARTING, I.DRAIN): S.DRAINING,
    (S.STARTING, I.EXITED): S.EXITED,
    (S.READY, I.DRAIN): S.DRAINING,
    (S.READY, I.EXITED): S.EXITED,
    (S.DRAINING, I.DRAIN): S.DRAINING,
    (S.DRAINING, I.BECAME_READY): S.DRAINING,
    (S.DRAINING, I.EXITED): S.EXITED,
    (S.EXITED, I.EXITED): S.EXITED,
}


def next_state(state: WorkerState, event: WorkerInput) -> WorkerState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"worker cannot go from {state.value} on {event.value}") from None


@dataclass(slots=True)
class RestartBackoff:
    """Exponential backoff for respawning a crashed worker on one CPU.

    A worker that ran for at least `stable_after_s` resets the backoff. More than
    `loop_crashes` crashes within `loop_window_s` marks a crash loop (reported in
    `gatewayctl status`; respawning continues at the maximum delay).
    """

    initial_s: float = 0.1
    max_s: float = 10.0
    stable_after_s: float = 10.0
    loop_crashes: int = 5
    loop_window_s: float = 60.0
    _delay_s: float = 0.0
    crashes: list[float] = field(default_factory=list)

    def on_crash(self, *, started_at: float, now: float) -> float:
        """Record a crash; return how long to wait before respawning."""
        if now - started_at >= self.stable_after_s:
            self._delay_s = 0.0
        self.crashes = [t for t in self.crashes if now - t < self.loop_window_s]
        self.crashes.append(now)
        self._delay_s = (
            self.initial_s if self._delay_s == 0.0 else min(self._delay_s * 2, self.max_s)
        )
        return self._delay_s

    def in_crash_loop(self, now: float) -> bool:
        return sum(1 for t in self.crashes if now - t < self.loop_window_s) > self.loop_crashes
