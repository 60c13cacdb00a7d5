"""Where a server's CPU goes: py-spy samples of a running process, sorted into a few kinds.

`bench.wrk --profile` records the server during each sustained-renewal run. A sample is counted
once: under "logging" if a log call is anywhere on its stack (whoever called it), else under
the kind of its innermost frame that has one (the package whose own code was running). py-spy
reads the process from outside (no instrumentation in the server); it is in the ``bench``
dependency group.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# (kind, substrings of a frame "function (file:line)"): logging counts every sample with a log
# call anywhere in its stack; the others count the innermost frame that is theirs
KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("logging", ("structlog/", "logging/__init__", "core/logcontext", "bot/logs")),
    ("database", ("sqlalchemy/", "asyncpg/", "aiosqlite/", "adapters/storage/")),
    ("Slack Web API calls", ("slack_sdk/", "adapters/slack/client", "adapters/slack/notifier")),
    ("bolt dispatch", ("slack_bolt/",)),
    ("HTTP (aiohttp)", ("aiohttp/", "multidict", "yarl/")),
    ("renewbot core", ("core/",)),
    ("renewbot adapters", ("adapters/", "bot/")),
    ("event loop", ("asyncio/", "selectors")),
]


def py_spy() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start sampling ``pid`` for ``seconds`` (100 Hz, not pausing it); None without py-spy."""
    exe = py_spy()
    if exe is None:
        return None
    cmd = [exe, "record", "-p", str(pid), "-d", f"{max(1, int(seconds))}", "-r", "100",
           "-f", "raw", "-o", str(out), "--nonblocking"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kind_of(frames: list[str]) -> str:
    """Logging if any frame logs (inclusive); else the innermost frame's kind (self time)."""
    logging_marks = KINDS[0][1]
    if any(m in f for f in frames for m in logging_marks):
        return "logging"
    for frame in reversed(frames):
        for kind, marks in KINDS[1:]:
            if any(m in frame for m in marks):
                return kind
    return "other"


def kinds(raw: Path) -> tuple[int, Counter[str]]:
    """Samples in all and per kind, from py-spy's raw (collapsed stacks) output."""
    total, per = 0, Counter[str]()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            total += int(count)
            per[kind_of(stack.split(";"))] += int(count)
    return total, per


def shares(raw: Path) -> dict[str, float]:
    """Percent of busy samples per kind."""
    total, per = kinds(raw)
    return {kind: 100 * n / total for kind, n in per.items()} if total else {}


def table(raw: Path) -> str:
    total, per = kinds(raw)
    if not total:
        return "(no samples)"
    rows = ["| where | share of busy samples |", "|---|---|"]
    for kind, _ in [*KINDS, ("other", ())]:
        rows.append(f"| {kind} | {100 * per[kind] / total:.1f}% |")
    return "\n".join(rows) + f"\n\n{total} samples at 100 Hz, idle excluded."
