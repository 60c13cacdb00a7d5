"""Adaptive Card rendering of core's platform-neutral Message, and reading the cards' buttons back.

Buttons are ``Action.Submit``: Teams delivers a click as a message activity whose ``value`` holds
the button's data (``Action.Execute`` would be an invoke, which botbuilder's aiohttp integration
answers with 500). Each line of text is its own TextBlock so line breaks survive. TextBlocks read a
small markdown subset (Microsoft's "Text formatting in cards": **bold**, _italic_, bulleted and
numbered lists, [links](url)) with no escape character, so the patterns that would turn a name
(tenant, domain, email, user, Microsoft's error text) into a link, emphasis or a list are broken
with an invisible zero-width space, in every TextBlock and in the activity's summary. Mentions
need an `msteams.entities` entry; the only one we send is the message's ``mention`` (core asks to
notify a person), as Microsoft documents for cards ("Mention support within Adaptive Cards"):
``<at>name</at>`` in the first TextBlock and an entity with the same text, so `<at>` anywhere else
in a name stays plain text.
Must not: change a URL (it must copy cleanly) or drop a character of a name.
"""

from __future__ import annotations

import re
from typing import Any

from core.ports import Action, Mention, Message

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_VERSION = "1.5"
SUBMIT_KEY = "renewbot"
_STYLE = {"success": "good", "warning": "warning", "error": "attention"}
_COLOUR = {"success": "Good", "warning": "Warning", "error": "Attention"}
_BUTTON_STYLE = {
    "renew": "positive",
    "renew_all": "positive",
    "new_code": "positive",
    "cancel": "destructive",
}
_MARKDOWN = re.compile(r"(\]\(|\*\*|__)")
# An emphasis opener at the start of a word: a zero-width space before it makes it intraword,
# which cannot open _emphasis_ (CommonMark's flanking rules).
_OPENER = re.compile(r"(?<![\w\u200b])(?=[_*]+\S)")
_LIST = re.compile(r"^(\s*)(?=(?:[-+*]|\d{1,9}[.)])(?:\s|$))")
ZWSP = "\u200b"
_URL = re.compile(r"https?://\S+")
TEXT_LIMIT = 4000


def _defuse(text: str) -> str:
    text = _MARKDOWN.sub(lambda m: m.group(0)[0] + ZWSP + m.group(0)[1:], text)
    return _OPENER.sub(ZWSP, text)


def escape(line: str) -> str:
    """Break link, emphasis and list syntax outside URLs (URLs stay intact, to copy cleanly)."""
    line = _LIST.sub(lambda m: m.group(1) + ZWSP, line)
    out, last = [], 0
    for match in _URL.finditer(line):
        out.append(_defuse(line[last : match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_defuse(line[last:]))
    return "".join(out)


def button(action: Action) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "Action.Submit",
        "title": action.label,
        "data": {SUBMIT_KEY: action.kind, "tenant": action.tenant},
    }
    if action.kind in _BUTTON_STYLE:
        b["style"] = _BUTTON_STYLE[action.kind]
    return b


def mention_entity(who: Mention | None) -> dict[str, Any] | None:
    """The mention entity of ``who`` when they are a Teams user (None otherwise)."""
    if who is None or who.platform != "teams" or not who.user_id:
        return None
    name = re.sub(r"[<>]", "", who.name) or who.user_id
    return {
        "type": "mention",
        "text": f"<at>{name}</at>",
        "mentioned": {"id": who.user_id, "name": name},
    }


def card(message: Message) -> dict[str, Any]:
    """The Adaptive Card for ``message``: its lines, coloured by tone, and its buttons."""
    lines = [ln for ln in message.text[:TEXT_LIMIT].split("\n") if ln.strip()] or [" "]
    entity = mention_entity(message.mention)
    if entity is not None:
        prefix = entity["text"] + " "
    else:
        prefix = escape(f"@{message.mention.name} ") if message.mention else ""
    blocks: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        text = (prefix if i == 0 else "") + escape(line)
        block: dict[str, Any] = {"type": "TextBlock", "text": text, "wrap": True}
        if i == 0 and message.tone in _COLOUR:
            block.update(color=_COLOUR[message.tone], weight="Bolder")
        if i:
            block["spacing"] = "Small"
        blocks.append(block)
    body: list[dict[str, Any]] = blocks
    if message.tone in _STYLE:
        body = [{"type": "Container", "style": _STYLE[message.tone], "items": blocks}]
    content: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
    }
    if message.actions:
        content["actions"] = [button(a) for a in message.actions]
    if entity is not None:
        content["msteams"] = {"entities": [entity]}
    return content


def summary(message: Message) -> str:
    """The notification text Teams shows for the card (its first line), defused like the card."""
    return escape(message.text.split("\n", 1)[0][:200])


def submitted(value: Any) -> tuple[str, str] | None:
    """(action kind, tenant) of a clicked card button, or None when ``value`` is not ours."""
    if not isinstance(value, dict):
        return None
    kind, tenant = value.get(SUBMIT_KEY), value.get("tenant")
    if not isinstance(kind, str) or not isinstance(tenant, str) or not tenant:
        return None
    return kind, tenant
