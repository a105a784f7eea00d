"""A cheaper repr for received HTTP/2 frames (hyperframe's ``_raw_data_repr``).

h2 formats ``repr(frame)`` for a trace log on every frame it receives, whether or not any
logger listens, and hyperframe's repr hex-encodes the whole payload before keeping its
first 20 hex digits: for a 16 KiB DATA frame that is 32 KiB of text per frame, about a
tenth of the worker's time in an HTTP/2 upload. The replacement encodes only the bytes the
repr keeps, so every repr reads exactly as before. Applied once, at import, by the HTTP/2
adapters. Must never change anything a frame carries.
"""

from __future__ import annotations

import binascii

import hyperframe.frame

_KEPT_HEX_DIGITS = 20


def _raw_data_repr(data: bytes | None) -> str:
    if not data:
        return "None"
    r = binascii.hexlify(bytes(data[: _KEPT_HEX_DIGITS // 2 + 1])).decode("ascii")
    if len(r) > _KEPT_HEX_DIGITS:
        r = r[:_KEPT_HEX_DIGITS] + "..."
    return "<hex:" + r + ">"


# hyperframe's own, kept for the test that holds the two equal.
original_raw_data_repr = hyperframe.frame._raw_data_repr  # type: ignore[attr-defined]
if original_raw_data_repr is not _raw_data_repr:
    hyperframe.frame._raw_data_repr = _raw_data_repr  # type: ignore[attr-defined]
