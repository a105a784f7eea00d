"""Merge metric snapshots from many sources (workers, the supervisor) into one view.

Owns three rules: (1) merged counters and histograms never decrease — a source that goes
away, or restarts under the same id, has its last cumulative values folded into a
"retired" accumulator; its gauges are dropped; (2) gauges are the sum over live sources;
(3) the cardinality guard — at most `max_series_per_family` label sets per family are
exported, the rest are folded into one series whose every label is "__overflow__", and the
number folded is itself exported. Admission is first come, first kept, so a kept series
never moves into the overflow series (which would make counters jump).
It must never do I/O, read a clock, or import prometheus_client.
"""

from __future__ import annotations

from collections.abc import Hashable

from gateway.metrics import families as fam
from gateway.metrics.snapshot import (
    HistogramValue,
    Labels,
    MetricsSnapshot,
    add_into,
    copy_histogram,
)

DEFAULT_MAX_SERIES_PER_FAMILY = 10_000


def _went_backwards(prev: MetricsSnapshot, new: MetricsSnapshot) -> bool:
    """True when `new` cannot be a continuation of `prev` (the source restarted)."""
    for name, series in prev.counters.items():
        now = new.counters.get(name, {})
        for labels, value in series.items():
            if now.get(labels, 0) < value:
                return True
    for name, hseries in prev.histograms.items():
        hnow = new.histograms.get(name, {})
        for labels, h in hseries.items():
            other = hnow.get(labels)
            if other is None or other.count < h.count:
                return True
    return False


def unmergeable(snapshot: MetricsSnapshot) -> str | None:
    """Why `snapshot` cannot be merged with others (a histogram of an unknown family, or
    with another bucket layout than its family's), or None. Check a source's snapshot
    before `update`: merged with the rest, it would make every later `merged()` raise."""
    for name, series in snapshot.histograms.items():
        family = fam.FAMILIES_BY_NAME.get(name)
        if family is None or family.kind is not fam.Kind.HISTOGRAM:
            return f"{name!r} is not a histogram family"
        for labels, h in series.items():
            if len(h.bucket_counts) != len(family.buckets) + 1:
                return f"{name}{list(labels)} has {len(h.bucket_counts)} buckets"
    return None


class MetricsAggregator:
    def __init__(self, *, max_series_per_family: int = DEFAULT_MAX_SERIES_PER_FAMILY) -> None:
        if max_series_per_family < 1:
            raise ValueError("max_series_per_family must be >= 1")
        self.max_series_per_family = max_series_per_family
        self._live: dict[Hashable, MetricsSnapshot] = {}
        self._retired_counters: dict[str, dict[Labels, int]] = {}
        self._retired_histograms: dict[str, dict[Labels, HistogramValue]] = {}
        self._admitted: dict[str, set[Labels]] = {}

    @property
    def sources(self) -> frozenset[Hashable]:
        return frozenset(self._live)

    def update(self, source: Hashable, snapshot: MetricsSnapshot) -> None:
        """Replace `source`'s latest cumulative snapshot.

        A snapshot in which any counter fell is taken as a new incarnation of the source
        (it restarted under the same id): the previous one is retired whole. Call
        `worker_gone` when a worker exits; this detection is only the safety net.
        """
        prev = self._live.get(source)
        if prev is not None and _went_backwards(prev, snapshot):
            self._retire(prev)
        self._live[source] = snapshot

    def worker_gone(self, source: Hashable) -> None:
        """The source exited (crash, drain, reload): keep its counters, drop its gauges."""
        prev = self._live.pop(source, None)
        if prev is not None:
            self._retire(prev)

    def _retire(self, snap: MetricsSnapshot) -> None:
        for name, series in snap.counters.items():
            acc = self._retired_counters.setdefault(name, {})
            for labels, value in series.items():
                acc[labels] = acc.get(labels, 0) + value
        for name, hseries in snap.histograms.items():
            hacc = self._retired_histograms.setdefault(name, {})
            for labels, h in hseries.items():
                have = hacc.get(labels)
                if have is None:
                    hacc[labels] = copy_histogram(h)
                else:
                    add_into(have, h)

    def merged(self) -> MetricsSnapshot:
        """Retired + live counters/histograms, live gauges, after the cardinality guard."""
        counters: dict[str, dict[Labels, int]] = {
            name: dict(series) for name, series in self._retired_counters.items()
        }
        gauges: dict[str, dict[Labels, int]] = {}
        histograms: dict[str, dict[Labels, HistogramValue]] = {
            name: {k: copy_histogram(h) for k, h in hs.items()}
            for name, hs in self._retired_histograms.items()
        }
        for snap in self._live.values():
            _sum_ints(counters, snap.counters)
            _sum_ints(gauges, snap.gauges)
            for name, hseries in snap.histograms.items():
                hacc = histograms.setdefault(name, {})
                for labels, h in hseries.items():
                    have = hacc.get(labels)
                    if have is None:
                        hacc[labels] = copy_histogram(h)
                    else:
                        add_into(have, h)
        overflowed: dict[Labels, int] = {}
        for table in (counters, gauges):
            for name in table:
                table[name], n = self._guard_ints(name, table[name])
                if n:
                    overflowed[(name,)] = overflowed.get((name,), 0) + n
        for name in histograms:
            histograms[name], n = self._guard_histograms(name, histograms[name])
            if n:
                overflowed[(name,)] = overflowed.get((name,), 0) + n
        if overflowed:
            gauges[fam.SERIES_OVERFLOWED.name] = overflowed
        return MetricsSnapshot(counters=counters, gauges=gauges, histograms=histograms)

    def _admit(self, name: str, labels: Labels) -> bool:
        admitted = self._admitted.setdefault(name, set())
        if labels in admitted:
            return True
        if len(admitted) < self.max_series_per_family:
            admitted.add(labels)
            return True
        return False

    def _guard_ints(self, name: str, series: dict[Labels, int]) -> tuple[dict[Labels, int], int]:
        out: dict[Labels, int] = {}
        folded = 0
        for labels, value in series.items():
            if self._admit(name, labels):
                out[labels] = out.get(labels, 0) + value
            else:
                key = _overflow_key(labels)
                out[key] = out.get(key, 0) + value
                folded += 1
        return out, folded

    def _guard_histograms(
        self, name: str, series: dict[Labels, HistogramValue]
    ) -> tuple[dict[Labels, HistogramValue], int]:
        out: dict[Labels, HistogramValue] = {}
        folded = 0
        for labels, h in series.items():
            if self._admit(name, labels):
                out[labels] = h
                continue
            folded += 1
            key = _overflow_key(labels)
            have = out.get(key)
            if have is None:
                out[key] = copy_histogram(h)
            else:
                add_into(have, h)
        return out, folded


def _overflow_key(labels: Labels) -> Labels:
    return (fam.OVERFLOW_LABEL_VALUE,) * len(labels)


def _sum_ints(dst: dict[str, dict[Labels, int]], src: dict[str, dict[Labels, int]]) -> None:
    for name, series in src.items():
        acc = dst.setdefault(name, {})
        for labels, value in series.items():
            acc[labels] = acc.get(labels, 0) + value
