"""How a cleartext h1 listener tells HTTP/2 with prior knowledge from HTTP/1.1 by the first
bytes, peeked (workers/http_listener.sniff_preface): whether they are already there when the
connection is accepted or arrive later, in pieces, or never."""

from __future__ import annotations

import socket as stdsocket

import trio

from workers.http1.taskless import HTTP1, NOT_YET, OTHER
from workers.http_listener import H1, H2, PREFACE, SILENT, PriorKnowledge, _peek_now, sniff_preface


async def _sniffed(
    parts: list[bytes], *, gap_s: float = 0.0, eof: bool = False
) -> tuple[int, bytes]:
    a, b = trio.socket.socketpair()
    with a, b:

        async def send() -> None:
            for i, part in enumerate(parts):
                if i or gap_s:
                    await trio.sleep(gap_s)
                await b.send(part)
            if eof:
                b.shutdown(trio.socket.SHUT_WR)

        async with trio.open_nursery() as nursery:
            if gap_s == 0.0:
                await send()  # everything is there before the sniff starts
            else:
                nursery.start_soon(send)
            kind = await sniff_preface(a, 0.5)
        if kind == SILENT:
            return kind, b""
        return kind, await a.recv(64)  # what the sniff left for the front to read


def test_bytes_already_there_decide_at_once() -> None:
    assert trio.run(_sniffed, [b"GET / HTTP/1.1\r\n\r\n"]) == (H1, b"GET / HTTP/1.1\r\n\r\n")
    kind, kept = trio.run(_sniffed, [PREFACE])
    assert kind == H2 and kept == PREFACE  # peeked: the H2 front reads them itself


def test_bytes_arriving_later_and_in_pieces() -> None:
    kind, kept = trio.run(lambda: _sniffed([PREFACE[:5], PREFACE[5:]], gap_s=0.05))
    assert kind == H2 and kept == PREFACE
    kind, _ = trio.run(lambda: _sniffed([PREFACE[:3], b"X / HTTP/1.1\r\n\r\n"], gap_s=0.05))
    assert kind == H1


def test_silence_and_eof_are_silent() -> None:
    assert trio.run(lambda: _sniffed([], gap_s=0.01))[0] == SILENT  # nothing within 0.5 s
    assert trio.run(lambda: _sniffed([], eof=True))[0] == SILENT


def test_a_socket_without_its_stdlib_socket_is_peeked_through_its_fd() -> None:
    """The peek goes through the stdlib socket a trio socket wraps; a socket that does not
    show one is peeked through a stdlib socket made for its fd, which stays open."""
    a, b = stdsocket.socketpair()
    with a, b:

        class Bare:
            def fileno(self) -> int:
                return a.fileno()

        assert _peek_now(Bare(), 8) is None  # type: ignore[arg-type]
        b.send(b"GET / ")
        assert _peek_now(Bare(), 8) == b"GET / "  # type: ignore[arg-type]
        assert a.recv(8) == b"GET / "  # left in place, and the fd is still the socket's


def test_prior_knowledge_reads_and_tells_first_bytes_apart_without_waiting() -> None:
    """What start_now and a connection started without a task use (``taskless.FirstBytes``):
    a read that never waits, and what the bytes read so far say."""
    first = PriorKnowledge(h2_front=None)  # type: ignore[arg-type]

    async def main() -> list[object]:
        seen: list[object] = []
        a, b = trio.socket.socketpair()
        with a, b:
            seen.append(first.read_first(a))  # nothing yet
            await b.send(PREFACE[:4])
            seen.append(first.read_first(a))
            await b.send(b"GET / HTTP/1.1\r\n\r\n")
            seen.append(first.read_first(a))
            b.shutdown(trio.socket.SHUT_WR)
            seen.append(first.read_first(a))  # the client's end
        return seen

    assert trio.run(main) == [None, PREFACE[:4], b"GET / HTTP/1.1\r\n\r\n", b""]
    assert first.classify(PREFACE[:4]) == NOT_YET  # the rest decides
    assert first.classify(PREFACE) == OTHER
    assert first.classify(PREFACE + b"\x00\x00\x00\x04\x00") == OTHER  # frames behind it
    assert first.classify(PREFACE[:4] + b"X") == HTTP1
    assert first.classify(b"GET / HTTP/1.1\r\n") == HTTP1
