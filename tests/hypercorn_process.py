"""hypercorn as a test backend process: in a session of its own, because its worker is a
child process (multiprocessing) which killing the parent alone would leave running (seen:
hypercorn workers outliving `make test` by many minutes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from running_gateway import ROOT, wait_for_port

# The tests' ASGI app (tests/http_cells/asgi_backend.py), served by one trio worker.
TRIO_WORKER = ("--workers", "1", "--worker-class", "trio")


@contextmanager
def hypercorn_process(
    args: Sequence[str], wait_port: int, worker: Sequence[str] = TRIO_WORKER
) -> Iterator[None]:
    """``python -m hypercorn *args *worker asgi_backend:app`` until the block ends, ready once
    ``wait_port`` accepts; the whole process group is killed at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", *args, *worker, "asgi_backend:app"],
        cwd=ROOT / "tests" / "http_cells",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(wait_port)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
