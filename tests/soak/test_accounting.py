"""The pure accounting around a run: latency percentiles from merged histograms, the seeded
fault schedule, and which client errors a fault explains."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from soak import chaos_schedule as cs
from soak.error_budget import EventWindow, tally
from soak.latency_histogram import bucket_of, merge, percentile_s, upper_bound_s
from soak.series import gateway_series
from soak.verdict import RULES, judge


def test_percentiles_are_within_one_bucket_of_the_truth() -> None:
    latencies = [0.001 * (i + 1) for i in range(1000)]  # 1 ms .. 1 s
    hist: dict[int, int] = {}
    for lat in latencies:
        hist[bucket_of(lat)] = hist.get(bucket_of(lat), 0) + 1
    p50, p99 = percentile_s(hist, 0.5), percentile_s(hist, 0.99)
    assert p50 is not None and 0.5 <= p50 <= 0.5 * 1.2
    assert p99 is not None and 0.99 <= p99 <= 0.99 * 1.2
    assert percentile_s({}, 0.5) is None


def test_bucket_bounds_hold_their_latency() -> None:
    for lat in (0.00001, 0.0001, 0.0123, 1.5, 42.0):
        idx = bucket_of(lat)
        assert lat <= upper_bound_s(idx) * (1 + 1e-9)
        assert idx == 0 or lat > upper_bound_s(idx - 1)


def test_merge_adds_counts() -> None:
    assert merge([{1: 2, 3: 1}, {3: 4}]) == {1: 2, 3: 5}


def test_schedule_is_reproducible_and_covers_every_kind_each_round() -> None:
    a = cs.plan(cs.KINDS, 20, 100, 10, random.Random(42))
    b = cs.plan(cs.KINDS, 20, 100, 10, random.Random(42))
    assert a == b
    assert {e.kind for e in a[: len(cs.KINDS)]} == set(cs.KINDS)
    assert all(20 <= e.at_s < 100 for e in a)
    assert cs.plan(cs.KINDS, 20, 100, 10, random.Random(43)) != a


def test_errors_inside_an_allowing_window_are_explained_and_others_are_not() -> None:
    windows = [
        EventWindow(0, cs.WORKER_KILL, 10.0, 22.0),
        EventWindow(1, cs.HEALTH_FLAP, 30.0, 40.0),
    ]
    t = tally(
        [
            (11.0, 12.0, {"reset": 3}),  # a killed worker's connections: explained
            (31.0, 32.0, {"status_502": 1}),  # a health flap allows nothing
            (50.0, 51.0, {"timeout": 1}),  # no fault at all
            (21.5, 22.5, {"mismatch": 1}),  # corruption is never allowed
        ],
        windows,
    )
    assert t.allowed == {"reset": 3}
    assert t.by_event == {0: {"reset": 3}}
    assert t.unexpected == {"status_502": 1, "timeout": 1, "mismatch": 1}
    assert not t.passed
    assert t.first_unexpected_s == [32.0, 51.0, 22.5]


def test_no_errors_pass() -> None:
    assert tally([], [EventWindow(0, cs.RELOAD, 0, 5)]).passed


def test_reap_time_of_slow_attacks_is_plotted_but_not_judged_and_load_latency_is() -> None:
    from soak.analysis import analyze

    def lines(n: int) -> list[dict]:
        return [
            {"t": 1000.0 + 2 * i, "dt": 2.0, "ok": 1, "err": {}, "lat": {bucket_of(0.01): 1},
             "cpu_s": 0.1 * i, "info": {}}
            for i in range(1, n + 1)
        ]  # fmt: skip

    meta = {"t0_wall": 1000.0, "sample_s": 2.0, "warmup_s": 0.0}
    result = analyze(meta, [], {"slow_post": lines(5), "h1_keepalive": lines(20)}, [], True)
    judged = {v["series"] for v in result.verdicts}
    assert "h1_keepalive.latency" in judged
    assert "slow_post.latency" not in judged and "slow_post.rps" in judged
    plotted = {s.name: s for s in result.series}
    assert plotted["slow_post.latency"].judged is None
    assert plotted["slow_post.latency"].lines["p99"]


def _fd_samples(level: Callable[[float], float], overlaps: list[tuple[float, float]]) -> list:
    """One sample every 2 s for 90 s: supervisor 38 fds, two workers sharing `level(t)`, and
    during each overlap a draining worker's 40 more (the shape a reload has)."""
    samples = []
    for i in range(46):
        t = 2.0 * i
        procs = [{"pid": 1, "role": "supervisor", "fds": 38}]
        procs += [{"pid": 2 + w, "role": "worker", "fds": level(t) / 2} for w in range(2)]
        if any(a <= t <= b for a, b in overlaps):
            procs.append({"pid": 9, "role": "worker", "fds": 40})
        for p in procs:
            p.update(rss=1, uss=1, threads=1, cpu_s=0.0)
        samples.append({"t": t, "procs": procs, "metrics": {}, "scrape_ok": True})
    return samples


def _outcome(seq: int, kind: str, start: float, end: float) -> Any:
    from soak.chaos_actions import ChaosOutcome

    return ChaosOutcome(seq, kind, start, start, end, True, "")


def _fds_verdict(samples: list, outcomes: list) -> dict:
    from soak.analysis import analyze

    meta = {"t0_wall": 0.0, "sample_s": 2.0, "warmup_s": 14.0}
    result = analyze(meta, samples, {}, outcomes, True)
    return next(v for v in result.verdicts if v["series"] == "gateway.fds")


# Replacements bunched in the second half of the window, the last one running to the end.
_SPANS = [(14.0, 20.0), (46.0, 52.0), (58.0, 64.0), (70.0, 90.0)]
_RNG = random.Random(0)
_NOISE = {2.0 * i: _RNG.uniform(-12, 12) for i in range(46)}  # connections come and go


def _replacements() -> list:
    return [_outcome(i, cs.RELOAD, a, b) for i, (a, b) in enumerate(_SPANS)]


def test_worker_replacements_late_in_the_window_do_not_read_as_fd_growth() -> None:
    """CI saw the `all` total DRIFT when the last reload's overlap fell near the end."""
    samples = _fd_samples(lambda t: 150.0 + _NOISE[t], _SPANS)
    whole = next(s for s in gateway_series(samples) if s.name == "gateway.fds")
    assert judge("all", whole.lines["all"], RULES["fds"], 14.0).verdict == "DRIFT"
    verdict = _fds_verdict(samples, _replacements())
    assert verdict["verdict"] == "BOUNDED", verdict
    assert verdict["n"] == 39 - 23  # the 23 samples inside a replacement (+1 s) are left out


def test_a_leak_between_replacements_is_still_drift() -> None:
    leaking = _fd_samples(lambda t: 150.0 + _NOISE[t] + t / 2, _SPANS)
    verdict = _fds_verdict(leaking, _replacements())
    assert verdict["verdict"] == "DRIFT", verdict
    # a fault that does not replace workers leaves its samples judged
    flap = [_outcome(0, cs.HEALTH_FLAP, 14.0, 90.0)]
    assert _fds_verdict(_fd_samples(lambda t: 150.0, []), flap)["n"] == 39
