"""The gatewayctl <-> supervisor control protocol (JSON lines over a unix socket).

One request per connection: a JSON object with `cmd` and arguments, answered by one
JSON object `{"ok": bool, "data": ..., "errors": [...]}`. Pure types and parsing;
the socket lives in supervisor/control_server.py and supervisor/ctl.py.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from gateway.errors import ControlError

MAX_REQUEST_BYTES = 64 * 1024

Command = Literal["status", "workers", "reload", "drain", "stop", "backends", "kernel"]


class Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    cmd: Command
    worker: int | None = None  # drain: worker slot id
    timeout_s: float | None = None  # drain: budget override
    replace: bool = True  # drain: start a replacement first
    now: bool = False  # stop: immediate instead of graceful
    args: list[str] = []  # kernel: sub-command and arguments


class Response(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    data: Any = None
    errors: list[str] = []


class BadRequest(ControlError, ValueError):
    pass


def parse_request(line: bytes) -> Request:
    try:
        return msgspec.json.decode(line, type=Request)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid control request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"control request is not JSON: {exc}") from None


def encode_response(response: Response) -> bytes:
    return msgspec.json.encode(response) + b"\n"


def encode_request(request: Request) -> bytes:
    return msgspec.json.encode(request) + b"\n"


def decode_response(line: bytes) -> Response:
    return msgspec.json.decode(line, type=Response)
