"""Teams rendering: what a card shows, how its buttons come back, and what a typed line means."""

from __future__ import annotations

from typing import Any

import pytest
from botbuilder.schema import Activity

from adapters.teams import cards
from adapters.teams.app import command_text
from core.ports import Action, Message


def _texts(card: dict[str, Any]) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = card["body"]
    if body and body[0]["type"] == "Container":
        items: list[dict[str, Any]] = body[0]["items"]
        return items
    return body


def test_each_line_is_a_text_block_and_tone_colours_the_card() -> None:
    """A failure is red (attention) at a glance; line breaks survive as separate blocks."""
    card = cards.card(Message("Failed: consent needed.\nAsk the customer to accept.", "error"))
    assert card["body"][0]["style"] == "attention"
    first, second = _texts(card)
    assert first["color"] == "Attention" and first["text"] == "Failed: consent needed."
    assert second["text"] == "Ask the customer to accept."
    assert all(b["wrap"] for b in _texts(card))


def test_buttons_are_submit_actions_that_read_back_as_commands() -> None:
    """A button's data names the action and the tenant, and nothing else is taken as ours."""
    card = cards.card(Message("x", actions=(Action("renew", "contoso", "Renew"),)))
    (button,) = card["actions"]
    assert button["type"] == "Action.Submit" and button["title"] == "Renew"
    assert cards.submitted(button["data"]) == ("renew", "contoso")
    assert cards.submitted({"something": "else"}) is None
    assert cards.submitted("renew") is None
    assert cards.submitted({"renewbot": "renew", "tenant": ""}) is None


def test_a_tenant_name_cannot_become_a_link_or_bold() -> None:
    """Markdown in data (names, emails) is defused; URLs stay intact so they copy cleanly."""
    text = "Renewal for [Pay here](https://evil.example) **now** at https://bot.example/onboard/abc"
    (block,) = _texts(cards.card(Message(text)))
    assert "](" not in block["text"] and "**" not in block["text"]
    assert "https://bot.example/onboard/abc" in block["text"]
    assert block["text"].replace(cards.ZWSP, "") == text


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("<at>renewbot</at> renew-token contoso", "contoso"),
        ("<at>renewbot</at>&nbsp;renew-token status", "status"),
        ("renew-token  cancel   fabrikam", "cancel fabrikam"),
        ("<p><at>renewbot</at> <b>renew-token</b> help</p>", "help"),
        ("contoso admin@contoso.com", "contoso admin@contoso.com"),
        ("renew-tokenx", "renew-tokenx"),
    ],
)
def test_command_text_drops_the_mention_and_markup(typed: str, meant: str) -> None:
    """What people type in Teams reads as the same command as in Slack."""
    assert command_text(Activity(type="message", text=typed)) == meant
