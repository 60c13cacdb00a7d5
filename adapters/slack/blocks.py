"""Block Kit rendering of core's platform-neutral Message: text, tone colour and buttons.

Tones other than info are shown as a coloured bar (a message attachment holding the blocks), so a
validation is clearly green and a failure red, also on a phone.

Core's text carries names we do not control (tenant display names, domains, emails, user names,
Microsoft's error descriptions). Every field Slack renders as mrkdwn (the section and the
top-level `text` fallback that notifications and some clients show) is escaped, so no name can
become a link, a mention or a channel broadcast. The one mention we send on purpose is the
message's ``mention`` (core asks to notify a person: the requester of a stalled renewal), written
as Slack's ``<@U123>`` in front of the escaped text, and only for a Slack user id of the usual
shape. Must not: pass text to Slack unescaped, or escape text twice.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from core.ports import Action, Mention, Message

COLOURS = {"success": "#2EB67D", "warning": "#ECB22E", "error": "#E01E5A"}
ACTION_PREFIX = "renewbot_"
_STYLE = {"renew": "primary", "renew_all": "primary", "new_code": "primary", "cancel": "danger"}
SECTION_LIMIT = 3000


# Slack's "Formatting text for app surfaces" (api.slack.com/reference/surfaces/formatting,
# #escaping): &, < and > are the control characters, to be sent as &amp; &lt; &gt;. With them
# escaped no <@U...>, <!channel> or <url|label> survives. The text object reference adds that
# mrkdwn which is not `verbatim` has "certain mentions ... automatically parsed": the bare
# broadcast words get an invisible zero-width space after the @ as well.
_BROADCAST = re.compile(r"(?<![\w.])@(?=(?:channel|here|everyone)\b)", re.IGNORECASE)
ZWSP = "\u200b"
_CUT_ENTITY = re.compile(r"&[a-z]{0,3}$")
# A Slack user id (U..., or W... in Enterprise Grid): nothing in it can close the <@...> syntax.
_USER_ID = re.compile(r"^[UW][A-Za-z0-9_-]{1,40}$")


def mention(who: Mention | None) -> str:
    """A real mention of ``who`` (Slack's "Formatting text": <@U123>), or their name, escaped,
    when they are not a Slack user; "" without one."""
    if who is None:
        return ""
    if who.platform == "slack" and _USER_ID.match(who.user_id):
        return f"<@{who.user_id}> "
    return escape(f"@{who.name}") + " "


@functools.lru_cache(maxsize=1024)
def escape(text: str) -> str:
    """Slack mrkdwn control characters, so names cannot inject links or mentions.

    Remembered for the texts seen most (help, usage replies, status lines): escaping the 1.5 kB
    help text was a tenth of a `help` command's CPU under load (py-spy, bench/wrk.py)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub("@" + ZWSP, text)


def escaped(text: str, limit: int = SECTION_LIMIT) -> str:
    """``text`` escaped and cut to ``limit`` characters, never in the middle of an entity."""
    out = escape(text[:limit])
    return out if len(out) <= limit else _CUT_ENTITY.sub("", out[:limit])


def button(action: Action) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "button",
        "action_id": f"{ACTION_PREFIX}{action.kind}",
        "text": {"type": "plain_text", "text": action.label},
        "value": action.tenant,
    }
    if action.kind in _STYLE:
        b["style"] = _STYLE[action.kind]
    if action.kind == "cancel":
        b["confirm"] = {
            "title": {"type": "plain_text", "text": "Cancel this renewal?"},
            "text": {"type": "plain_text", "text": "The customer's Auth URL will stop working."},
            "confirm": {"type": "plain_text", "text": "Cancel renewal"},
            "deny": {"type": "plain_text", "text": "Keep it"},
        }
    return b


def render(message: Message) -> dict[str, Any]:
    """Keyword arguments for chat.postMessage / chat.update (text is the notification fallback)."""
    who = mention(message.mention)
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": who + escaped(message.text, SECTION_LIMIT - len(who)),
            },
        }
    ]
    if message.actions:
        blocks.append({"type": "actions", "elements": [button(a) for a in message.actions]})
    fallback = who + escaped(message.text, SECTION_LIMIT - len(who))
    if message.tone in COLOURS:
        return {
            "text": fallback,
            "blocks": [],
            "attachments": [{"color": COLOURS[message.tone], "blocks": blocks}],
        }
    return {"text": fallback, "blocks": blocks, "attachments": []}


def action_kind(action_id: str) -> str | None:
    return action_id.removeprefix(ACTION_PREFIX) if action_id.startswith(ACTION_PREFIX) else None
