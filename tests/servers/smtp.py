"""A real SMTP server on 127.0.0.1 (aiosmtpd) that records messages, and can refuse or fail them.

It speaks SMTP as RFC 5321 has it: STARTTLS (RFC 3207) or TLS from the first byte (implicit, RFC
8314), AUTH PLAIN/LOGIN only over TLS (RFC 4954), a 550 for a recipient it refuses ("mailbox
unavailable") and a 421 when told to fail ("service not available, closing channel"). Its
certificate comes from a throwaway test CA (bot.sandbox.tls), as a private mail relay's would.
Runs aiosmtpd's Controller (its own thread and loop): test infrastructure only.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from bot.sandbox.server import bind_loopback
from bot.sandbox.tls import make_ca_and_server

USER, PASSWORD = "renewbot", "smtp-test-password"


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage

    def part(self, subtype: str) -> str:
        found = self.message.get_body(preferencelist=(subtype,))
        assert found is not None, f"no text/{subtype} part"
        return str(found.get_content())


class _Handler:
    def __init__(self, stand: SmtpStandIn) -> None:
        self.stand = stand

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.lower() in self.stand.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.stand.failures > 0:
            self.stand.failures -= 1
            return "421 4.3.0 Service not available, try again later"
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.stand.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 2.0.0 OK: queued"


class SmtpStandIn:
    def __init__(
        self,
        workdir: Path,
        tls: Literal["starttls", "implicit", "none"] = "starttls",
        password: str = PASSWORD,
    ) -> None:
        self.tls = tls
        self.password = password
        self.ca_path, self._context = make_ca_and_server(workdir)
        self.received: list[Received] = []
        self.refuse: set[str] = set()
        self.failures = 0
        self.logins: list[str] = []
        sock = bind_loopback(0)
        self.port = int(sock.getsockname()[1])
        sock.close()
        kwargs: dict[str, Any] = {"authenticator": self._auth, "auth_require_tls": True}
        if tls == "starttls":
            kwargs.update(tls_context=self._context, require_starttls=True)
        elif tls == "implicit":
            # the whole connection is TLS; aiosmtpd only knows of STARTTLS'd ones as "TLS"
            kwargs.update(ssl_context=self._context, auth_require_tls=False)
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, **kwargs
        )

    def _auth(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            self.password.encode(),
        )
        if isinstance(data, LoginPassword):
            self.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)  # handled=True would leave the 535 unsent

    def start(self) -> SmtpStandIn:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def settings(self, **extra: Any) -> dict[str, Any]:
        """RENEWBOT_EMAIL__* values that reach this server."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "tls": self.tls,
            "user": USER,
            "password": self.password,
            "sender": "support@msp.example",
            "sender_name": "MSP Support",
            "organization": "MSP Example",
            "ca_bundle": str(self.ca_path),
            "timeout_seconds": 10,
            **extra,
        }
