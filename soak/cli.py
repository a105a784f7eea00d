"""`expressgateway-soak`: the command line of the soak runner.

Parses flags into `RunOptions`, lists what exists, runs, prints the verdict table and
exits 0 only when every verdict passes (1 otherwise, 2 for a usage error). It must never
hold run logic of its own.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from soak import chaos_schedule as cs
from soak.gateway_process import GatewayError
from soak.profiles import PROFILES
from soak.run import RunOptions, reanalyze, run
from soak.scenarios import all_scenarios, default_names

EPILOG = """\
examples:
  expressgateway-soak --profile ci --out /tmp/soak-ci
  expressgateway-soak --profile hour --out /var/tmp/soak-hour --client-cpus 3 --gateway-cpus 0,1,2
  expressgateway-soak --profile custom --duration 900 --scenario h1_keepalive,ws_echo --chaos reload,worker_kill
  expressgateway-soak --attach --control-socket /run/expressgateway/control.sock \\
      --admin-url http://127.0.0.1:9090 --target h1_keepalive=127.0.0.1:8080 --profile hour

The run writes gateway.toml, gateway.log, backend-*.log, clients/*.jsonl, samples.jsonl,
chaos.jsonl, meta.json, run_end.json, report.json and report.html into --out.
Exit status: 0 every verdict passed, 1 a verdict failed, 2 usage error.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="expressgateway-soak",
        description="Drive the real gateway with real clients and backends for a long time, "
        "inject faults on a seeded schedule, sample every process, decide BOUNDED/DRIFT per "
        "series and write report.json + report.html.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--profile", choices=sorted(PROFILES), default="ci",
                   help="run length and pacing: ci (~2 min), hour, day, custom (needs --duration); default ci")  # fmt: skip
    p.add_argument("--duration", type=float, metavar="S",
                   help="run length in seconds (overrides the profile's; keeps its pacing)")  # fmt: skip
    p.add_argument(
        "--sample", type=float, metavar="S", help="seconds between samples of the gateway"
    )
    p.add_argument("--warmup", type=float, metavar="S",
                   help="seconds at the start left out of the trend verdicts")  # fmt: skip
    p.add_argument("--scenario", action="append", default=[], metavar="NAME[,NAME]",
                   help="scenarios to run (repeatable; default every default scenario; see --list)")  # fmt: skip
    p.add_argument("--chaos", default="all", metavar="KIND[,KIND]|all|none",
                   help="fault kinds to inject (see --list); default all")  # fmt: skip
    p.add_argument("--chaos-every", type=float, metavar="S", help="seconds between faults (±20%%)")
    p.add_argument("--seed", type=int, default=1, help="seeds the fault schedule and the clients")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiplies every scenario's connections/tasks (load), default 1")  # fmt: skip
    p.add_argument("--out", type=Path, help="output directory (default ./soak-out/PROFILE-TIME)")
    p.add_argument(
        "--list", action="store_true", help="list scenarios, fault kinds and profiles, then exit"
    )
    p.add_argument("--reanalyze", type=Path, metavar="DIR",
                   help="judge a finished (or cut short) run again from its files in DIR and rewrite its report")  # fmt: skip
    p.add_argument("--client-cpus", default="", metavar="LIST",
                   help="CPUs the load client processes run on, e.g. 3 or 2,3 (default: any)")  # fmt: skip
    p.add_argument("--gateway-cpus", default="", metavar="LIST",
                   help="CPUs the gateway's workers are pinned to (runtime.workers), default auto")  # fmt: skip
    p.add_argument("--access-log", action="store_true", help="keep the gateway's access log on")
    a = p.add_argument_group(
        "driving a gateway that is already running (bare metal)",
        "Run as root or as the gateway's user, on its host, so its processes can be sampled. "
        "Faults that need the runner's own backends or config file are skipped.",
    )
    a.add_argument("--attach", action="store_true",
                   help="do not start a gateway or backends: drive the one at --control-socket")  # fmt: skip
    a.add_argument("--control-socket", default="/run/expressgateway/control.sock", metavar="PATH",
                   help="the gateway's runtime.control_socket (default %(default)s)")  # fmt: skip
    a.add_argument("--admin-url", default="http://127.0.0.1:9090", metavar="URL",
                   help="the gateway's metrics_bind, for /metrics")  # fmt: skip
    a.add_argument("--ca", default="", metavar="PEM",
                   help="CA certificate the clients trust for the gateway's TLS listeners")  # fmt: skip
    a.add_argument("--target", action="append", default=[], metavar="SCENARIO=HOST:PORT",
                   help="the gateway listener a scenario drives (repeatable; each scenario run needs one)")  # fmt: skip
    return p


def _list() -> str:
    lines = ["scenarios (* = in a default run):"]
    for name, s in all_scenarios().items():
        lines.append(f"  {'*' if s.default else ' '} {name:20} {s.front}->{s.backend}  {s.summary}")
    lines.append("fault kinds (allowed client errors):")
    for kind in cs.KINDS:
        lines.append(f"    {kind:20} {', '.join(sorted(cs.ALLOWED_ERRORS[kind])) or 'none'}")
    lines.append("profiles:")
    for p in PROFILES.values():
        lines.append(
            f"    {p.name:8} {p.duration_s:>7g}s  sample {p.sample_s:g}s  warm-up {p.warmup_s:g}s  "
            f"fault every {p.chaos_every_s:g}s"
        )
    return "\n".join(lines)


def options(argv: list[str]) -> RunOptions:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(_list())
        raise SystemExit(0)
    known = all_scenarios()
    names = [n for arg in args.scenario for n in arg.split(",") if n] or default_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; --list shows them")
    if args.chaos == "all":
        kinds = cs.KINDS
    elif args.chaos == "none":
        kinds = ()
    else:
        kinds = tuple(k for k in args.chaos.split(",") if k)
        if bad := [k for k in kinds if k not in cs.KINDS]:
            parser.error(f"unknown fault kind(s) {bad}; --list shows them")
    if args.profile == "custom" and args.duration is None:
        parser.error("--profile custom needs --duration")
    profile = PROFILES[args.profile]
    if args.duration is not None:
        profile = profile.with_duration(args.duration)
    overrides = {
        "sample_s": args.sample,
        "warmup_s": args.warmup,
        "chaos_every_s": args.chaos_every,
    }
    from dataclasses import replace

    profile = replace(profile, **{k: v for k, v in overrides.items() if v is not None})
    targets: dict[str, str] = {}
    if args.attach:
        for t in args.target:
            name, _, addr = t.partition("=")
            targets[name] = addr
        if missing := [n for n in names if n not in targets]:
            parser.error(f"--attach needs --target for every scenario; missing {missing}")
        if skipped := [k for k in kinds if k in cs.NEEDS_OWN_BACKENDS]:
            print(
                f"attached: skipping faults that need the runner's own backends/config: {skipped}"
            )
            kinds = tuple(k for k in kinds if k not in cs.NEEDS_OWN_BACKENDS)
    out = args.out or Path("soak-out") / f"{profile.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    return RunOptions(
        profile=profile,
        scenarios=[known[n] for n in names],
        chaos_kinds=kinds,
        out=out,
        seed=args.seed,
        scale=args.scale,
        client_cpus=args.client_cpus,
        gateway_cpus=args.gateway_cpus,
        access_log=args.access_log,
        attach_control=args.control_socket if args.attach else "",
        attach_admin_url=args.admin_url if args.attach else "",
        attach_targets=targets,
        attach_ca=args.ca,
        command=shlex.join(["expressgateway-soak", *argv]),
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    again = build_parser().parse_args(args).reanalyze
    try:
        if again is not None:
            out, analysis = again, reanalyze(again)
        else:
            opts = options(args)
            out, analysis = opts.out, run(opts)
    except (GatewayError, TimeoutError, FileNotFoundError) as exc:
        print(f"expressgateway-soak: {exc}", file=sys.stderr)
        return 1
    width = max(len(v["series"]) for v in analysis.verdicts)
    for v in analysis.verdicts:
        print(
            f"{v['series']:<{width}}  {v['verdict']:<12}  {v.get('detail') or v.get('note') or ''}"
        )
    print(f"{'PASS' if analysis.passed else 'FAIL'}: report {out / 'report.html'}")
    return 0 if analysis.passed else 1


if __name__ == "__main__":
    sys.exit(main())
