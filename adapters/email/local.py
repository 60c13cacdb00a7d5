"""LocalMailbox: the demo's "mail server": each email as an .eml file, shown in the console.

For `renewbot demo` only (nothing leaves the machine). Shows the plain text part as the customer
would read it. Must not be wired in production.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TextIO

from adapters.email.render import mime, text_part
from core.errors import EmailRejectedError
from core.ports import Email


class LocalMailbox:
    def __init__(self, directory: Path, out: TextIO, sender: str = "renewbot@localhost") -> None:
        self.directory = directory
        self.out = out
        self.sender = sender
        self.count = 0
        self.transcript: list[str] = []

    async def send(self, email: Email, message_id: str) -> None:
        try:
            message = mime(email, self.sender, "renewbot demo", message_id)
        except ValueError as exc:
            raise EmailRejectedError(str(exc)) from None
        self.count += 1
        path = self.directory / f"{self.count:03d}.eml"
        await asyncio.to_thread(self._write, path, bytes(message))
        lines = [f"[mail to {email.to}] Subject: {email.subject}", *text_part(email).splitlines()]
        for i, line in enumerate(lines):
            shown = line if i == 0 else f"    | {line}"
            self.transcript.append(shown)
            self.out.write(shown + "\n")
        self.out.write(f"    (saved as {path})\n")
        self.out.flush()

    def _write(self, path: Path, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
