"""Block Kit rendering of core's platform-neutral Message: text, tone colour and buttons.

Tones other than info are shown as a coloured bar (a message attachment holding the blocks), so a
validation is clearly green and a failure red, also on a phone.
"""

from __future__ import annotations

from typing import Any

from core.ports import Action, Message

COLOURS = {"success": "#2EB67D", "warning": "#ECB22E", "error": "#E01E5A"}
ACTION_PREFIX = "renewbot_"
_STYLE = {"renew": "primary", "renew_all": "primary", "new_code": "primary", "cancel": "danger"}
SECTION_LIMIT = 3000


def escape(text: str) -> str:
    """Slack mrkdwn control characters, so names cannot inject links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": escape(message.text)[:SECTION_LIMIT]},
        }
    ]
    if message.actions:
        blocks.append({"type": "actions", "elements": [button(a) for a in message.actions]})
    fallback = message.text[:SECTION_LIMIT]
    if message.tone in COLOURS:
        return {
            "text": fallback,
            "blocks": [],
            "attachments": [{"color": COLOURS[message.tone], "blocks": blocks}],
        }
    return {"text": fallback, "blocks": blocks, "attachments": []}


def action_kind(action_id: str) -> str | None:
    return action_id.removeprefix(ACTION_PREFIX) if action_id.startswith(ACTION_PREFIX) else None
