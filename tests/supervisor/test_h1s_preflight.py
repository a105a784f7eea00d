"""`expressgateway --check` on an `h1s` listener's SNI certificates: each one is checked like
the default certificate (readable, PEM, key private and matching, not expired), problems name
`listeners[i].tls.certificates[k]`, and a server name claimed twice is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_tls_preflight import check, check_process

from tools.make_certs import CertFiles, make_certs


def config(certs: CertFiles, *entries: tuple[str, Path | str, Path | str]) -> str:
    """An h1s listener with the default certificate and one entry per (names, cert, key)."""
    sni = "".join(
        f'[[listeners.tls.certificates]]\nserver_names = {names}\ncert_path = "{cert}"\n'
        f'key_path = "{key}"\n'
        for names, cert, key in entries
    )
    return f"""
[[listeners]]
name = "web"
address = "127.0.0.1:18443"
protocol = "h1s"
[listeners.tls]
cert_path = "{certs.cert}"
key_path = "{certs.key}"
server_names = ["localhost"]
{sni}
[[listeners.backends]]
address = "127.0.0.1:19201"
"""


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    return make_certs(tmp_path / "certs", extra={"api": ["api.example.com"]})


def api(certs: CertFiles) -> tuple[str, Path, Path]:
    d = certs.cert.parent
    return ('["api.example.com"]', d / "api.pem", d / "api.key")


def test_good_sni_certificates_pass(tmp_path: Path, certs: CertFiles) -> None:
    result = check(tmp_path, config(certs, api(certs)))
    assert result.returncode == 0, result.stderr
    assert "web=h1s@127.0.0.1:18443" in result.stdout


def test_every_sni_certificate_is_checked(tmp_path: Path, certs: CertFiles) -> None:
    other = make_certs(tmp_path / "other")
    expired = make_certs(tmp_path / "expired", expired=True)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    text = config(
        certs,
        api(certs),
        ('["missing.example.com"]', tmp_path / "missing.pem", certs.key),
        ('["mismatch.example.com"]', certs.cert, other.key),
        ('["expired.example.com"]', expired.cert, expired.key),
        ('["text.example.com"]', not_pem, certs.key),
    )
    result = check(tmp_path, text)
    assert result.returncode == 2
    err = result.stderr
    assert "(4 problem(s))" in err, err
    assert "listeners[0].tls.certificates[1].cert_path: cannot read" in err
    assert "No such file or directory" in err
    assert (
        f"listeners[0].tls.certificates[2].key_path: private key '{other.key}' does not match"
        in err
    )
    assert (
        f"listeners[0].tls.certificates[3].cert_path: certificate '{expired.cert}' expired" in err
    )
    assert "listeners[0].tls.certificates[4].cert_path:" in err
    assert "is not a PEM certificate" in err


def test_world_readable_sni_key(tmp_path: Path, certs: CertFiles) -> None:
    _, cert, key = api(certs)
    os.chmod(key, 0o644)
    result = check(tmp_path, config(certs, ('["api.example.com"]', cert, key)))
    assert result.returncode == 2
    assert "listeners[0].tls.certificates[0].key_path: private key" in result.stderr
    assert "(mode 0644)" in result.stderr


def test_the_real_check_process_refuses_a_name_claimed_twice(
    tmp_path: Path, certs: CertFiles
) -> None:
    names, cert, key = api(certs)
    text = config(certs, (names, cert, key), ('["www.example.com", "LOCALHOST"]', cert, key))
    result = check_process(tmp_path, text)
    assert result.returncode == 2
    assert (
        "listeners[0].tls.certificates[1].server_names[1]: server name 'LOCALHOST' is claimed "
        "twice (also listeners[0].tls.server_names[0])"
    ) in result.stderr, result.stderr
