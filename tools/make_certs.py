"""Make a throw-away CA and a server certificate for localhost, for demos and tests.

    python -m tools.make_certs OUTDIR [--days N] [--expired] [--name localhost]

Writes OUTDIR/ca.pem (the CA certificate, for clients' trust and backend `ca_path`),
OUTDIR/ca.key, OUTDIR/server.pem (server certificate followed by the CA: the chain a
`tls` listener's `cert_path` wants) and OUTDIR/server.key (mode 0600, as preflight
requires). The server certificate names localhost, 127.0.0.1 and ::1; each
`--extra STEM=NAME[,NAME...]` adds OUTDIR/STEM.pem and STEM.key for those DNS names, signed
by the same CA (SNI certificates of an `h1s` listener). `--expired`
makes a server certificate whose validity ended yesterday (for preflight tests).
Uses `cryptography` (already installed as a dependency of aioquic). Never for production.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    ca_cert: Path
    ca_key: Path
    cert: Path  # server certificate + CA (chain)
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ExpressGateway test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to an existing file


def make_certs(
    outdir: str | os.PathLike[str],
    *,
    days: int = 365,
    expired: bool = False,
    name: str = "localhost",
    now: datetime.datetime | None = None,
    extra: dict[str, list[str]] | None = None,
) -> CertFiles:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    now = now or datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"ExpressGateway test CA {os.urandom(4).hex()}")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days + 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    if expired:
        not_before, not_after = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
    else:
        not_before, not_after = (
            now - datetime.timedelta(minutes=5),
            now + datetime.timedelta(days=days),
        )
    pem = serialization.Encoding.PEM
    files = CertFiles(out / "ca.pem", out / "ca.key", out / "server.pem", out / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    _write_private(files.ca_key, _key_pem(ca_key))
    localhost: list[x509.GeneralName] = [
        x509.DNSName(name),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    _issue(files.cert, files.key, name, localhost, ca_cert, ca_key, not_before, not_after)
    for stem, names in (extra or {}).items():
        _issue(
            out / f"{stem}.pem",
            out / f"{stem}.key",
            names[0],
            [x509.DNSName(n) for n in names],
            ca_cert,
            ca_key,
            not_before,
            not_after,
        )
    return files


def _issue(
    cert_path: Path,
    key_path: Path,
    common_name: str,
    alt_names: list[x509.GeneralName],
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> None:
    """A server certificate signed by the CA: chain (cert + CA) and key (0600) written."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    cert_path.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    _write_private(key_path, _key_pem(key))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.make_certs", description=__doc__)
    parser.add_argument("outdir")
    parser.add_argument("--days", type=int, default=365, help="server certificate lifetime")
    parser.add_argument("--expired", action="store_true", help="validity ended yesterday")
    parser.add_argument("--name", default="localhost", help="DNS name (also the CN)")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="STEM=NAME[,NAME...]",
        help="also write OUTDIR/STEM.pem and STEM.key for these DNS names (same CA)",
    )
    args = parser.parse_args(argv)
    extra = {}
    for spec in args.extra:
        stem, _, names = spec.partition("=")
        if not stem or not names:
            parser.error(f"--extra wants STEM=NAME[,NAME...], got {spec!r}")
        extra[stem] = names.split(",")
    files = make_certs(
        args.outdir, days=args.days, expired=args.expired, name=args.name, extra=extra
    )
    print(f"CA {files.ca_cert}\ncertificate chain {files.cert}\nkey {files.key} (0600)")
    for stem in extra:
        print(f"certificate chain {files.cert.parent / stem}.pem, key {stem}.key (0600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
