"""Slack's edges through the real bolt stack: the workspace check and names that look like mrkdwn.

Requests are signed with the test secret, as Slack signs them; what the bot posts is read back
from the Web API stand-in exactly as it was sent.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from tests.fakes.refs import random_tenant
from tests.integration.live import live_bot, until
from tests.integration.test_slack import click_body, command_body, parent, post, slack_settings
from tests.servers.slack import SlackStandIn

ACCESS = {"workspaces": ["T1"]}


def without_team(body: str) -> str:
    """A slash command body with no team_id at all."""
    return urlencode([(k, v) for k, v in parse_qsl(body) if k != "team_id"])


def in_team(body: str, team: str) -> str:
    return urlencode([(k, team if k == "team_id" else v) for k, v in parse_qsl(body)])


def click_without_team(stand: SlackStandIn, kind: str, tenant: str) -> str:
    payload = json.loads(dict(parse_qsl(click_body(stand, kind, tenant)))["payload"])
    payload.pop("team")
    payload["user"].pop("team_id")
    return urlencode({"payload": json.dumps(payload)})


async def test_a_request_without_a_workspace_is_refused(
    tmp_path: Path, slack: SlackStandIn
) -> None:
    """With a workspace configured, a signed command or click that names no workspace, or
    another one, is refused with 403 and starts nothing; the configured workspace is served."""
    async with live_bot(tmp_path, slack=slack_settings(slack), access=ACCESS) as live:
        assert await post(live, without_team(command_body(slack, "contoso"))) == 403
        assert await post(live, in_team(command_body(slack, "contoso"), "T-other")) == 403
        assert await post(live, in_team(command_body(slack, "contoso"), "")) == 403
        async with live.rt.uow() as uow:
            assert not await uow.renewals.for_tenant(live.tenants["contoso"].key, limit=1)
        assert not slack.called("chat.postMessage") and not slack.responses

        assert await post(live, command_body(slack, "contoso")) == 200
        await live.wait_for("contoso", lambda r: r.thread is not None)
        assert await post(live, click_without_team(slack, "cancel", "contoso")) == 403
        assert (await live.renewal("contoso")).state.value == "invited"
        assert await post(live, click_body(slack, "cancel", "contoso")) == 200
        await live.wait_for("contoso", lambda r: r.state.value == "cancelled")


async def test_without_configured_workspaces_any_workspace_is_served(
    tmp_path: Path, slack: SlackStandIn
) -> None:
    """The check is off until workspaces are configured (the development default)."""
    async with live_bot(tmp_path, slack=slack_settings(slack)) as live:
        assert await post(live, without_team(command_body(slack, "contoso"))) == 200
        await live.wait_for("contoso", lambda r: r.thread is not None)


OWN_LINK = re.compile(r"<https://[\w.-]+\.slack\.com/archives/[^|>]+\|Open the thread>")
LIVE = re.compile(r"<[!@#]|<https?:|(?<![\w.])@(channel|here|everyone)\b", re.IGNORECASE)


def _texts(args: dict[str, Any]) -> list[str]:
    """Every mrkdwn text of a chat.postMessage / chat.update call as the stand-in stored it."""
    found = [str(args.get("text", ""))]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(str(node["text"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(args.get("blocks"))
    walk(args.get("attachments"))
    return found


async def test_a_tenant_called_channel_pings_nobody(tmp_path: Path, slack: SlackStandIn) -> None:
    """A display name of `<!channel>` and friends reaches Slack escaped in every field,
    the notification fallback included, and in the reply to the person who asked."""
    evil = dataclasses.replace(
        random_tenant("evil"),
        display_name="<!channel> Evil <@U123> <https://evil.example|click> @here",
        admin_upn="<!everyone>@evil.example",
    )
    async with live_bot(tmp_path, slack=slack_settings(slack)) as live:
        async with live.rt.uow() as uow:
            await uow.tenants.add(evil)
            await uow.commit()
        assert await post(live, command_body(slack, evil.slug)) == 200
        await until(lambda: slack.responses and parent(slack))
        await until(
            lambda: any("/onboard/" in str(a["text"]) for a in slack.called("chat.postMessage"))
        )
    calls = slack.called("chat.postMessage") + slack.called("chat.update")
    texts = [t for args in calls for t in _texts(args)]
    texts += [str(r.get("text", "")) for r in slack.responses]
    assert any("&lt;!channel&gt; Evil &lt;@U123&gt;" in t for t in texts)  # shown, as typed
    assert any("&lt;!everyone&gt;@evil.example" in t for t in texts)
    for text in texts:
        text = OWN_LINK.sub("", text)  # the one link we add ourselves
        assert not LIVE.search(text), text
