"""The raw request bytes of the differential smuggling suite, and what we answer to each.

Every attack carries a second request for ``/smuggled`` placed where a parser that
disagrees with another (CL vs TE, obfuscated TE, lenient line endings ...) would see it.
"""

from __future__ import annotations

from dataclasses import dataclass

HOST = b"Host: example.test\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
# Under chunked framing this body ends at "0\r\n\r\n" and /smuggled is a second request;
# under Content-Length framing (CL = its full length) it is all body.
CHUNKED_THEN_SMUGGLED = b"0\r\n\r\n" + SMUGGLED


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    status: int  # what ExpressGateway answers first
    # The head alone is refused: not one byte may reach the backend.
    rejected_before_forwarding: bool = True


def _post(fields: bytes, body: bytes, *, version: bytes = b"1.1") -> bytes:
    return b"POST / HTTP/" + version + b"\r\n" + HOST + fields + b"\r\n" + body


def _cl(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n" % len(body)


def _te_with_cl(te_lines: bytes) -> bytes:
    return _post(te_lines + _cl(CHUNKED_THEN_SMUGGLED), CHUNKED_THEN_SMUGGLED)


def _chunk_size(size_line: bytes) -> bytes:
    return _post(
        b"Transfer-Encoding: chunked\r\n",
        size_line + b"\r\n" + b"A" * 16 + b"\r\n" + CHUNKED_THEN_SMUGGLED,
    )


CASES: list[Case] = [
    # Baselines: legitimate pipelining is forwarded request by request, never merged.
    Case(
        "baseline_get_pipelined", b"GET /first HTTP/1.1\r\n" + HOST + b"\r\n" + SMUGGLED, 200, False
    ),
    Case(
        "baseline_chunked",
        _post(b"Transfer-Encoding: chunked\r\n", b"4\r\nbody\r\n" + CHUNKED_THEN_SMUGGLED),
        200,
        False,
    ),
    # CL + TE in either order (RFC 9112 §6.1: a proxy must not forward both).
    Case(
        "cl_te",
        _post(
            _cl(CHUNKED_THEN_SMUGGLED) + b"Transfer-Encoding: chunked\r\n", CHUNKED_THEN_SMUGGLED
        ),
        400,
    ),
    Case("te_cl", _te_with_cl(b"Transfer-Encoding: chunked\r\n"), 400),
    # TE.TE obfuscations, each with a CL the other hop might prefer.
    Case("te_chunked_identity", _te_with_cl(b"Transfer-Encoding: chunked, identity\r\n"), 400),
    Case(
        "te_chunked_identity_no_cl",
        _post(b"Transfer-Encoding: chunked, identity\r\n", CHUNKED_THEN_SMUGGLED),
        400,
    ),
    Case("te_leading_space", _te_with_cl(b"Transfer-Encoding:  chunked\r\n"), 400),
    Case("te_xchunked", _te_with_cl(b"Transfer-Encoding: xchunked\r\n"), 400),
    Case(
        "te_xchunked_no_cl", _post(b"Transfer-Encoding: xchunked\r\n", CHUNKED_THEN_SMUGGLED), 400
    ),
    Case("te_space_before_colon", _te_with_cl(b"Transfer-Encoding : chunked\r\n"), 400),
    Case(
        "te_duplicate",
        _te_with_cl(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"),
        400,
    ),
    Case(
        "te_duplicate_no_cl",
        _post(
            b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n", CHUNKED_THEN_SMUGGLED
        ),
        400,
    ),
    Case("te_tab", _te_with_cl(b"Transfer-Encoding:\tchunked\r\n"), 400),
    Case("te_vertical_tab", _te_with_cl(b"Transfer-Encoding:\x0bchunked\r\n"), 400),
    Case("te_obs_fold", _te_with_cl(b"Transfer-Encoding:\r\n chunked\r\n"), 400),
    Case("te_line_folded_name", _te_with_cl(b"X-Pad: 1\r\n Transfer-Encoding: chunked\r\n"), 400),
    # Content-Length oddities.
    Case(
        "cl_duplicate_differing",
        _post(b"Content-Length: 5\r\nContent-Length: 47\r\n", b"hello" + SMUGGLED),
        400,
    ),
    Case("cl_list_same", _post(b"Content-Length: 5, 5\r\n", b"hello" + SMUGGLED), 400),
    Case("cl_plus_sign", _post(b"Content-Length: +5\r\n", b"hello" + SMUGGLED), 400),
    Case("cl_hex", _post(b"Content-Length: 0x5\r\n", b"hello" + SMUGGLED), 400),
    Case("cl_negative", _post(b"Content-Length: -1\r\n", SMUGGLED), 400),
    # Field syntax.
    Case("obs_fold", b"GET / HTTP/1.1\r\n" + HOST + b"X-Folded: a\r\n b\r\n\r\n" + SMUGGLED, 400),
    Case(
        "space_before_colon", b"GET / HTTP/1.1\r\n" + HOST + b"X-Spaced : a\r\n\r\n" + SMUGGLED, 400
    ),
    Case("nul_in_value", b"GET / HTTP/1.1\r\n" + HOST + b"X-Nul: a\x00b\r\n\r\n" + SMUGGLED, 400),
    Case("cr_in_value", b"GET / HTTP/1.1\r\n" + HOST + b"X-Cr: a\rb\r\n\r\n" + SMUGGLED, 400),
    Case("bare_lf_everywhere", b"GET / HTTP/1.1\n" + HOST[:-2] + b"\n\n" + SMUGGLED, 400),
    Case(
        "bare_lf_one_field", b"GET / HTTP/1.1\r\n" + HOST[:-2] + b"\nX-A: b\r\n\r\n" + SMUGGLED, 400
    ),
    Case("bare_lf_after_cl", _post(b"Content-Length: 5\nX-A: b\r\n", b"hello" + SMUGGLED), 400),
    Case(
        "very_long_header",
        b"GET / HTTP/1.1\r\n" + HOST + b"X-Long: " + b"a" * 70_000 + b"\r\n\r\n" + SMUGGLED,
        431,
    ),
    # Chunk sizes.
    Case("chunk_size_0x", _chunk_size(b"0x10"), 400, False),
    Case("chunk_size_negative", _chunk_size(b"-1"), 400, False),
    Case("chunk_size_huge", _chunk_size(b"f" * 32), 400, False),
    Case(
        "chunk_size_bare_lf",
        _post(b"Transfer-Encoding: chunked\r\n", b"4\nbody\r\n" + CHUNKED_THEN_SMUGGLED),
        400,
        False,
    ),
    # Versions, targets and upgrades.
    Case(
        "http10_with_te",
        _post(b"Transfer-Encoding: chunked\r\n", CHUNKED_THEN_SMUGGLED, version=b"1.0"),
        400,
    ),
    Case(
        "absolute_form",
        b"GET http://example.test/abs HTTP/1.1\r\nHost: other.test\r\n\r\n",
        200,
        False,
    ),
    Case(
        "upgrade_h2c",
        b"GET /h2c HTTP/1.1\r\n" + HOST + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" + SMUGGLED,
        200,
        False,
    ),
    Case(
        "upgrade_h2c_with_body",
        _post(b"Connection: Upgrade\r\nUpgrade: h2c\r\n" + _cl(SMUGGLED), SMUGGLED),
        400,
    ),
]
