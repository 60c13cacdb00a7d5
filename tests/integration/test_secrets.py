"""Secrets stay secret: a whole renewal leaves no token, device code or Auth URL token in logs,
chat or the database file."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import structlog

from adapters.storage.crypto import SecretBox, generate_key
from bot import logging as bot_logging
from bot.sandbox import shapes
from core.model import RenewalState as S
from tests.integration.live import live_bot, until
from tests.servers.bot_connector import BotConnectorStandIn

Saved = tuple[list[logging.Handler], dict[str, int]]


def snapshot() -> Saved:
    """The root handlers and the levels configure() changes, to put back after a DEBUG test."""
    names = ["", *bot_logging.NOISY]
    return logging.getLogger().handlers[:], {n: logging.getLogger(n).level for n in names}


def restore(saved: Saved) -> None:
    for handler in logging.getLogger().handlers:  # lines still pending: written, then read
        handler.flush()
    handlers, levels = saved
    logging.getLogger().handlers[:] = handlers
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


async def test_whole_renewal_leaks_no_secret(tmp_path: Path) -> None:
    """Tokens and device codes reach no log, chat or plaintext row; the Auth URL no log."""
    stream = io.StringIO()
    saved = snapshot()
    bot_logging.configure(json=True, level=logging.DEBUG, stream=stream)
    try:
        with structlog.testing.capture_logs() as captured:
            async with live_bot(tmp_path) as live:
                await live.say("contoso")
                url = live.auth_url()
                status = await live.press(url)
                await live.sign_in(str(status["user_code"]), "admin@contoso.com")
                await live.wait_state("contoso", S.VALIDATED)
                await live.wait_text("validated for Contoso")
                await live.say("validate contoso")
                secrets = list(live.sandbox.directory.issued_secrets)
                chat = "\n".join(live.chat.texts() + live.chat.announcements)
    finally:
        restore(saved)
    logs = stream.getvalue() + repr(captured)
    token = url.rsplit("/", 1)[1]
    assert len(secrets) >= 5  # a device code, access/refresh/id tokens were really issued
    assert "renewal.requested" in logs  # the log did capture the renewal
    for secret in [*secrets, token]:
        assert secret not in logs, "a secret reached the log"
    for secret in secrets:  # the Auth URL itself is meant for the thread; tokens are not
        assert secret not in chat, "a secret reached the chat"
    database = (tmp_path / "bot.db").read_bytes()
    wal = tmp_path / "bot.db-wal"
    if wal.exists():
        database += wal.read_bytes()
    for secret in [*secrets, token]:
        assert secret.encode() not in database, "a secret is stored in plaintext"


def test_redaction_masks_secret_keys_and_token_shapes() -> None:
    """The log processor masks by key and by value shape, recursively."""
    event = bot_logging.redact_secrets(
        None,
        "info",
        {
            "event": "x Bearer abc.def.ghi and xoxb-test-123-abc",
            "refresh_token": "rt",
            "nested": {"device_code": "dc", "ok": "/onboard/" + "a" * 43},
        },
    )
    assert event["refresh_token"] == "[redacted]"
    assert event["nested"]["device_code"] == "[redacted]"
    assert "abc.def" not in event["event"] and "xoxb-test" not in event["event"]
    assert event["nested"]["ok"] == "/onboard/[redacted]"


def test_redaction_knows_entra_secret_shapes() -> None:
    """Device codes, refresh tokens, authorization codes and sealed caches are masked wherever
    they appear: JSON (msal's cache event), form bodies, SQL rows, free text."""
    device_code, refresh = shapes.device_code(), shapes.refresh_token()
    code, access = shapes.authorization_code(), shapes.access_token("t", "https://graph")
    sealed = SecretBox([generate_key()]).seal(b"{}")
    sealed_text = sealed.decode()
    texts = [
        json.dumps({"data": {"device_code": device_code, "code": code}}, indent=4),
        f"grant_type=refresh_token&client_id=x&refresh_token={refresh}&scope=openid",
        f"Row ('contoso', {sealed!r}, 3)",
        f"sign-in with {code} failed; retried with {refresh[:80]}; got {access}",
        f"device flow {device_code[:60]} pending",
    ]
    for text in texts:
        masked = bot_logging.redact_text(text)
        assert "[redacted]" in masked
        for secret in (device_code, refresh, code, access, sealed_text):
            assert secret[:40] not in masked, (secret[:12], masked)
    kept = " ".join(
        [
            "renewal.code_issued AADSTS53003 msal_errors.code = $1::VARCHAR",
            "tenant 00000001-0000-4000-8000-000000000001 ConfigurationBotFrameworkAuthentication",
        ]
    )
    assert bot_logging.redact_text(kept) == kept  # ids, SQL and event names stay readable


def test_every_logger_is_redacted_even_with_its_own_handler() -> None:
    """A library logging through its own handler (as sqlalchemy's echo does) is masked too."""
    saved = snapshot()
    bot_logging.configure(json=True, level=logging.DEBUG, stream=io.StringIO())
    own = io.StringIO()
    lib = logging.getLogger("msal.token_cache")
    handler = logging.StreamHandler(own)
    lib.addHandler(handler)
    device_code = shapes.device_code()
    try:
        lib.debug("event=%s", json.dumps({"data": {"device_code": device_code}}))
        lib.debug("polling with %s", device_code)
    finally:
        lib.removeHandler(handler)
        restore(saved)
    assert own.getvalue().count("[redacted]") == 2
    assert device_code[:20] not in own.getvalue()


@pytest.mark.parametrize("level", ["verbose", "10"])
def test_bad_log_level_is_one_line_naming_the_variable(level: str) -> None:
    """RENEWBOT_LOG__LEVEL with a bad value stops with one plain line, no traceback."""
    from tests.integration.test_cli import renewbot

    done = renewbot("tenants", "list", env={"RENEWBOT_LOG__LEVEL": level})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "renewbot: RENEWBOT_LOG__LEVEL is invalid: "
        "Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"
    ]


