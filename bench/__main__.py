"""`make bench`: run every benchmark, print one table, write it to bench/results/<date>.md."""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import resource
from datetime import UTC, datetime
from pathlib import Path

from bench import approve, flows, health, signin, teams


def table(rows: list[tuple[str, str, str, str]], anchor: str, ours: str) -> str:
    head = ("path", f"anchor: {anchor}", ours, "ratio")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def teams_goal(turns: list[tuple[str, str, str, str]]) -> list[tuple[str, ...]]:
    """The Teams turn row of the goals, from the Teams table's throughput row."""
    label, anchor, ours, ratio = turns[0]
    met = float(ratio.rstrip("x")) >= 3.0
    return [(label, f"stock botbuilder {anchor}", ours, ratio, ">= 3x", "yes" if met else "no")]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument("--flows", type=int, default=500, help="flows, renewbot against the anchor")
    p.add_argument("--goal-flows", type=int, default=5000, help="flows, renewbot alone")
    p.add_argument("--window", type=float, default=15.0, help="seconds measured per run")
    p.add_argument("--interval", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="runs of the Slack rows")
    p.add_argument("--flow-repeats", type=int, default=1, help="runs of the device-flow rows")
    p.add_argument("--tenants", type=int, default=10_000, help="tenants in the health sweep")
    p.add_argument("--status-tenants", type=int, default=50_000, help="tenants for `status`")
    p.add_argument("--latency", type=float, default=0.05, help="IdP latency in the sweep (s)")
    args = p.parse_args()
    # The bot's warnings at the end of a run (its last replies reach a load generator that has
    # already stopped) are expected here and would bury the table.
    logging.disable(logging.WARNING)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    scale = asyncio.run(health.main(args.tenants, args.status_tenants, args.latency, args.repeats))
    fix, turns = asyncio.run(teams.main(args.repeats))
    rows = asyncio.run(flows.main(args.flows, args.window, args.interval, args.flow_repeats))
    # long enough that every one of the many flows is polled at least twice
    many = asyncio.run(flows.goal(args.goal_flows, max(args.window, 45.0), args.interval))
    approvals = asyncio.run(approve.main(args.repeats))
    sign_ins = asyncio.run(signin.main())
    now = datetime.now(UTC)
    text = (
        f"# renewbot benchmarks, {now:%Y-%m-%d %H:%M} UTC\n\n"
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}. Teams rows: medians of {args.repeats} runs; device-flow "
        f"rows: medians of {args.flow_repeats} run(s) of {args.window:.0f} s; anchor and "
        f"renewbot alternate in the same run. The Slack path's goals are `python -m bench.wrk`'s "
        f"(`make bench` runs it first; its table is in bench/results/wrk-*.md).\n\n"
        f"## Goals (issues 6 and 18)\n\n"
        f"| path | anchor | renewbot | ratio | goal | met |\n|---|---|---|---|---|---|\n"
        + "\n".join("| " + " | ".join(r) + " |" for r in teams_goal(turns) + many + approvals)
        + "\n"
        + "\n".join("| " + " | ".join(r) + " |" for r in scale)  # issue 18, item 6
        + "\n\n"
        f"## Teams turns\n\n"
        f"The msrest fix alone (stock botbuilder echo bot, same run):\n\n"
        f"{table(fix, 'msrest 0.7.1 as shipped', 'safe codes as a frozenset')}\n\n"
        f"renewbot `/api/messages` (JWT validated, `renew-token help`, proactive reply):\n\n"
        f"{table(turns, 'stock CloudAdapter echo bot, msrest as shipped', 'renewbot')}\n\n"
        f"## Pending device flows ({args.flows})\n\n"
        f"{table(rows, 'MSAL blocking loop, thread per flow', 'renewbot scheduler')}\n\n"
        f"## Customer's sign-in -> 'Validated', both ways (issue 14)\n\n"
        f"{signin.table(sign_ins)}\n"
    )
    print(text)
    out = Path(__file__).parent / "results" / f"{now:%Y-%m-%d}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
