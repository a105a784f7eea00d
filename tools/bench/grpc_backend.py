"""The gRPC bench's backend: a grpcio server whose ``bench.Echo/Unary`` returns the request.

Run as ``python -m tools.bench.grpc_backend PORT`` by ``tools/bench/grpc.py`` (grpcio comes
with the ``test`` extra). Generic handler, bytes in and out: no generated code. Must never
listen anywhere but 127.0.0.1; it runs until killed.
"""

from __future__ import annotations

import sys
from concurrent import futures

import grpc

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Unary"


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def main(argv: list[str]) -> int:
    port = int(argv[0])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Unary": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(f"127.0.0.1:{port}") != port:
        print(f"cannot bind 127.0.0.1:{port}", file=sys.stderr)
        return 1
    server.start()
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
