"""The 421 decision and the server-name table behind it: exact names beat wildcards, a
wildcard covers one label, a host no certificate names is never misdirected."""

from __future__ import annotations

import pytest

from gateway.http.misdirected import authority_host, is_misdirected
from gateway.http.server_names import DEFAULT_CERTIFICATE, ServerNameTable

# 0: the default (example.com), 1: *.example.com, 2: api.example.com (exact beats wildcard),
# 3: *.shop.test
TABLE = ServerNameTable.from_names(
    [["example.com", "www.example.com"], ["*.example.com"], ["API.example.com."], ["*.shop.test"]]
)


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("example.com", 0),
        ("www.example.com", 0),  # exact (default cert) beats *.example.com
        ("api.example.com", 2),  # exact beats wildcard
        ("Api.Example.COM.", 2),  # case and a trailing dot do not matter
        ("img.example.com", 1),
        ("a.b.example.com", -1),  # a wildcard is one label
        ("xexample.com", -1),
        ("shop.test", -1),  # *.shop.test does not cover the bare name
        ("eu.shop.test", 3),
        ("unknown.org", -1),
        ("", -1),
    ],
)
def test_certificate_for(name: str, index: int) -> None:
    assert TABLE.certificate_for(name) == index


def test_sni_without_a_match_or_absent_gets_the_default() -> None:
    assert TABLE.certificate_for_sni(None) == DEFAULT_CERTIFICATE
    assert TABLE.certificate_for_sni("unknown.org") == DEFAULT_CERTIFICATE
    assert TABLE.certificate_for_sni("img.example.com") == 1


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        (b"example.com", "example.com"),
        (b"example.com:8443", "example.com"),
        (b"[::1]:443", ""),
        (b"127.0.0.1:443", "127.0.0.1"),
        (b"", ""),
    ],
)
def test_authority_host(authority: bytes, host: str) -> None:
    assert authority_host(authority) == host


@pytest.mark.parametrize(
    ("connection", "authority", "misdirected"),
    [
        (2, b"api.example.com", False),
        (2, b"api.example.com:443", False),
        (2, b"API.EXAMPLE.COM", False),
        (2, b"img.example.com", True),  # served by the wildcard certificate
        (2, b"example.com", True),  # served by the default certificate
        (1, b"img.example.com", False),
        (1, b"other.example.com:8443", False),
        (1, b"api.example.com", True),
        (0, b"www.example.com", False),
        (0, b"api.example.com", True),
        (0, b"unknown.org", False),  # no certificate names it: not this check's business
        (3, b"unknown.org", False),
        (3, b"127.0.0.1:8443", False),
        (3, b"[::1]:8443", False),
        (3, b"", False),
    ],
)
def test_is_misdirected(connection: int, authority: bytes, misdirected: bool) -> None:
    assert is_misdirected(TABLE, connection, authority) is misdirected


def test_one_certificate_is_never_misdirected() -> None:
    single = ServerNameTable.from_names([["example.com"]])
    assert not is_misdirected(single, 0, b"example.com")
    assert not is_misdirected(single, 0, b"other.org")


def test_first_claim_of_a_name_stays() -> None:
    # validation refuses duplicates; the table still never lets a later claim win
    table = ServerNameTable.from_names([["a.test"], ["a.test", "*.b.test"], ["*.b.test"]])
    assert table.certificate_for("a.test") == 0
    assert table.certificate_for("x.b.test") == 1