async def test_teams_renewal_leaks_no_bot_secret(tmp_path: Path) -> None:
    """The bot's password, its connector token and the channel's JWTs reach no log or row."""
    stream = io.StringIO()
    saved = snapshot()
    bot_logging.configure(json=True, level=logging.DEBUG, stream=stream)
    connector = await BotConnectorStandIn().start()
    inbound: list[str] = []
    try:
        with structlog.testing.capture_logs() as captured:
            async with live_bot(tmp_path, teams=connector.settings()) as live:
                command = connector.activity("renew-token contoso")
                inbound.append(connector.token())
                async with live.http.post(
                    f"{live.base_url}/api/messages",
                    json=command,
                    headers={"Authorization": f"Bearer {inbound[-1]}"},
                ) as resp:
                    assert resp.status == 200
                await live.wait_state("contoso", S.INVITED)
                thread = command["conversation"]["id"]
                await until(lambda: len(connector.posts(thread)) >= 2)
                bad = connector.token(aud="another-bot")  # refused, and still not logged
                async with live.http.post(
                    f"{live.base_url}/api/messages",
                    json=command,
                    headers={"Authorization": f"Bearer {bad}"},
                ) as resp:
                    assert resp.status == 401
                inbound.append(bad)
    finally:
        restore(saved)
        await connector.stop()
    logs = stream.getvalue() + repr(captured)
    outbound = {c.authorization.removeprefix("Bearer ") for c in connector.calls}
    assert outbound and all(t.startswith("bot-token-") for t in outbound)
    assert "teams.unauthorized" in logs  # the refusal was logged, without its token
    database = (tmp_path / "bot.db").read_bytes()
    wal = tmp_path / "bot.db-wal"
    if wal.exists():
        database += wal.read_bytes()
    for secret in [connector.password, *outbound, *inbound]:
        assert secret not in logs, "a Teams secret reached the log"
        assert secret.encode() not in database, "a Teams secret is stored"
