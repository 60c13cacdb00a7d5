"""ConsoleThreads: threads printed to a text stream, each line prefixed with its thread number."""

from __future__ import annotations

import itertools
from typing import TextIO

from core.model import Origin, ThreadRef

PLATFORM = "console"


class ConsoleThreads:
    def __init__(self, out: TextIO, alert_label: str = "#alerts") -> None:
        self.out = out
        self.alert_label = alert_label
        self._ids = itertools.count(1)
        self.transcript: list[str] = []
        self._status: dict[str, str] = {}

    def _write(self, line: str) -> None:
        self.transcript.append(line)
        self.out.write(line + "\n")
        self.out.flush()

    def _block(self, prefix: str, text: str) -> None:
        lines = text.splitlines() or [""]
        self._write(f"{prefix} {lines[0]}")
        for more in lines[1:]:
            self._write(f"{' ' * len(prefix)} {more}")

    async def open_thread(self, origin: Origin, text: str) -> ThreadRef:
        key = str(next(self._ids))
        self._block(f"[thread {key}] renewbot:", text)
        return ThreadRef(PLATFORM, key)

    async def post(self, thread: ThreadRef, text: str) -> None:
        self._block(f"[thread {thread.key}]   ↳", text)

    async def update_status(self, thread: ThreadRef, text: str) -> None:
        if self._status.get(thread.key) != text:
            self._status[thread.key] = text
            self._block(f"[thread {thread.key}] status:", text)

    async def announce(self, text: str) -> None:
        self._block(f"[{self.alert_label}]", text)
