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
