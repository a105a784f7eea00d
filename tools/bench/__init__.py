"""Benchmarks (not tests, never run by pytest): ExpressGateway against HAProxy and nginx.

    python -m tools.bench tcp [--size-gib G] [--connections K]

Each benchmark starts every proxy itself on 127.0.0.1 with configs in a temporary
directory, drives the same backend through each in one run, prints one table, and
stops everything it started, also on failure.
"""
