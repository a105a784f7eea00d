"""Active health: the rise/fall state machine one backend's probe verdicts drive.

Owns the states (`unknown`, `up`, `down`), the transition table and the success /
failure streaks. The supervisor's prober feeds one boolean verdict per probe and
broadcasts the transitions; it must never probe, sleep or read a clock here.

Rules:
- `up` goes `down` after `fall` consecutive failed probes; `down` goes `up` after
  `rise` consecutive passed probes. A verdict against the current state's
  direction resets the other streak.
- `unknown` is the default starting state: no probe has answered yet. It is
  *treated as healthy* (`is_up` is True) so a fresh gateway serves immediately,
  and it resolves on the first verdict, either way: with no history there is
  nothing for rise/fall to smooth. Start in `up` (HAProxy-like: `fall` failures
  needed) or `down` (Envoy-like: `rise` passes needed) by passing `initial`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import GatewayError


class ActiveState(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class _Verdict(enum.Enum):
    """A probe result, classified by whether its streak reached the threshold."""

    PASS = "pass"
    PASS_REACHED = "pass_reached"
    FAIL = "fail"
    FAIL_REACHED = "fail_reached"


_TRANSITIONS: dict[tuple[ActiveState, _Verdict], ActiveState] = {
    (ActiveState.UNKNOWN, _Verdict.PASS_REACHED): ActiveState.UP,
    (ActiveState.UNKNOWN, _Verdict.FAIL_REACHED): ActiveState.DOWN,
    (ActiveState.UP, _Verdict.PASS): ActiveState.UP,
    (ActiveState.UP, _Verdict.PASS_REACHED): ActiveState.UP,
    (ActiveState.UP, _Verdict.FAIL): ActiveState.UP,
    (ActiveState.UP, _Verdict.FAIL_REACHED): ActiveState.DOWN,
    (ActiveState.DOWN, _Verdict.PASS): ActiveState.DOWN,
    (ActiveState.DOWN, _Verdict.PASS_REACHED): ActiveState.UP,
    (ActiveState.DOWN, _Verdict.FAIL): ActiveState.DOWN,
    (ActiveState.DOWN, _Verdict.FAIL_REACHED): ActiveState.DOWN,
}


class HealthTransitionError(GatewayError, RuntimeError):
    """A (state, verdict) pair outside the transition table: a bug, never input."""


@dataclass(frozen=True, slots=True)
class Transition:
    previous: ActiveState
    current: ActiveState


class ActiveHealth:
    """One backend's active-health state. `observe(ok)` returns a Transition on change."""

    __slots__ = ("_fail_streak", "_pass_streak", "fall", "rise", "state")

    def __init__(
        self, *, rise: int = 2, fall: int = 3, initial: ActiveState = ActiveState.UNKNOWN
    ) -> None:
        if rise < 1 or fall < 1:
            raise ValueError(f"rise and fall must be >= 1, got rise={rise} fall={fall}")
        self.rise = rise
        self.fall = fall
        self.state = initial
        self._pass_streak = 0
        self._fail_streak = 0

    @property
    def is_up(self) -> bool:
        """True for `up` and for `unknown` (no verdict yet is treated as healthy)."""
        return self.state is not ActiveState.DOWN

    def observe(self, ok: bool) -> Transition | None:
        unknown = self.state is ActiveState.UNKNOWN
        if ok:
            self._pass_streak += 1
            self._fail_streak = 0
            reached = unknown or self._pass_streak >= self.rise
            verdict = _Verdict.PASS_REACHED if reached else _Verdict.PASS
        else:
            self._fail_streak += 1
            self._pass_streak = 0
            reached = unknown or self._fail_streak >= self.fall
            verdict = _Verdict.FAIL_REACHED if reached else _Verdict.FAIL
        previous = self.state
        current = _TRANSITIONS.get((previous, verdict))
        if current is None:
            raise HealthTransitionError(f"no transition from {previous.value} on {verdict.value}")
        if current is previous:
            return None
        self.state = current
        return Transition(previous, current)


class ActiveHealthBoard:
    """The active-health machines of one backend list, by index."""

    __slots__ = ("machines",)

    def __init__(
        self,
        count: int,
        *,
        rise: int = 2,
        fall: int = 3,
        initial: ActiveState = ActiveState.UNKNOWN,
    ) -> None:
        self.machines = [ActiveHealth(rise=rise, fall=fall, initial=initial) for _ in range(count)]

    def observe(self, index: int, ok: bool) -> Transition | None:
        return self.machines[index].observe(ok)

    def up_flags(self) -> list[bool]:
        return [m.is_up for m in self.machines]

    def states(self) -> Sequence[ActiveState]:
        return [m.state for m in self.machines]
