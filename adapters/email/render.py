"""Core's platform-neutral Email as a MIME message: a plain text part and an HTML alternative.

Wording comes from core.messages; this module only lays it out. Every value is escaped in the
HTML, and header values lose line breaks (a name cannot add a header). Must not: log a message
(its body holds the Auth URL) or invent wording.
"""

from __future__ import annotations

import html
import re
from email.message import EmailMessage
from email.utils import formataddr, formatdate

from core.ports import Email

_LINE_BREAKS = re.compile(r"[\r\n\t\x00]+")
ADDRESS = re.compile(r"^[^@\s<>\"(),;:\\\[\]]+@[^@\s<>\"(),;:\\\[\]]+\.[^@\s<>\"(),;:\\\[\]]+$")


def header(value: str) -> str:
    return _LINE_BREAKS.sub(" ", value).strip()[:900]


def text_part(email: Email) -> str:
    return "\n\n".join([*email.intro, email.link, *email.outro]) + "\n"


def html_part(email: Email) -> str:
    e = html.escape
    link = e(email.link, quote=True)
    label = e(email.link_label or email.link)
    parts = [f"<p>{e(p)}</p>" for p in email.intro]
    parts.append(
        f'<p><a href="{link}" style="display:inline-block;padding:10px 18px;'
        f'background:#0b5cad;color:#ffffff;border-radius:6px;text-decoration:none">{label}</a>'
        f'</p><p style="font-size:13px;color:#555">Or copy this link: {e(email.link)}</p>'
    )
    parts += [f"<p>{e(p)}</p>" for p in email.outro]
    return (
        '<!doctype html><html><body style="font-family:Segoe UI,Arial,sans-serif;'
        'font-size:15px;line-height:1.45;color:#1b1b1b;max-width:36rem">'
        + "".join(parts)
        + "</body></html>"
    )


def mime(
    email: Email, sender: str, sender_name: str, message_id: str, reply_to: str = ""
) -> EmailMessage:
    """The message to send. Raises ValueError when the recipient is not an email address."""
    to = header(email.to)
    if not ADDRESS.match(to):
        raise ValueError("the recipient is not an email address")
    msg = EmailMessage()
    msg["From"] = formataddr((header(sender_name), sender)) if sender_name else sender
    msg["To"] = to
    msg["Subject"] = header(email.subject)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to the bot, please
    if reply_to:
        msg["Reply-To"] = reply_to
    msg.set_content(text_part(email))
    msg.add_alternative(html_part(email), subtype="html")
    return msg
