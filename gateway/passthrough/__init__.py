"""QUIC passthrough by connection ID: the pure decisions (public header, QUIC-LB server
IDs, the connection-ID route table). The worker adapter is workers/quic_passthrough.py."""
