"""MetricsAggregator: merging workers, retiring them monotonically, the cardinality guard."""

from __future__ import annotations

import pytest

from gateway.metrics import MetricsAggregator, SupervisorMetrics, WorkerMetrics
from gateway.metrics import families as fam

OVF = fam.OVERFLOW_LABEL_VALUE


def _worker(requests: int, active: int, listener: str = "web") -> WorkerMetrics:
    m = WorkerMetrics()
    for _ in range(requests):
        m.request_done(listener, "b1", 200, 0.002, 10, 20)
    for _ in range(active):
        m.connection_opened(listener)
    return m


def _reqs(agg: MetricsAggregator) -> int:
    return agg.merged().counters[fam.REQUESTS.name][("web", "b1", "2xx")]


def test_merges_two_workers() -> None:
    agg = MetricsAggregator()
    agg.update(0, _worker(3, 2).snapshot())
    agg.update(1, _worker(4, 1).snapshot())
    view = agg.merged()
    assert view.counters[fam.REQUESTS.name] == {("web", "b1", "2xx"): 7}
    assert view.counters[fam.BYTES.name] == {("web", "in"): 70, ("web", "out"): 140}
    assert view.gauges[fam.CONNECTIONS_ACTIVE.name] == {("web",): 3}
    h = view.histograms[fam.REQUEST_DURATION.name][("web",)]
    assert h.count == 7
    assert h.sum == pytest.approx(0.014)


def test_update_replaces_not_adds() -> None:
    agg = MetricsAggregator()
    w = _worker(2, 0)
    agg.update(0, w.snapshot())
    agg.update(0, w.snapshot())
    assert _reqs(agg) == 2


def test_worker_gone_keeps_counters_drops_gauges() -> None:
    agg = MetricsAggregator()
    agg.update(0, _worker(5, 2).snapshot())
    agg.update(1, _worker(1, 1).snapshot())
    agg.worker_gone(0)
    view = agg.merged()
    assert view.counters[fam.REQUESTS.name][("web", "b1", "2xx")] == 6
    assert view.gauges[fam.CONNECTIONS_ACTIVE.name] == {("web",): 1}
    assert view.histograms[fam.REQUEST_DURATION.name][("web",)].count == 6
    agg.worker_gone(0)  # idempotent: a second notice changes nothing
    assert _reqs(agg) == 6


def test_restart_under_same_id_never_decreases_counters() -> None:
    agg = MetricsAggregator()
    agg.update(0, _worker(10, 0).snapshot())
    before = _reqs(agg)
    # The worker on cpu0 crashed and its replacement reports under the same id, fresh.
    agg.update(0, _worker(1, 0).snapshot())
    assert _reqs(agg) == before + 1
    # ...and keeps counting from there.
    agg.update(0, _worker(3, 0).snapshot())
    assert _reqs(agg) == before + 3


def test_reload_generation_swap_is_monotonic() -> None:
    agg = MetricsAggregator()
    seen: list[int] = []
    old = {cpu: _worker(4, 1) for cpu in (0, 1)}
    for cpu, w in old.items():
        agg.update(("gen1", cpu), w.snapshot())
    seen.append(_reqs(agg))
    new = {cpu: _worker(2, 1) for cpu in (0, 1)}
    for cpu, w in new.items():
        agg.update(("gen2", cpu), w.snapshot())
        seen.append(_reqs(agg))
    for cpu in (0, 1):
        agg.worker_gone(("gen1", cpu))
        seen.append(_reqs(agg))
    assert seen == sorted(seen)
    assert seen[-1] == 12
    assert agg.merged().gauges[fam.CONNECTIONS_ACTIVE.name] == {("web",): 2}


