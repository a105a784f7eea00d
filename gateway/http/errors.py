"""Typed HTTP errors that carry their wire meaning (status, whether to close, a log kind).

Owns the HTTP branch of the one error hierarchy (gateway/errors.py). Must never perform
I/O or log.
"""

from __future__ import annotations

from gateway.errors import GatewayError


class HttpError(GatewayError):
    """An error that ends an exchange with ``status`` (or a close if a response already began)."""

    status: int = 500
    kind: str = "internal"
    close: bool = True

    def __init__(self, detail: str = "", *, kind: str | None = None) -> None:
        super().__init__(detail or self.kind)
        self.detail = detail
        if kind is not None:
            self.kind = kind


class BadRequest(HttpError):
    status = 400
    kind = "bad_request"


class RequestTimeout(HttpError):
    status = 408
    kind = "client_timeout"


class TooEarly(HttpError):
    """A request that is not safe to replay arrived in TLS early data (RFC 8470 §5.2: 425);
    the client repeats it once the handshake completed."""

    status = 425
    kind = "too_early"


class MisdirectedRequest(HttpError):
    """The request names a host this TLS connection's certificate does not serve (421)."""

    status = 421
    kind = "misdirected"


class BodyTooLarge(HttpError):
    status = 413
    kind = "body_too_large"


class HeadersTooLarge(HttpError):
    status = 431
    kind = "headers_too_large"


class NotImplementedMethod(HttpError):
    status = 501
    kind = "not_implemented"


class BadGateway(HttpError):
    status = 502
    kind = "bad_gateway"


class NoBackend(HttpError):
    status = 503
    kind = "no_backend"


class LocalExhausted(HttpError):
    """This worker ran out of descriptors (EMFILE) or local resources: a local 503 that says
    nothing about the backend (see gateway.errors.LocalResourceExhausted)."""

    status = 503
    kind = "fd_exhausted"


class GatewayTimeout(HttpError):
    status = 504
    kind = "gateway_timeout"


class ExpectationFailed(HttpError):
    status = 417
    kind = "expectation_failed"
