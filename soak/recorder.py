"""What one load client process counts, written as one JSON line per interval.

A line: `{"t": wall-clock seconds, "dt": interval, "ok": exchanges, "err": {class: n},
"lat": {bucket: n}, "info": {name: n}, "cpu_s": this process's user+system CPU}`. `info`
counts expected events that are not errors (a stale keep-alive retried, a slowloris
connection reaped). Thread-safe, because the WebSocket client runs in threads. It must
never judge what it records.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import IO

import trio

from soak.latency_histogram import bucket_of


class Recorder:
    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._last_t = time.time()
        self._reset()

    def _reset(self) -> None:
        self.ok_count = 0
        self.errors: dict[str, int] = {}
        self.latency: dict[int, int] = {}
        self.info: dict[str, int] = {}

    def ok(self, latency_s: float) -> None:
        idx = bucket_of(latency_s)
        with self._lock:
            self.ok_count += 1
            self.latency[idx] = self.latency.get(idx, 0) + 1

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def note(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.info[name] = self.info.get(name, 0) + n

    def flush(self) -> None:
        now = time.time()
        times = os.times()
        with self._lock:
            line = {
                "t": round(now, 3),
                "dt": round(now - self._last_t, 3),
                "ok": self.ok_count,
                "err": self.errors,
                "lat": self.latency,
                "info": self.info,
                "cpu_s": round(times.user + times.system, 3),
            }
            self._reset()
            self._last_t = now
        self._out.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._out.flush()

    async def serve_flush(self, interval_s: float) -> None:
        while True:
            await trio.sleep(interval_s)
            self.flush()
