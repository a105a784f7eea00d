"""HTTP/1.1 front and upstream adapters (trio + httptools)."""

from workers.http1.backend import Backend
from workers.http1.context import H1Context, RequestRecord
from workers.http1.serve import serve_h1_connection

__all__ = ["Backend", "H1Context", "RequestRecord", "serve_h1_connection"]
