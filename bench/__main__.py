"""`make bench`: run every benchmark, print one table, write it to bench/results/<date>.md."""

from __future__ import annotations

import argparse
import asyncio
import platform
import resource
from datetime import UTC, datetime
from pathlib import Path

from bench import flows


def table(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("path", "anchor: MSAL blocking loop, thread per flow", "renewbot scheduler", "ratio")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument("--flows", type=int, default=500)
    p.add_argument("--window", type=float, default=15.0, help="seconds measured per run")
    p.add_argument("--interval", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    rows = asyncio.run(flows.main(args.flows, args.window, args.interval, args.repeats))
    now = datetime.now(UTC)
    text = (
        f"# renewbot benchmarks, {now:%Y-%m-%d %H:%M} UTC\n\n"
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}. Medians of {args.repeats} runs, {args.window:.0f} s "
        f"each, anchor and renewbot alternating in the same run.\n\n"
        f"## Pending device flows ({args.flows})\n\n{table(rows)}\n"
    )
    print(text)
    out = Path(__file__).parent / "results" / f"{now:%Y-%m-%d}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
