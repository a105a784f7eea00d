"""The request head's HTTP version: the keep-alive shortcut agrees with httptools' own answer
for every version strict llhttp accepts, with and without Connection-style fields."""

from __future__ import annotations

import httptools
import pytest
import trio.testing

from gateway.http.limits import HttpLimits
from workers.http1.message_reader import HEAD, MessageReader, ParsedHead

_FIELDS = [
    b"",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Proxy-Connection: keep-alive\r\n",
    b"Proxy-Connection: close\r\n",
    b"X-Other: 1\r\n",
]


@pytest.mark.parametrize("fields", _FIELDS)
@pytest.mark.parametrize("version", [b"0.9", b"1.0", b"1.1", b"2.0"])
def test_version_matches_httptools(version: bytes, fields: bytes) -> None:
    raw = b"GET / HTTP/" + version + b"\r\nHost: a\r\n" + fields + b"\r\n"
    reference = httptools.HttpRequestParser(object())
    reference.feed_data(raw)
    reader = MessageReader(trio.testing.MemorySendStream(), HttpLimits(), is_request=True)
    reader.feed(raw)
    tag, head = reader.events[0]
    assert tag == HEAD and isinstance(head, ParsedHead)
    assert head.http_version == reference.get_http_version().encode() == version


def _response_heads(*chunks: bytes) -> list[ParsedHead]:
    reader = MessageReader(trio.testing.MemorySendStream(), HttpLimits(), is_request=False)
    for chunk in chunks:
        reader.feed(chunk)
    return [payload for tag, payload in reader.events if tag == HEAD]  # type: ignore[misc]


_OK_10 = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx"
_OK_11 = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
_CONTINUE_11 = b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize(
    ("chunks", "versions"),
    [
        ([_OK_11], [b"1.1"]),
        ([_OK_10], [b"1.0"]),
        ([b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"], [b"2.0"]),
        # The head split across reads, even inside the status line.
        ([_OK_11[:3], _OK_11[3:20], _OK_11[20:]], [b"1.1"]),
        ([_OK_10[:9], _OK_10[9:]], [b"1.0"]),
        # Several messages in one read: only the one that began it is known from its start.
        ([_CONTINUE_11 + _OK_10], [b"1.1", b"1.0"]),
        ([_OK_11 + _OK_10 + _OK_11], [b"1.1", b"1.0", b"1.1"]),
        ([_OK_10 + _OK_11], [b"1.0", b"1.1"]),
        # One message per read, versions alternating.
        ([_OK_11, _OK_10, _OK_11, _OK_10], [b"1.1", b"1.0", b"1.1", b"1.0"]),
    ],
)
def test_response_versions(chunks: list[bytes], versions: list[bytes]) -> None:
    assert [head.http_version for head in _response_heads(*chunks)] == versions
