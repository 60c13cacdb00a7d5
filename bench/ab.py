"""Before/after of two commits, interleaved: `python -m bench.ab --before REF`.

This machine's speed drifts by a third within minutes, so two benches run one after the other
can disagree with each other more than the change they compare. Here the two checkouts take
turns (after, before, after, ...), each run a fresh process of ``bench.renewal_cpu`` (CPU per
renewal of the core and the storage on PostgreSQL), and the table gives each run's rounds and
the ratio of the medians. ``--before`` is checked out in a temporary git worktree; the current
checkout is "after". Both run this checkout's measuring script on their own code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIT = shutil.which("git") or "git"
SCRIPT = Path(__file__).with_name("renewal_cpu.py")


def run(checkout: Path, args: argparse.Namespace) -> list[float]:
    cmd = [sys.executable, str(SCRIPT), "--renewals", str(args.renewals), "--rounds", "5"]
    out = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{checkout}: {out.stderr.strip().splitlines()[-1:]}")
    return list(json.loads(out.stdout.strip().splitlines()[-1])["cpu_ms"])


def spread(xs: list[float]) -> str:
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, help="the commit to compare with (git ref)")
    p.add_argument("--pairs", type=int, default=3, help="after/before runs of each")
    p.add_argument("--renewals", type=int, default=300, help="renewals per round")
    args = p.parse_args()
    commit = subprocess.run(
        [GIT, "rev-parse", "--short", args.before], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if not commit:
        raise SystemExit(f"no such commit: {args.before}")
    head = subprocess.run(
        [GIT, "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    rows: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="renewbot-ab-") as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            [GIT, "worktree", "add", "--detach", "-q", str(before), commit], cwd=ROOT, check=True
        )
        try:
            for _ in range(args.pairs):
                for name, checkout in (("after", ROOT), ("before", before)):
                    rows.append((name, run(checkout, args)))
                    print(f"{name}: {spread(rows[-1][1])}", file=sys.stderr, flush=True)
        finally:
            subprocess.run([GIT, "worktree", "remove", "--force", str(before)], cwd=ROOT)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# Before/after, interleaved, {when}\n")
    print(f"after: {head} (this checkout, uncommitted changes included); before: {commit}. ")
    print("CPU ms per renewal (core and storage on PostgreSQL, chat answered at once), 5 rounds")
    print(f"of {args.renewals} renewals per run, min / median / max.\n")
    print("| order | code | CPU ms per renewal |\n|---|---|---|")
    for i, (name, ms) in enumerate(rows, 1):
        print(f"| {i} | {name} | {spread(ms)} |")
    after = statistics.median(m for name, ms in rows if name == "after" for m in ms)
    was = statistics.median(m for name, ms in rows if name == "before" for m in ms)
    print(
        f"\nMedian of every round: after {after:.2f} ms, before {was:.2f} ms: {after / was:.2f}x."
    )


if __name__ == "__main__":
    main()
