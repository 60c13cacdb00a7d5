"""ConsoleThreads: threads printed to a text stream, each line prefixed with its thread number.

Tones become a leading mark and buttons a bracketed list, so the console shows what Slack and
Teams show.
"""

from __future__ import annotations

import itertools
from typing import TextIO

from core.model import Origin, ThreadRef
from core.ports import Message

PLATFORM = "console"
MARKS = {"info": "", "success": "[OK] ", "warning": "[!] ", "error": "[FAILED] "}


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

    def _block(self, prefix: str, message: Message) -> None:
        who = f"@{message.mention.name} " if message.mention else ""
        text = MARKS[message.tone] + who + message.text
        if message.actions:
            text += "\n" + "  ".join(f"[{a.label}]" for a in message.actions)
        lines = text.splitlines() or [""]
        self._write(f"{prefix} {lines[0]}")
        for more in lines[1:]:
            self._write(f"{' ' * len(prefix)} {more}")

    async def open_thread(self, origin: Origin, message: Message) -> ThreadRef:
        key = str(next(self._ids))
        self._status[key] = message.text
        self._block(f"[thread {key}] renewbot:", message)
        return ThreadRef(PLATFORM, key)

    async def post(self, thread: ThreadRef, message: Message) -> None:
        self._block(f"[thread {thread.key}]   ↳", message)

    async def update_status(self, thread: ThreadRef, message: Message) -> None:
        if self._status.get(thread.key) != message.text:
            self._status[thread.key] = message.text
            status_only = Message(message.text.splitlines()[-1], message.tone, message.actions)
            self._block(f"[thread {thread.key}] status:", status_only)

    async def announce(self, message: Message) -> None:
        self._block(f"[{self.alert_label}]", message)
