"""HTTP/1.1 front and upstream adapters (trio + httptools)."""

from workers.http1.backend import Backend
from workers.http1.connection import serve_h1_connection
from workers.http1.context import H1Context, RequestRecord

__all__ = ["Backend", "H1Context", "RequestRecord", "serve_h1_connection"]
