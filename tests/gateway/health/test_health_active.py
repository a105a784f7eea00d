"""Active health rise/fall state machine."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.health import ActiveHealth, ActiveHealthBoard, ActiveState, Transition

UP, DOWN, UNKNOWN = ActiveState.UP, ActiveState.DOWN, ActiveState.UNKNOWN


def test_unknown_is_treated_healthy_and_resolves_on_first_verdict() -> None:
    h = ActiveHealth(rise=3, fall=3)
    assert h.state is UNKNOWN and h.is_up
    assert h.observe(True) == Transition(UNKNOWN, UP)
    h2 = ActiveHealth(rise=3, fall=3)
    assert h2.observe(False) == Transition(UNKNOWN, DOWN)
    assert not h2.is_up


def test_fall_consecutive_failures_take_it_down() -> None:
    h = ActiveHealth(rise=2, fall=3, initial=UP)
    assert [h.observe(False), h.observe(False)] == [None, None]
    assert h.observe(True) is None  # a pass resets the failure streak
    assert [h.observe(False), h.observe(False)] == [None, None]
    assert h.observe(False) == Transition(UP, DOWN)
    assert h.observe(False) is None


def test_rise_consecutive_passes_bring_it_up() -> None:
    h = ActiveHealth(rise=2, fall=3, initial=DOWN)
    assert not h.is_up
    assert h.observe(True) is None
    assert h.observe(False) is None  # resets the pass streak
    assert h.observe(True) is None
    assert h.observe(True) == Transition(DOWN, UP)
    assert h.is_up


def test_thresholds_of_one_flip_immediately() -> None:
    h = ActiveHealth(rise=1, fall=1, initial=UP)
    assert h.observe(False) == Transition(UP, DOWN)
    assert h.observe(True) == Transition(DOWN, UP)


def test_invalid_thresholds() -> None:
    with pytest.raises(ValueError):
        ActiveHealth(rise=0, fall=1)


@given(
    st.integers(1, 5),
    st.integers(1, 5),
    st.sampled_from(list(ActiveState)),
    st.lists(st.booleans(), max_size=60),
)
def test_model(rise: int, fall: int, initial: ActiveState, verdicts: list[bool]) -> None:
    """Against a direct model: state follows the streak rule; transitions report real changes."""
    h = ActiveHealth(rise=rise, fall=fall, initial=initial)
    state = initial
    streak_ok = streak_fail = 0
    for ok in verdicts:
        streak_ok, streak_fail = (streak_ok + 1, 0) if ok else (0, streak_fail + 1)
        expected = state
        if state is UNKNOWN:
            expected = UP if ok else DOWN
        elif ok and streak_ok >= rise:
            expected = UP
        elif not ok and streak_fail >= fall:
            expected = DOWN
        got = h.observe(ok)
        assert got == (None if expected is state else Transition(state, expected))
        state = expected
        assert h.state is state


def test_board() -> None:
    board = ActiveHealthBoard(3, rise=1, fall=2)
    assert board.up_flags() == [True, True, True]
    board.observe(1, False)
    board.observe(2, True)
    assert board.up_flags() == [True, False, True]
    assert list(board.states()) == [UNKNOWN, DOWN, UP]
