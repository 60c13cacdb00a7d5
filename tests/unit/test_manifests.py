"""The Slack app manifest renders to valid YAML pointing at the bot's public URL."""

from __future__ import annotations

import pytest
import yaml

from bot import manifests


def test_slack_manifest_points_commands_and_buttons_at_the_bot() -> None:
    """Slash command and interactivity both go to /slack/events; scopes are the ones we use."""
    doc = yaml.safe_load(manifests.slack("https://bot.example.com/"))
    (command,) = doc["features"]["slash_commands"]
    assert command["command"] == "/renew-token"
    assert command["url"] == "https://bot.example.com/slack/events"
    assert doc["settings"]["interactivity"]["request_url"] == "https://bot.example.com/slack/events"
    assert set(doc["oauth_config"]["scopes"]["bot"]) == {
        "commands",
        "chat:write",
        "chat:write.public",
        "usergroups:read",
    }
    assert doc["settings"]["socket_mode_enabled"] is False
    assert len(doc["display_information"]["long_description"]) >= 175


def test_socket_mode_variant() -> None:
    """Socket Mode is a flag of the same manifest."""
    doc = yaml.safe_load(manifests.slack("https://bot.example.com", socket_mode=True))
    assert doc["settings"]["socket_mode_enabled"] is True


@pytest.mark.parametrize("url", ["http://bot.example.com", "bot.example.com", "https://", ""])
def test_public_url_must_be_https(url: str) -> None:
    """Slack only calls https endpoints; a wrong URL is refused in words."""
    with pytest.raises(manifests.ManifestError):
        manifests.slack(url)