def test_cardinality_overflow_goes_to_one_counted_series() -> None:
    agg = MetricsAggregator(max_series_per_family=3)
    w = WorkerMetrics()
    for i in range(5):
        w.connection_opened(f"l{i}")
    agg.update(0, w.snapshot())
    view = agg.merged()
    conns = view.counters[fam.CONNECTIONS.name]
    assert conns == {("l0",): 1, ("l1",): 1, ("l2",): 1, (OVF,): 2}
    overflowed = view.gauges[fam.SERIES_OVERFLOWED.name]
    assert overflowed[(fam.CONNECTIONS.name,)] == 2
    assert overflowed[(fam.CONNECTIONS_ACTIVE.name,)] == 2
    # An admitted series stays admitted, and a late one joins the overflow: no counter
    # ever moves between series (which would make one decrease).
    w.connection_opened("l9")
    w.connection_opened("l0")
    agg.update(0, w.snapshot())
    conns = agg.merged().counters[fam.CONNECTIONS.name]
    assert conns == {("l0",): 2, ("l1",): 1, ("l2",): 1, (OVF,): 3}


def test_overflow_for_histograms_and_multi_label_families() -> None:
    agg = MetricsAggregator(max_series_per_family=1)
    w = WorkerMetrics()
    w.request_done("a", "b1", 200, 0.01, 0, 0)
    w.request_done("b", "b1", 500, 0.02, 0, 0)
    w.request_done("c", "b1", 500, 0.02, 0, 0)
    agg.update(0, w.snapshot())
    view = agg.merged()
    assert view.counters[fam.REQUESTS.name] == {("a", "b1", "2xx"): 1, (OVF, OVF, OVF): 2}
    hists = view.histograms[fam.REQUEST_DURATION.name]
    assert set(hists) == {("a",), (OVF,)}
    assert hists[(OVF,)].count == 2


def test_no_overflow_gauge_under_the_ceiling() -> None:
    agg = MetricsAggregator()
    agg.update(0, _worker(1, 1).snapshot())
    assert fam.SERIES_OVERFLOWED.name not in agg.merged().gauges


def test_rejects_nonsense_ceiling() -> None:
    with pytest.raises(ValueError):
        MetricsAggregator(max_series_per_family=0)


def test_supervisor_metrics_fold_in_and_kernel_reset_stays_monotonic() -> None:
    sup = SupervisorMetrics("1.2.3")
    sup.worker_restarted()
    sup.set_workers({"ready": 2, "draining": 1})
    sup.reload_finished("success")
    sup.reload_finished("failed")
    sup.reload_finished("success")
    sup.drain_finished(3.0)
    sup.set_backend_health("web", "b1", True)
    sup.set_backend_health("web", "b2", False)
    sup.set_kernel_packets(0, "redirect", 100)
    agg = MetricsAggregator()
    agg.update("supervisor", sup.snapshot())
    view = agg.merged()
    assert view.counters[fam.WORKER_RESTARTS.name] == {(): 1}
    assert view.counters[fam.RELOADS.name] == {("success",): 2, ("failed",): 1}
    assert view.gauges[fam.WORKERS.name] == {("ready",): 2, ("draining",): 1}
    assert view.gauges[fam.BACKEND_HEALTHY.name] == {("web", "b1"): 1, ("web", "b2"): 0}
    assert view.gauges[fam.BUILD_INFO.name] == {("1.2.3",): 1}
    assert view.histograms[fam.DRAIN_DURATION.name][()].count == 1
    # The datapath maps were recreated: the raw total restarts from 5.
    sup.set_kernel_packets(0, "redirect", 5)
    sup.worker_restarted()
    agg.update("supervisor", sup.snapshot())
    view = agg.merged()
    assert view.counters[fam.KERNEL_PACKETS.name] == {("0", "redirect"): 105}
    assert view.counters[fam.WORKER_RESTARTS.name] == {(): 2}
    sup.forget_backend("web", "b2")
    agg.update("supervisor", sup.snapshot())
    assert agg.merged().gauges[fam.BACKEND_HEALTHY.name] == {("web", "b1"): 1}
