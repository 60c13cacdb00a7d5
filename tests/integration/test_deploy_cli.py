"""A production start that explains itself: real `renewbot` subprocesses, as an operator runs them.

Each wrong setting of the issue's table is one line on stderr naming the variable and what to
do, exit status 2, no traceback, and never the secret's value.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from adapters.storage.crypto import generate_key
from bot.sandbox.directory import DEFAULT_CLIENT_ID, demo_directory
from bot.sandbox.server import Sandbox
from tests.integration.test_cli import BASE_ENV, renewbot

ROOT = Path(__file__).resolve().parents[2]
KEY = generate_key()
CLIENT = {"RENEWBOT_IDENTITY__CLIENT_ID": DEFAULT_CLIENT_ID}


def said(done: subprocess.CompletedProcess[str]) -> list[str]:
    """What the operator reads: stderr and stdout lines that are not JSON log records."""
    lines = (done.stderr + done.stdout).splitlines()
    return [line for line in lines if line.strip() and not line.startswith("{")]


def test_version_is_the_package_version() -> None:
    """`renewbot --version` names the installed version (the one in pyproject.toml)."""
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    done = renewbot("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"renewbot {declared}"


def sqlite(tmp_path: Path) -> dict[str, str]:
    return {
        "RENEWBOT_ENVIRONMENT": "development",
        "RENEWBOT_SECURITY__ENCRYPTION_KEYS": KEY,
        "RENEWBOT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/r.db",
        **CLIENT,
    }


TABLE = {
    # what the operator did: (command, variables, start of the one line, a value never shown)
    "a malformed Fernet key": (
        ["serve"],
        {"RENEWBOT_SECURITY__ENCRYPTION_KEYS": "not-a-key-SECRET"},
        "renewbot: RENEWBOT_SECURITY__ENCRYPTION_KEYS holds a value that is not a Fernet key",
        "not-a-key-SECRET",
    ),
    "a database that refuses connections": (
        ["serve"],
        {"RENEWBOT_DATABASE__URL": "postgresql+asyncpg://bot:pw-SECRET@127.0.0.1:9/renewbot"},
        "renewbot: PostgreSQL at 127.0.0.1:9/renewbot refuses connections",
        "pw-SECRET",
    ),
    "postgresql:// without +asyncpg": (
        ["db", "upgrade"],
        {"RENEWBOT_DATABASE__URL": "postgresql://bot:pw-SECRET@127.0.0.1/renewbot"},
        "renewbot: RENEWBOT_DATABASE__URL is invalid: must start with postgresql+asyncpg://",
        "pw-SECRET",
    ),
    "a port that is not a number": (
        ["serve"],
        {"RENEWBOT_WEB__PORT": "abc"},
        "renewbot: RENEWBOT_WEB__PORT is invalid: must be a whole number",
        "abc",
    ),
    "malformed JSON in TOKEN_SETS": (
        ["serve"],
        {"RENEWBOT_IDENTITY__TOKEN_SETS": '{"graph": [SECRET'},
        "renewbot: RENEWBOT_IDENTITY__TOKEN_SETS is not valid JSON",
        "SECRET",
    ),
    "a SQLite file in a folder that does not exist": (
        ["tenants", "list"],
        {"RENEWBOT_DATABASE__URL": "sqlite+aiosqlite:////nonexistent-dir/r.db"},
        "renewbot: cannot open the SQLite file /nonexistent-dir/r.db",
        KEY,
    ),
    "a secret file that is not there": (
        ["serve"],
        {"RENEWBOT_SLACK__BOT_TOKEN_FILE": "/run/secrets/missing"},
        "renewbot: RENEWBOT_SLACK__BOT_TOKEN_FILE names /run/secrets/missing, which cannot",
        KEY,
    ),
}


@pytest.mark.parametrize("case", list(TABLE))
def test_wrong_setting_is_one_line_and_exit_2(case: str, tmp_path: Path) -> None:
    """Before: a 36-line traceback, a 130-line traceback, "No module named psycopg", a
    pydantic error naming `web.port`, "error parsing value for field identity"."""
    command, variables, first, secret = TABLE[case]
    done = renewbot(*command, env={**sqlite(tmp_path), **variables}, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert said(done) == [said(done)[0]] and said(done)[0].startswith(first), said(done)
    assert "Traceback" not in done.stderr and secret not in done.stdout + done.stderr


def test_tenants_import_before_db_upgrade_says_what_to_run(tmp_path: Path) -> None:
    """Before: "relation tenants does not exist". Now the next step, and nothing imported."""
    csv = tmp_path / "t.csv"
    csv.write_text(
        "slug,display_name,tenant_id,primary_domain,admin_upn\n"
        "acme,Acme,3f2504e0-4f89-11d3-9a0c-0305e82c3301,acme.com,admin@acme.com\n"
    )
    done = renewbot("tenants", "import", str(csv), env=sqlite(tmp_path))
    assert done.returncode == 2
    assert said(done) == [
        f"renewbot: SQLite file {tmp_path}/r.db has no renewbot tables yet: run "
        "`renewbot db upgrade` first"
    ]
    assert renewbot("db", "upgrade", env=sqlite(tmp_path)).returncode == 0
    assert renewbot("tenants", "import", str(csv), env=sqlite(tmp_path)).returncode == 0


async def test_production_start_without_database_chat_or_alerts_warns_and_serves(
    tmp_path: Path,
) -> None:
    """Issue 17: no database, no chat platform, no alert channel are warnings, not refusals:
    the start names each variable in one line, logs it, and serves."""
    from tests.integration.test_cli import _serve_env, _serve_until_listening_or_exit

    env = _serve_env(tmp_path, KEY)
    for development_only in ("RENEWBOT_ENVIRONMENT", "RENEWBOT_DATABASE__URL"):
        del env[development_only]
    del env["RENEWBOT_IDENTITY__AUTHORITY_HOST"]  # the real one; nothing is asked of it here
    env["RENEWBOT_WEB__PUBLIC_URL"] = "https://bot.example.com"
    env["RENEWBOT_LOG__FORMAT"] = "json"
    status, out, err = await _serve_until_listening_or_exit(env, cwd=tmp_path)
    assert status is None, out + err
    warned = [line for line in err.splitlines() if line.startswith("renewbot: warning: ")]
    assert [w.removeprefix("renewbot: warning: ").split(":")[0] for w in warned] == [
        "RENEWBOT_DATABASE__URL is not set",
        "neither Slack nor Teams is configured",
    ]
    assert out.count('"startup.setting_warning"') + err.count('"startup.setting_warning"') == 2
    assert "Traceback" not in err and KEY not in out + err
    assert (tmp_path / "renewbot.db").exists()  # where the first warning said the tokens go
    checked = renewbot(
        "check",
        env={**env, "RENEWBOT_IDENTITY__AUTHORITY_HOST": "https://127.0.0.1:9"},
        cwd=tmp_path,
    )
    assert "[warn]  RENEWBOT_DATABASE__URL is not set: tokens go to" in checked.stdout
    assert "[warn]  neither Slack nor Teams is configured: set" in checked.stdout


async def test_production_start_without_alert_channel_warns(tmp_path: Path) -> None:
    """Slack without an alert channel starts, with one warning naming the variable to set."""
    from tests.integration.test_cli import _serve_env, _serve_until_listening_or_exit

    env = _serve_env(tmp_path, KEY)
    del env["RENEWBOT_ENVIRONMENT"], env["RENEWBOT_IDENTITY__AUTHORITY_HOST"]
    env["RENEWBOT_DATABASE__URL"] = f"sqlite+aiosqlite:///{tmp_path}/serve.db"
    env["RENEWBOT_WEB__PUBLIC_URL"] = "https://bot.example.com"
    env["RENEWBOT_SLACK__BOT_TOKEN"] = "xoxb-test-1"
    env["RENEWBOT_SLACK__SIGNING_SECRET"] = "test-signing-secret"
    status, out, err = await _serve_until_listening_or_exit(env)
    assert status is None, out + err
    warned = [line for line in err.splitlines() if line.startswith("renewbot: warning: ")]
    assert [w.removeprefix("renewbot: warning: ")[:52] for w in warned] == [
        "RENEWBOT_DATABASE__URL is SQLite: one process only; ",
        "no alert channel: set RENEWBOT_SLACK__ALERT_CHANNEL ",
    ]


async def test_check_diagnoses_without_starting(tmp_path: Path) -> None:
    """`renewbot check`: a good configuration (sandbox authority, migrated database, keys that
    open the stored caches) is all [ok] and exit 0; the same with another key, an
    unmigrated database and an unreachable authority names each problem and exits 2."""
    import asyncio

    from tests.integration.test_cli import _stored_caches

    sandbox = await Sandbox(demo_directory(), workdir=tmp_path / "sb").start()
    try:
        env = {
            **sqlite(tmp_path),
            "RENEWBOT_IDENTITY__AUTHORITY_HOST": sandbox.authority_host,
            "RENEWBOT_IDENTITY__CA_BUNDLE": str(sandbox.ca_path),
            "RENEWBOT_SLACK__BOT_TOKEN": "xoxb-test-check",
            "RENEWBOT_SLACK__SIGNING_SECRET": "test-signing-secret",
            "RENEWBOT_SLACK__ALERT_CHANNEL": "C0ALERTS",
        }
        await _stored_caches(env["RENEWBOT_DATABASE__URL"], KEY, ["t1", "t2"])
        good = await asyncio.to_thread(renewbot, "check", env=env)
        assert good.returncode == 0, good.stdout + good.stderr
        out = good.stdout
        assert "[ok]    database: SQLite file" in out and "schema current" in out
        assert "[ok]    token caches: the keys open all 2" in out
        assert "[ok]    slack: HTTP mode, POST /slack/events; alerts to C0ALERTS" in out
        assert f"[ok]    identity: {sandbox.authority_host} reachable" in out
        assert "0 error(s), 0 warning(s): ready to serve" in out
    finally:
        await sandbox.stop()
    other_key = generate_key()
    bad = await asyncio.to_thread(
        renewbot, "check", env={**env, "RENEWBOT_SECURITY__ENCRYPTION_KEYS": other_key}
    )
    assert bad.returncode == 2
    assert "[error] RENEWBOT_SECURITY__ENCRYPTION_KEYS opens none of the 2 stored" in bad.stdout
    assert "[error] identity: cannot reach" in bad.stdout  # the sandbox is gone
    fresh = {**env, "RENEWBOT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/fresh.db"}
    missing = await asyncio.to_thread(renewbot, "check", env=fresh)
    assert "fresh.db does not exist yet: run `renewbot db upgrade`" in missing.stdout
    assert not (tmp_path / "fresh.db").exists()  # `check` creates nothing
    (tmp_path / "fresh.db").touch()  # an empty database file: no tables
    unmigrated = await asyncio.to_thread(renewbot, "check", env=fresh)
    assert "has no renewbot tables yet: run `renewbot db upgrade` first" in unmigrated.stdout
    assert other_key not in bad.stdout + bad.stderr and KEY not in unmigrated.stdout


def test_wheel_carries_manifests_to_a_fresh_venv(tmp_path: Path) -> None:
    """`pip install .` used to leave manifests/ out: `renewbot manifests slack` failed."""
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        env=BASE_ENV,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("renewbot-*.whl")
    fresh = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(fresh)
    site = next(fresh.glob("lib/python*/site-packages"))
    # the dependencies come from the suite's own environment, after the fresh site-packages
    deps = next(Path(sys.prefix).glob("lib/python*/site-packages"))
    (site / "deps.pth").write_text(f"{deps}\n")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        env=BASE_ENV,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    done = subprocess.run(
        [
            str(fresh / "bin" / "python"),
            "-c",
            "import bot, sys; from bot.__main__ import main; "
            "print(bot.__file__, file=sys.stderr); sys.exit(main())",
            "manifests",
            "slack",
            "--public-url",
            "https://bot.example.com",
        ],
        capture_output=True,
        text=True,
        env=BASE_ENV,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert str(site) in done.stderr  # the installed copy, not this checkout
    assert "https://bot.example.com/slack/events" in done.stdout
