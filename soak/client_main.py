"""One load client process: runs one scenario against one address until a wall-clock time,
writing the recorder's lines to a file.

    python -m soak.client_main --scenario h1_keepalive --target 127.0.0.1:8080 \
        --until 1767000000 --out clients/h1_keepalive.jsonl [--scale 1] [--seed 7] [--cpus 1]

A process per scenario keeps a slow client from slowing the others and lets each report
its own CPU time, so a client bottleneck shows in the report. It must never talk to the
gateway's control socket or sample the gateway.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time

import trio

from soak.recorder import Recorder
from soak.scenario import ClientContext
from soak.scenarios import all_scenarios


async def _run(args: argparse.Namespace, recorder: Recorder) -> None:
    host, _, port = args.target.rpartition(":")
    scenario = all_scenarios()[args.scenario]
    ctx = ClientContext(
        host=host,
        port=int(port),
        scale=args.scale,
        rng=random.Random(args.seed),
        recorder=recorder,
        stop_at=args.until,
        ca_path=args.ca or None,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder.serve_flush, args.interval)

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

        nursery.start_soon(stop_on_signal)
        with trio.move_on_at(trio.current_time() + max(0.0, args.until - _wall())):
            await scenario.run(ctx)
        nursery.cancel_scope.cancel()


def _wall() -> float:
    return time.time()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak-client")
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--target", required=True, metavar="HOST:PORT")
    parser.add_argument("--until", type=float, required=True, help="wall-clock end (epoch s)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--cpus", default="", help="comma-separated CPUs to run on")
    parser.add_argument("--ca", default="", help="CA certificate to trust for TLS listeners")
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    cpus = sorted(os.sched_getaffinity(0))
    print(f"soak client {args.scenario} pid {os.getpid()} on cpus {cpus}", flush=True)
    with open(args.out, "a", buffering=1) as out:
        recorder = Recorder(out)
        trio.run(_run, args, recorder)
        recorder.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
