"""Settings as an operator writes them: *_FILE secrets, and one plain line per bad variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from bot import settings as bot_settings
from bot.settings_env import fields, is_secret, variable


def secret_paths() -> list[tuple[str, ...]]:
    return [path for path, info in fields(bot_settings.Settings) if is_secret(info)]


def test_every_secret_has_a_file_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each SecretStr setting, today's and any added later, reads from NAME_FILE (a mounted
    Docker or Kubernetes secret); the trailing newline of the file is not part of the value."""
    paths = secret_paths()
    assert {("slack", "bot_token"), ("security", "encryption_keys"), ("database", "url")} <= set(
        paths
    )
    for i, path in enumerate(paths):
        file = tmp_path / f"secret{i}"
        text = f"value-{i}-from-file"
        if path == ("database", "url"):
            text = f"sqlite+aiosqlite:///{tmp_path}/{text}"
        file.write_text(text + "\n")
        monkeypatch.setenv(variable(path) + "_FILE", str(file))
    loaded = bot_settings.load()
    for i, path in enumerate(paths):
        value: object = loaded
        for part in path:
            value = getattr(value, part)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        assert isinstance(value, str) and value.endswith(f"value-{i}-from-file"), path


def test_empty_secret_file_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose mounts every declared secret: an empty file for an unused platform must not
    turn that platform on with an empty token."""
    empty = tmp_path / "empty"
    empty.write_text("\n")
    monkeypatch.setenv("RENEWBOT_SLACK__BOT_TOKEN_FILE", str(empty))
    assert bot_settings.load().slack.bot_token is None


def test_variable_and_file_together_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sources for one secret is a mistake to point out, not to resolve silently."""
    file = tmp_path / "token"
    file.write_text("xoxb-test-from-file")
    monkeypatch.setenv("RENEWBOT_SLACK__BOT_TOKEN", "xoxb-test-from-env")
    monkeypatch.setenv("RENEWBOT_SLACK__BOT_TOKEN_FILE", str(file))
    with pytest.raises(bot_settings.SettingsError) as caught:
        bot_settings.load()
    assert caught.value.problems == [
        "RENEWBOT_SLACK__BOT_TOKEN and RENEWBOT_SLACK__BOT_TOKEN_FILE are both set: keep only "
        "one of them"
    ]
    assert "xoxb-test" not in str(caught.value)


def test_unreadable_secret_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret mounted at the wrong path says which variable and which path."""
    missing = tmp_path / "nope"
    monkeypatch.setenv("RENEWBOT_TEAMS__APP_PASSWORD_FILE", str(missing))
    with pytest.raises(bot_settings.SettingsError) as caught:
        bot_settings.load()
    (line,) = caught.value.problems
    assert line.startswith(f"RENEWBOT_TEAMS__APP_PASSWORD_FILE names {missing}")
    assert "No such file" in line


BAD = [
    ("RENEWBOT_WEB__PORT", "abc", "RENEWBOT_WEB__PORT is invalid: must be a whole number"),
    (
        "RENEWBOT_IDENTITY__TOKEN_SETS",
        '{"graph": ["https://graph.microsoft.com/.default"',
        "RENEWBOT_IDENTITY__TOKEN_SETS is not valid JSON",
    ),
    (
        "RENEWBOT_DATABASE__URL",
        "postgresql://renewbot:hunter2-SECRET@db/renewbot",
        "RENEWBOT_DATABASE__URL is invalid: must start with postgresql+asyncpg://",
    ),
    (
        "RENEWBOT_DATABASE__URL",
        "mysql://renewbot:hunter2-SECRET@db/renewbot",
        "RENEWBOT_DATABASE__URL is invalid: must be a postgresql+asyncpg://",
    ),
    (
        "RENEWBOT_LOG__LEVEL",
        "LOUD-SECRET",
        "RENEWBOT_LOG__LEVEL is invalid: Input should be 'DEBUG'",
    ),
    (
        "RENEWBOT_IDENTITY__POOL_SIZE",
        "0",
        "RENEWBOT_IDENTITY__POOL_SIZE is invalid: Input should be greater",
    ),
    ("RENEWBOT_ACCESS__OPERATORS", "U1,U2", "RENEWBOT_ACCESS__OPERATORS is not valid JSON"),
]


@pytest.mark.parametrize(("name", "value", "said"), BAD, ids=[b[0] + ":" + b[1][:8] for b in BAD])
def test_bad_value_is_one_line_naming_the_variable(
    name: str, value: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a pydantic error naming `web.port`, or "error parsing value for field identity"."""
    monkeypatch.setenv(name, value)
    with pytest.raises(bot_settings.SettingsError) as caught:
        bot_settings.load()
    (line,) = caught.value.problems
    assert line.startswith(said), line
    assert value not in line and "SECRET" not in line and "hunter2" not in line


def production(**groups: object) -> bot_settings.Settings:
    base: dict[str, object] = {
        "security": {"encryption_keys": "k"},
        "identity": {"client_id": "1f2e3d4c-5b6a-4789-8abc-def012345678"},
        "web": {"public_url": "https://bot.example.com"},
    }
    return bot_settings.Settings(_env_file=None, **{**base, **groups})  # type: ignore[arg-type]


def test_production_warns_on_default_sqlite_no_chat_no_alerts() -> None:
    """A production start that would keep tokens in ./renewbot.db, talk to nobody, or announce
    nothing is allowed (issue 17: warnings, not refusals), each warning saying what to set."""
    bare = production()
    assert bare.problems() == []
    said = bare.warnings()
    assert [w.split(":")[0] for w in said] == [
        "RENEWBOT_DATABASE__URL is not set",
        "neither Slack nor Teams is configured",
    ]
    slack = {"bot_token": "xoxb-test", "signing_secret": "s"}
    no_alerts = production(database={"url": "postgresql+asyncpg://db/r"}, slack=slack)
    assert no_alerts.problems() == []
    (alerts,) = no_alerts.warnings()
    assert alerts.startswith("no alert channel: set RENEWBOT_SLACK__ALERT_CHANNEL")
    ready = production(
        database={"url": "postgresql+asyncpg://db/r"}, slack={**slack, "alert_channel": "C1"}
    )
    assert ready.problems() == [] and ready.warnings() == []
    development = bot_settings.Settings(_env_file=None, environment="development")
    assert development.warnings() == []


def test_explicit_sqlite_in_production_only_warns() -> None:
    """SQLite chosen on purpose is allowed (one process), with a warning."""
    chosen = production(
        database={"url": "sqlite+aiosqlite:////var/lib/renewbot/renewbot.db"},
        teams={"app_id": "a", "app_password": "p", "alert_conversation": "19:x@thread.tacv2"},
    )
    assert chosen.problems() == []
    assert chosen.warnings() == [
        "RENEWBOT_DATABASE__URL is SQLite: one process only; run more than one replica on "
        "PostgreSQL"
    ]
