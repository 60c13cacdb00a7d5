"""SmtpMailer: core's Mailer over SMTP with aiosmtplib, STARTTLS or implicit TLS, and login.

One connection per email (invitations are few; a pooled connection would idle out on most
servers). Server answers become core's errors at this boundary: a 5xx to the recipient or the
message is EmailRejectedError (sending again cannot help), a 4xx, a timeout, a refused connection
or a TLS failure EmailDeliveryError (later may work). A refused login is reported as a delivery
error naming the settings to check, so the email waits for the fix instead of being dropped.
The reason carries the server's code and words, never the message (its body holds the Auth URL).
Must not: log the message, its body or the password.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Literal

import aiosmtplib

from adapters.email.render import mime
from core.errors import EmailDeliveryError, EmailRejectedError
from core.ports import Email

TlsMode = Literal["starttls", "implicit", "none"]


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    tls: TlsMode = "starttls"
    user: str = ""
    password: str = field(default="", repr=False)
    sender_name: str = ""
    reply_to: str = ""
    ca_bundle: str | None = None
    timeout: float = 30.0


def _reason(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {str(exc.message).strip()[:150]}"


class SmtpMailer:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._tls = ssl.create_default_context(cafile=config.ca_bundle)

    async def send(self, email: Email, message_id: str) -> None:
        c = self.config
        try:
            message = mime(email, c.sender, c.sender_name, message_id, c.reply_to)
        except ValueError as exc:
            raise EmailRejectedError(str(exc)) from None
        client = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            use_tls=c.tls == "implicit",
            start_tls=c.tls == "starttls",
            tls_context=self._tls if c.tls != "none" else None,
            timeout=c.timeout,
        )
        try:
            async with client:
                if c.user:
                    await client.login(c.user, c.password)
                await client.send_message(message)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise EmailDeliveryError(
                f"{exc.code} login refused: check RENEWBOT_EMAIL__USER and __PASSWORD"
            ) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0] if exc.recipients else None
            if first is None:
                raise EmailRejectedError("the recipient was refused") from None
            error = EmailRejectedError if first.code >= 500 else EmailDeliveryError
            raise error(_reason(first)) from None
        except aiosmtplib.SMTPResponseException as exc:
            error = EmailRejectedError if exc.code >= 500 else EmailDeliveryError
            raise error(_reason(exc)) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            raise EmailDeliveryError(
                f"the mail server was not reachable ({type(exc).__name__})"
            ) from None
