"""The console chat: reads command lines, hands them to the desk, prints the reply.

Accepts `/renew-token ...` (as in Slack), `renew-token ...` (as in Teams) or the bare arguments.
"""

from __future__ import annotations

import logging
from typing import TextIO

from adapters.console.threads import PLATFORM
from core.commands import strip_command
from core.desk import Desk, guarded
from core.model import Actor, Origin

ORIGIN = Origin(PLATFORM, "console")
log = logging.getLogger("renewbot.console")


class ConsoleChat:
    def __init__(self, desk: Desk, out: TextIO, user: Actor) -> None:
        self.desk = desk
        self.out = out
        self.user = user

    async def say(self, line: str) -> str:
        """Handle one line as the console user; print and return the reply."""
        self.out.write(f"{self.user.describe()}> {line.strip()}\n")
        reply_text = (
            await guarded(self.desk.handle(strip_command(line), ORIGIN, self.user), "console")
        ).text
        for i, text in enumerate(reply_text.splitlines() or [""]):
            self.out.write(("renewbot (only you): " if i == 0 else "    ") + text + "\n")
        self.out.flush()
        return reply_text
