"""Names we do not control (tenants, domains, emails, users, Microsoft's texts) in every message.

Every public sentence of core.messages is rendered with hostile values in each argument, in each
tone, with buttons, for Slack and for Teams; no rendered field may carry a live mention, link,
broadcast or markdown, and the name must still read as typed.
"""

from __future__ import annotations

import html
import inspect
import re
import typing
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.slack import blocks
from adapters.teams import cards
from core import messages
from core.model import Actor, Origin, Renewal, RenewalState, Tenant
from core.ports import Action, Message

HOSTILE = [
    "<!channel>",
    "<!here|here> <!everyone>",
    "<@U123>",
    "<#C123|ops> <!subteam^S1|@support>",
    "<https://evil.example|click here>",
    "[x](https://evil.example)",
    "*bold* **loud** _it_ __under__ ~gone~",
    "@channel @here @everyone",
    "- 1. list",
    "Fish & <Chips>",
]
NOW = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


def _tenant(name: str) -> Tenant:
    return Tenant(
        key="k1",
        slug=name,
        display_name=name,
        tenant_id=name,
        primary_domain=name,
        admin_upn=name,
        last_validated_at=NOW,
    )


def _renewal(name: str) -> Renewal:
    return Renewal(
        id="r1",
        tenant_key="k1",
        requested_by=Actor("slack", name, name),
        invitation_email=name,
        origin=Origin("slack", "C1"),
        created_at=NOW,
        expected_account=name,
        state=RenewalState.CODE_ISSUED,
        signed_in_account=name,
        failure_code=name,
        warnings=[name],
    )


def _value(hint: Any, name: str) -> Any:
    """A value of type ``hint`` that carries ``name`` wherever a string can go."""
    args = typing.get_args(hint)
    if type(None) in args:  # Optional: the present case is the one that shows text
        (hint,) = [a for a in args if a is not type(None)]
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        inner = args[0]
        if typing.get_origin(inner) is tuple and typing.get_args(inner)[1] is datetime:
            return [(name, NOW), (name, NOW)]
        if typing.get_origin(inner) is tuple:
            return [(name, RenewalState.EXPIRED), (name, RenewalState.VALIDATED)]
        return [_value(inner, name)] if origin is list else (_value(inner, name),)
    simple: dict[Any, Any] = {
        str: name,
        int: 3,
        float: 2.5,
        datetime: NOW,
        Tenant: _tenant(name),
        Renewal: _renewal(name),
        RenewalState: RenewalState.INVITED,
    }
    return simple[hint]


def _sentences(name: str) -> list[tuple[str, str]]:
    """(function name, its text) for every public sentence of core.messages."""
    found = []
    for fname, fn in inspect.getmembers(messages, inspect.isfunction):
        if fname.startswith("_") or fn.__module__ != messages.__name__ or fname == "explain":
            continue
        hints = typing.get_type_hints(fn)
        if hints.pop("return", None) is not str:
            continue  # an email (core.ports.Email): the mail adapter's test covers its names
        text = fn(**{p: _value(h, name) for p, h in hints.items()})
        found.append((fname, text))
    return found


def _messages(name: str) -> list[tuple[str, Message]]:
    out = []
    for fname, text in _sentences(name):
        for tone in ("info", "success", "warning", "error"):
            buttons = (Action("renew", name, "Renew"), Action("cancel", name, "Cancel"))
            out.append((f"{fname}/{tone}", Message(text, tone, buttons)))
    return out


def _slack_fields(rendered: dict[str, Any]) -> list[str]:
    """Every text Slack parses as mrkdwn: the fallback and each mrkdwn text object."""
    fields = [rendered["text"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                fields.append(node["text"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(rendered["blocks"])
    walk(rendered["attachments"])
    return fields


LIVE_SLACK = re.compile(r"[<>]|&(?!amp;|lt;|gt;)|(?<![\w.])@(channel|here|everyone)\b", re.I)


def test_every_message_kind_is_covered() -> None:
    """The sweep below really reaches the sentences that carry names."""
    kinds = {fname for fname, _ in _sentences("N")}
    assert {"thread_opened", "validated", "announcement_failed", "digest", "batch_summary"} <= kinds
    assert len(kinds) > 30


@pytest.mark.parametrize("name", HOSTILE)
def test_slack_renders_no_live_mention_link_or_broadcast(name: str) -> None:
    """A tenant called <!channel> must not ping a channel, in the blocks or the fallback."""
    for kind, message in _messages(name):
        rendered = blocks.render(message)
        assert rendered["text"], kind
        for text in _slack_fields(rendered):
            assert not LIVE_SLACK.search(text), (kind, text)
            shown = html.unescape(text).replace(blocks.ZWSP, "")
            assert shown == message.text[: blocks.SECTION_LIMIT], kind  # the name reads as typed


def test_slack_cuts_long_text_between_entities() -> None:
    """A cut at the section limit never leaves half an entity (Slack would show '&am')."""
    for pad in range(blocks.SECTION_LIMIT - 6, blocks.SECTION_LIMIT + 1):
        text = blocks.escaped("a" * pad + "<<<<")
        assert len(text) <= blocks.SECTION_LIMIT
        assert re.fullmatch(r"a*(&lt;)*", text), text[-12:]


def test_slack_leaves_an_email_at_a_broadcast_domain_alone() -> None:
    """admin@here.com stays copyable; only a bare @here is defused."""
    assert blocks.escape("admin@here.com @here") == "admin@here.com @" + blocks.ZWSP + "here"


_TEAMS_MARKDOWN = [
    re.compile(r"\]\("),  # a link
    re.compile(r"(?<![\w\u200b])[_*]+(?=[^\s\u200b])"),  # emphasis opening a word
    re.compile(r"\*\*|__"),  # bold
    re.compile(r"^\s*(?:[-+*]|\d+[.)])\s"),  # a list item
]


def _teams_texts(card: dict[str, Any]) -> list[str]:
    body = card["body"]
    items = body[0]["items"] if body and body[0]["type"] == "Container" else body
    return [b["text"] for b in items]


@pytest.mark.parametrize("name", HOSTILE)
def test_teams_renders_no_link_emphasis_or_list(name: str) -> None:
    """Every TextBlock and the notification summary are defused; no character is lost."""
    for kind, message in _messages(name):
        card = cards.card(message)
        lines = [ln for ln in message.text.split("\n") if ln.strip()]
        texts = _teams_texts(card)
        assert [t.replace(cards.ZWSP, "") for t in texts] == lines, kind
        summary = cards.summary(message)
        for text in [*texts, summary]:
            for pattern in _TEAMS_MARKDOWN:
                outside_urls = re.sub(r"https?://\S+", "", text)
                assert not pattern.search(outside_urls), (kind, pattern.pattern, text)
        assert summary.replace(cards.ZWSP, "") == message.text.split("\n", 1)[0][:200]
