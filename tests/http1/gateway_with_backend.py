"""The real gateway in front of a RecordingBackend served from a thread (module fixtures)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import trio
from recording_backend import RecordingBackend
from running_gateway import RunningGateway


class BackendThread:
    """A RecordingBackend served by its own trio loop in a thread, for module-scoped fixtures."""

    def __init__(self) -> None:
        self.backend = RecordingBackend()
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.backend.serve)
                self._ready.set()

    def start(self) -> RecordingBackend:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("recording backend did not start")
        return self.backend

    def stop(self) -> None:
        if self._token is not None and self._scope is not None:
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)


@dataclass
class GatewayWithBackend:
    gateway: RunningGateway
    port: int
    backend: RecordingBackend

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
