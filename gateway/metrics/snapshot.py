"""The wire form of metric values: cumulative counters, gauges and histograms by family.

A `MetricsSnapshot` travels from a worker to the supervisor over the control channel
(msgspec msgpack) and is also the shape of the aggregator's merged view. It owns the value
types and the histogram arithmetic only; it must never hold label policy or do I/O.
Label tuples are positional, in the order of the family's `labels` in `families.py`.
"""

from __future__ import annotations

from bisect import bisect_left

import msgspec

Labels = tuple[str, ...]


class HistogramValue(msgspec.Struct, array_like=True):
    """Per-bucket (non-cumulative) counts; the last slot is the +Inf bucket."""

    bucket_counts: list[int]
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.bucket_counts)

    def cumulative(self) -> list[int]:
        running = 0
        out: list[int] = []
        for c in self.bucket_counts:
            running += c
            out.append(running)
        return out


class MetricsSnapshot(msgspec.Struct, forbid_unknown_fields=True):
    """Cumulative values keyed by family name, then by label tuple."""

    counters: dict[str, dict[Labels, int]] = msgspec.field(default_factory=dict)
    gauges: dict[str, dict[Labels, int]] = msgspec.field(default_factory=dict)
    histograms: dict[str, dict[Labels, HistogramValue]] = msgspec.field(default_factory=dict)


def new_histogram(buckets: tuple[float, ...]) -> HistogramValue:
    return HistogramValue([0] * (len(buckets) + 1), 0.0)


def observe(h: HistogramValue, buckets: tuple[float, ...], value: float) -> None:
    """Record one observation; `le` semantics (a value equal to a bound lands in it)."""
    h.bucket_counts[bisect_left(buckets, value)] += 1
    h.sum += value


def add_into(dst: HistogramValue, src: HistogramValue) -> None:
    if len(dst.bucket_counts) != len(src.bucket_counts):
        raise ValueError(
            f"histogram bucket layout differs: {len(dst.bucket_counts)} != {len(src.bucket_counts)}"
        )
    for i, c in enumerate(src.bucket_counts):
        dst.bucket_counts[i] += c
    dst.sum += src.sum


def copy_histogram(h: HistogramValue) -> HistogramValue:
    return HistogramValue(list(h.bucket_counts), h.sum)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(MetricsSnapshot)


def encode_snapshot(snapshot: MetricsSnapshot) -> bytes:
    return _ENCODER.encode(snapshot)


def decode_snapshot(data: bytes) -> MetricsSnapshot:
    """Raises msgspec.ValidationError / msgspec.DecodeError on a malformed payload."""
    return _DECODER.decode(data)
