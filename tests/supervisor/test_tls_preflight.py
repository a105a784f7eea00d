"""`expressgateway --check` on TLS files: every bad certificate/key situation is refused with a
message naming the file and the key path; a good setup passes. Real files, real process."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

import pytest
from running_gateway import BIN, ROOT

from supervisor.cli import main
from tools.make_certs import CertFiles, make_certs


def config(cert: Path | str, key: Path | str, backend_tls: str = "") -> str:
    return f"""
[[listeners]]
name = "tls"
address = "127.0.0.1:18443"
protocol = "tls"
[listeners.tls]
cert_path = "{cert}"
key_path = "{key}"
[[listeners.backends]]
address = "127.0.0.1:19201"
{backend_tls}
"""


def check(tmp: Path, text: str) -> subprocess.CompletedProcess[str]:
    """`expressgateway --check` in this process (the CLI's own entry point): fast."""
    path = tmp / "gateway.toml"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--check", str(path)])
    return subprocess.CompletedProcess([], code, out.getvalue(), err.getvalue())


def check_process(tmp: Path, text: str) -> subprocess.CompletedProcess[str]:
    """The real `expressgateway --check` process."""
    path = tmp / "gateway.toml"
    path.write_text(text)
    return subprocess.run(
        [str(BIN / "expressgateway"), "--check", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    return make_certs(tmp_path / "certs")


def test_good_files_pass(tmp_path: Path, certs: CertFiles) -> None:
    result = check(tmp_path, config(certs.cert, certs.key))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_missing_certificate(tmp_path: Path, certs: CertFiles) -> None:
    result = check(tmp_path, config(tmp_path / "nope.pem", certs.key))
    assert result.returncode == 2
    assert "listeners[0].tls.cert_path: cannot read" in result.stderr
    assert "nope.pem" in result.stderr
    assert "No such file or directory" in result.stderr


def test_key_that_does_not_match_the_certificate(tmp_path: Path, certs: CertFiles) -> None:
    other = make_certs(tmp_path / "other")
    result = check(tmp_path, config(certs.cert, other.key))
    assert result.returncode == 2
    assert (
        f"listeners[0].tls.key_path: private key '{other.key}' does not match the certificate"
        in result.stderr
    ), result.stderr


def test_world_readable_key(tmp_path: Path, certs: CertFiles) -> None:
    os.chmod(certs.key, 0o644)
    result = check(tmp_path, config(certs.cert, certs.key))
    assert result.returncode == 2
    assert "listeners[0].tls.key_path: private key" in result.stderr
    assert "readable by group or others (mode 0644)" in result.stderr
    assert "0600 or stricter" in result.stderr


def test_expired_certificate(tmp_path: Path) -> None:
    expired = make_certs(tmp_path / "expired", expired=True)
    result = check(tmp_path, config(expired.cert, expired.key))
    assert result.returncode == 2
    assert f"listeners[0].tls.cert_path: certificate '{expired.cert}' expired on" in result.stderr


def test_key_file_that_is_not_pem(tmp_path: Path, certs: CertFiles) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"not a key at all\n")
    os.chmod(bad, 0o600)
    result = check(tmp_path, config(certs.cert, bad))
    assert result.returncode == 2
    assert "listeners[0].tls.key_path:" in result.stderr
    assert "is not a PEM private key" in result.stderr


def test_unreadable_key(tmp_path: Path, certs: CertFiles) -> None:
    # We run as root, which reads through mode bits: a directory is unreadable for anyone.
    result = check(tmp_path, config(certs.cert, tmp_path))
    assert result.returncode == 2
    assert "listeners[0].tls.key_path: cannot read" in result.stderr
    assert "Is a directory" in result.stderr


def test_every_problem_is_listed_at_once(tmp_path: Path, certs: CertFiles) -> None:
    os.chmod(certs.key, 0o640)
    backend_tls = f'[listeners.backends.tls]\nca_path = "{tmp_path / "missing-ca.pem"}"\n'
    result = check(tmp_path, config(tmp_path / "nope.pem", certs.key, backend_tls))
    assert result.returncode == 2
    assert "(3 problem(s))" in result.stderr, result.stderr
    assert "listeners[0].backends[0].tls.ca_path: cannot read CA bundle" in result.stderr


def test_verify_false_is_accepted_with_a_warning(tmp_path: Path, certs: CertFiles) -> None:
    result = check(
        tmp_path, config(certs.cert, certs.key, "[listeners.backends.tls]\nverify = false\n")
    )
    assert result.returncode == 0, result.stderr
    assert "backend_tls_verify_disabled" in result.stdout + result.stderr


def test_the_real_check_process_lists_each_listeners_tls_problem(tmp_path: Path) -> None:
    good = make_certs(tmp_path / "good")
    other = make_certs(tmp_path / "other")
    expired = make_certs(tmp_path / "expired", expired=True)
    readable = make_certs(tmp_path / "readable")
    os.chmod(readable.key, 0o644)
    cases = [
        (tmp_path / "missing.pem", good.key),
        (good.cert, other.key),
        (readable.cert, readable.key),
        (expired.cert, expired.key),
    ]
    text = "".join(
        config(cert, key).replace('"tls"', f'"tls{i}"', 1).replace("18443", str(18443 + i))
        for i, (cert, key) in enumerate(cases)
    )
    result = check_process(tmp_path, text)
    assert result.returncode == 2
    assert "(4 problem(s))" in result.stderr, result.stderr
    assert "listeners[0].tls.cert_path: cannot read" in result.stderr
    assert "listeners[1].tls.key_path: private key" in result.stderr
    assert "does not match the certificate" in result.stderr
    assert "listeners[2].tls.key_path: private key" in result.stderr
    assert "(mode 0644)" in result.stderr
    assert "listeners[3].tls.cert_path: certificate" in result.stderr
    assert "expired on" in result.stderr
