"""Checks a plan needs from the file system before anything starts.

Validation (gateway/config/validate.py) is pure; what needs to look at files
(certificates, keys, CA bundles) runs here, for `--check`, start-up and reload, so a
bad file fails the check instead of a later worker. For each `tls` listener: both
files readable and PEM, the key private to its owner (mode 0600 or stricter, as the
original required), the key matching the certificate (loaded exactly as workers load
it), the certificate not expired; the same for every SNI certificate of an `h1s` listener
(`[[listeners.tls.certificates]]`). For backend TLS: the CA bundle loads, and
`verify = false` is logged as a warning. As root: `runtime.worker_user` exists.
Must never open sockets.
"""

from __future__ import annotations

import datetime
import os
import pwd
import ssl
import stat

import structlog
from cryptography import x509

from gateway.config.plan import GatewayPlan
from gateway.config.schema import BackendTlsConfig, TlsConfig
from gateway.errors import ConfigError, Problem

log = structlog.get_logger("expressgateway.supervisor")

NEAR_EXPIRY = datetime.timedelta(days=14)
_PEM_MARKERS = {"cert_path": b"-----BEGIN CERTIFICATE-----", "key_path": b"PRIVATE KEY-----"}


def _read(path: str, key: str, problems: list[tuple[str, str]]) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        problems.append((key, f"cannot read {path!r}: {exc.strerror}"))
        return None
    if _PEM_MARKERS[key] not in data:
        what = "certificate" if key == "cert_path" else "private key"
        problems.append((key, f"{path!r} is not a PEM {what} (no {_PEM_MARKERS[key].decode()!r})"))
        return None
    return data


def _key_mode_problem(path: str) -> str | None:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        return (
            f"private key {path!r} is readable by group or others (mode {mode:04o}); "
            f"it must be 0600 or stricter: chmod 600 {path}"
        )
    return None


def _load_problem(tls: TlsConfig) -> str | None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(tls.cert_path, tls.key_path)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            return f"private key {tls.key_path!r} does not match the certificate {tls.cert_path!r}"
        return f"cannot load {tls.cert_path!r} with key {tls.key_path!r}: {exc.reason or exc}"
    except OSError as exc:
        return f"cannot load {tls.key_path!r}: {exc.strerror or exc}"
    return None


def _validity_problem(cert_pem: bytes, path: str, name: str, now: datetime.datetime) -> str | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        return f"{path!r} does not hold a readable certificate: {exc}"
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        return f"certificate {path!r} expired on {not_after:%Y-%m-%d %H:%M:%S} UTC"
    if cert.not_valid_before_utc > now:
        log.warning("tls_certificate_not_yet_valid", listener=name, cert_path=path)
    elif not_after - now < NEAR_EXPIRY:
        log.warning(
            "tls_certificate_expires_soon",
            listener=name,
            cert_path=path,
            not_after=not_after.isoformat(),
        )
    return None


def listener_tls_problems(
    tls: TlsConfig, name: str, now: datetime.datetime
) -> list[tuple[str, str]]:
    """(key, message) pairs for one listener's [listeners.tls] table."""
    problems: list[tuple[str, str]] = []
    cert = _read(tls.cert_path, "cert_path", problems)
    key = _read(tls.key_path, "key_path", problems)
    if key is not None:
        mode_problem = _key_mode_problem(tls.key_path)
        if mode_problem:
            problems.append(("key_path", mode_problem))
    if cert is None or key is None:
        return problems
    load_problem = _load_problem(tls)
    if load_problem:
        problems.append(("key_path", load_problem))
    validity = _validity_problem(cert, tls.cert_path, name, now)
    if validity:
        problems.append(("cert_path", validity))
    return problems


def backend_tls_problem(tls: BackendTlsConfig) -> str | None:
    if tls.ca_path is None:
        return None
    try:
        ssl.create_default_context(cafile=tls.ca_path)
    except OSError as exc:
        return f"cannot read CA bundle {tls.ca_path!r}: {exc.strerror or exc}"
    except ssl.SSLError as exc:
        return f"CA bundle {tls.ca_path!r} holds no usable PEM certificate: {exc.reason or exc}"
    return None


def preflight(plan: GatewayPlan, *, source: str = "", now: datetime.datetime | None = None) -> None:
    """Raise ConfigError listing every file problem; log warnings for what only deserves one."""
    now = now or datetime.datetime.now(datetime.UTC)
    problems: list[Problem] = []
    worker_user = plan.config.runtime.worker_user
    if worker_user and os.geteuid() == 0:
        try:
            pwd.getpwnam(worker_user)
        except KeyError:
            problems.append(
                Problem(
                    "runtime.worker_user",
                    f"user {worker_user!r} does not exist on this machine; create it "
                    f"(useradd --system {worker_user}) or name another unprivileged user",
                )
            )
    for i, lst in enumerate(plan.config.listeners):
        if lst.tls is not None:
            for key, message in listener_tls_problems(lst.tls, lst.name, now):
                problems.append(Problem(f"listeners[{i}].tls.{key}", message))
            for k, cert in enumerate(lst.tls.certificates):
                # Checked exactly like the default certificate (an h1s listener's SNI ones).
                one = TlsConfig(cert_path=cert.cert_path, key_path=cert.key_path)
                for key, message in listener_tls_problems(one, lst.name, now):
                    problems.append(Problem(f"listeners[{i}].tls.certificates[{k}].{key}", message))
        for j, backend in enumerate(lst.backends):
            if backend.tls is None:
                continue
            ca_problem = backend_tls_problem(backend.tls)
            if ca_problem:
                problems.append(Problem(f"listeners[{i}].backends[{j}].tls.ca_path", ca_problem))
            if not backend.tls.verify:
                log.warning(
                    "backend_tls_verify_disabled",
                    listener=lst.name,
                    backend=backend.address,
                    detail="certificates of this backend are NOT verified: anyone on the path "
                    "can impersonate it; set verify = true with ca_path",
                )
    if problems:
        raise ConfigError(problems, source)
