"""The `renewbot` command line as an operator uses it (real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from adapters.storage.crypto import generate_key

BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("RENEWBOT_")}


def renewbot(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        env={**BASE_ENV, **(env or {})},
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def test_scripted_demo_reaches_validated() -> None:
    """`renewbot demo --scripted` runs a whole renewal and exits 0 only when validated."""
    done = renewbot("demo", "--scripted")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "/renew-token contoso" in out and "/onboard/" in out
    assert "Device code:" in out and "3/3 tokens" in out
    assert "Validated: Contoso Ltd" in out and "ended in state VALIDATED" in out


def test_scripted_demo_fails_when_renewal_fails() -> None:
    """The exit status tells the truth: a sign-in Microsoft refuses is a non-zero exit."""
    done = renewbot("demo", "--scripted", "--tenant", "fabrikam", "--account", "user@fabrikam.com")
    assert done.returncode == 1
    assert "Administrator approval is needed" in done.stdout
    assert "ended in state INVITED" in done.stdout


def test_scripted_demo_renews_northwind_through_the_browser() -> None:
    """Conditional Access blocks northwind's device code; the browser sign-in validates it."""
    done = renewbot("demo", "--scripted", "--tenant", "northwind")
    assert done.returncode == 0, done.stdout[-2000:]
    assert "Signed in as admin@northwind.com" in done.stdout
    assert "ended in state VALIDATED" in done.stdout


def test_serve_without_secrets_names_the_variables() -> None:
    """A production start with missing settings stops and says which variable, not the value."""
    done = renewbot(
        "serve",
        env={
            "RENEWBOT_SECURITY__ENCRYPTION_KEYS": "",
            "RENEWBOT_IDENTITY__AUTHORITY_HOST": "https://127.0.0.1:9",
        },
    )
    assert done.returncode == 2
    assert "RENEWBOT_SECURITY__ENCRYPTION_KEYS" in done.stderr
    assert "RENEWBOT_IDENTITY__CLIENT_ID" in done.stderr
    assert "sandbox identity provider is for the demo and tests only" in done.stderr


def test_serve_refuses_anonymous_teams_in_production() -> None:
    """Unauthenticated Teams traffic is a development mode; production will not start with it."""
    done = renewbot(
        "serve",
        env={
            "RENEWBOT_TEAMS__ALLOW_ANONYMOUS": "true",
            "RENEWBOT_TEAMS__APP_ID": "1f2e3d4c-5b6a-4789-8abc-def012345678",
            "RENEWBOT_TEAMS__APP_PASSWORD": "",
        },
    )
    assert done.returncode == 2
    assert "RENEWBOT_TEAMS__ALLOW_ANONYMOUS" in done.stderr
    assert "RENEWBOT_TEAMS__APP_PASSWORD" in done.stderr


def test_teams_package_is_written(tmp_path: Path) -> None:
    """`manifests teams` writes the zip an admin uploads to Teams."""
    out = tmp_path / "renewbot.zip"
    done = renewbot(
        "manifests",
        "teams",
        "--app-id",
        "1f2e3d4c-5b6a-4789-8abc-def012345678",
        "--public-url",
        "https://bot.example.com",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:2] == b"PK"
    bad = renewbot(
        "manifests",
        "teams",
        "--app-id",
        "x",
        "--public-url",
        "https://b.example",
        "--out",
        str(tmp_path / "no.zip"),
    )
    assert bad.returncode == 2 and "GUID" in bad.stderr and not (tmp_path / "no.zip").exists()


def test_bad_key_is_reported_without_its_value(tmp_path: Path) -> None:
    """An invalid key is named by variable; the value itself is never printed."""
    bogus = "not-a-fernet-key-SECRETVALUE"
    done = renewbot(
        "tenants",
        "list",
        env={
            "RENEWBOT_SECURITY__ENCRYPTION_KEYS": bogus,
            "RENEWBOT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
        },
    )
    assert done.returncode == 2
    assert "RENEWBOT_SECURITY__ENCRYPTION_KEYS" in done.stderr
    assert bogus not in done.stdout + done.stderr


def migrated(tmp_path: Path) -> dict[str, str]:
    """The settings of a new key and a migrated SQLite database in ``tmp_path``."""
    env = {
        "RENEWBOT_SECURITY__ENCRYPTION_KEYS": generate_key(),
        "RENEWBOT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/t.db",
    }
    assert renewbot("db", "upgrade", env=env).returncode == 0
    return env


def test_tenants_import_is_all_or_nothing(tmp_path: Path) -> None:
    """A CSV with one bad line imports nothing and names the line; a good one imports all."""
    env = migrated(tmp_path)
    header = "slug,display_name,tenant_id,primary_domain,admin_upn\n"
    good = "acme,Acme Corp,3f2504e0-4f89-11d3-9a0c-0305e82c3301,acme.com,admin@acme.com\n"
    bad = tmp_path / "bad.csv"
    bad.write_text(header + good + "beta,Beta,not-a-guid,beta.com,admin@beta.com\n")
    done = renewbot("tenants", "import", str(bad), env=env)
    assert done.returncode == 2 and "line 3: tenant id must be a GUID" in done.stderr
    assert renewbot("tenants", "list", env=env).stdout == ""
    ok = tmp_path / "ok.csv"
    ok.write_text(header + good)
    assert renewbot("tenants", "import", str(ok), env=env).returncode == 0
    listed = renewbot("tenants", "list", env=env).stdout
    assert "acme\tAcme Corp\t3f2504e0-4f89-11d3-9a0c-0305e82c3301" in listed
    again = renewbot("tenants", "import", str(ok), env=env)
    assert again.returncode == 0 and again.stdout == "0 added, 0 updated, 1 unchanged\n"


def test_tenants_import_updates_known_tenants_and_dry_run_changes_nothing(tmp_path: Path) -> None:
    """Before: one known tenant refused the whole file. Now known tenants (by tenant id) are
    updated, new ones added; --dry-run prints the difference and writes nothing; a slug that
    belongs to another tenant id refuses the file, naming it."""
    env = migrated(tmp_path)
    header = "slug,display_name,tenant_id,primary_domain,admin_upn\n"
    acme = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    first = tmp_path / "first.csv"
    first.write_text(header + f"acme,Acme,{acme},acme.com,admin@acme.com\n")
    assert renewbot("tenants", "import", str(first), env=env).returncode == 0
    second = tmp_path / "second.csv"
    second.write_text(
        header
        + f"acme,Acme Corp,{acme.upper()},acme.com,it@acme.com\n"
        + "beta,Beta,7c9e6679-7425-40de-944b-e07fc1f90ae7,beta.com,admin@beta.com\n"
    )
    dry = renewbot("tenants", "import", "--dry-run", str(second), env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "add beta: Beta, 7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "update acme: display_name 'Acme' -> 'Acme Corp'; "
        "admin_upn 'admin@acme.com' -> 'it@acme.com'",
        "dry run, nothing changed: 1 added, 1 updated, 0 unchanged",
    ]
    assert renewbot("tenants", "list", env=env).stdout == (
        f"acme\tAcme\t{acme}\tacme.com\tadmin@acme.com\n"
    )
    done = renewbot("tenants", "import", str(second), env=env)
    assert done.stdout.splitlines()[-1] == "1 added, 1 updated, 0 unchanged"
    listed = renewbot("tenants", "list", env=env).stdout
    assert f"acme\tAcme Corp\t{acme}\tacme.com\tit@acme.com" in listed and "beta\tBeta" in listed
    clash = tmp_path / "clash.csv"
    clash.write_text(
        header
        + "gamma,Gamma,9b2f3e4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b,gamma.com,admin@gamma.com\n"
        + "beta,Other,11111111-2222-4333-8444-555555555555,other.com,admin@other.com\n"
    )
    refused = renewbot("tenants", "import", str(clash), env=env)
    assert refused.returncode == 2
    assert (
        "beta: that slug is already tenant 7c9e6679-7425-40de-944b-e07fc1f90ae7" in refused.stderr
    )
    assert "gamma" not in renewbot("tenants", "list", env=env).stdout


def test_keys_generate_prints_a_usable_key() -> None:
    """`keys generate` prints one Fernet key for RENEWBOT_SECURITY__ENCRYPTION_KEYS."""
    from adapters.storage.crypto import SecretBox

    key = renewbot("keys", "generate").stdout.strip()
    box = SecretBox([key])
    assert box.open(box.seal(b"x")) == b"x"


def test_interactive_demo_answers_typed_commands() -> None:
    """`make demo`'s console chat: typed commands get thread posts and replies, quit ends it."""
    done = subprocess.run(
        [sys.executable, "-m", "bot", "demo"],
        input="/renew-token contoso\nhelp\nquit\n",
        capture_output=True,
        text=True,
        env=BASE_ENV,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Demo tenants:" in done.stdout
    assert "[thread 1] renewbot: Token renewal for Contoso Ltd" in done.stdout
    assert "/onboard/" in done.stdout and "renew-token cancel <tenant>" in done.stdout


def test_audit_export_csv_and_jsonl(tmp_path: Path) -> None:
    """The audit trail exports from a date on, as CSV or JSON lines; a bad date is refused."""
    import csv
    import json

    env = {
        "RENEWBOT_SECURITY__ENCRYPTION_KEYS": generate_key(),
        "RENEWBOT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/a.db",
    }
    assert renewbot("db", "upgrade", env=env).returncode == 0
    import asyncio
    from datetime import UTC, datetime

    from adapters.storage.crypto import SecretBox
    from adapters.storage.database import make_engine
    from adapters.storage.unit_of_work import SqlUnitOfWork
    from core.ports import AuditEntry

    async def seed() -> None:
        engine = make_engine(env["RENEWBOT_DATABASE__URL"])
        async with SqlUnitOfWork(
            engine, SecretBox([env["RENEWBOT_SECURITY__ENCRYPTION_KEYS"]])
        ) as uow:
            for day, kind in ((1, "renewal.requested"), (20, "renewal.validated")):
                await uow.audit.add(
                    AuditEntry(
                        datetime(2026, 11, day, tzinfo=UTC),
                        kind,
                        "Sam",
                        "r1",
                        "k1",
                        "admin@x.example",
                    )
                )
            await uow.commit()
        await engine.dispose()

    asyncio.run(seed())
    out = renewbot("audit", "export", "--since", "2026-11-10", env=env)
    rows = list(csv.DictReader(out.stdout.splitlines()))
    assert [r["kind"] for r in rows] == ["renewal.validated"] and rows[0]["actor"] == "Sam"
    lines = renewbot("audit", "export", "--since", "2026-11-01", "--format", "jsonl", env=env)
    assert [json.loads(x)["kind"] for x in lines.stdout.splitlines()] == [
        "renewal.requested",
        "renewal.validated",
    ]
    bad = renewbot("audit", "export", "--since", "last tuesday", env=env)
    assert bad.returncode == 2 and "--since must be a date" in bad.stderr


async def _stored_caches(url: str, key: str, tenant_ids: list[str]) -> None:
    """Token caches as a running bot would have saved them with ``key``."""
    from adapters.storage.crypto import SecretBox
    from adapters.storage.database import make_engine, upgrade
    from adapters.storage.token_cache import SqlTokenCacheStore

    engine = make_engine(url)
    await upgrade(engine)
    store = SqlTokenCacheStore(engine, SecretBox([key]))
    for tid in tenant_ids:
        await store.save(tid, '{"RefreshToken": {}, "Account": {}}')
    await engine.dispose()


def _serve_env(tmp_path: Path, key: str) -> dict[str, str]:
    from tests.servers.postgres import free_port

    port = free_port()
    return {
        **BASE_ENV,
        "RENEWBOT_ENVIRONMENT": "development",
        "RENEWBOT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/serve.db",
        "RENEWBOT_SECURITY__ENCRYPTION_KEYS": key,
        "RENEWBOT_IDENTITY__CLIENT_ID": "1f2e3d4c-5b6a-4789-8abc-def012345678",
        "RENEWBOT_IDENTITY__AUTHORITY_HOST": "https://127.0.0.1:9",
        "RENEWBOT_MONITOR__ENABLED": "false",
        "RENEWBOT_WEB__HOST": "127.0.0.1",
        "RENEWBOT_WEB__PORT": str(port),
        "RENEWBOT_WEB__PUBLIC_URL": f"http://127.0.0.1:{port}",
    }


async def _serve_until_listening_or_exit(
    env: dict[str, str], cwd: Path | None = None
) -> tuple[int | None, str, str]:
    """Start `renewbot serve`; return (exit status or None if it is listening, stdout, stderr).
    A server that listens is stopped with SIGTERM before returning."""
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "serve",
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out = []
    try:
        async with asyncio.timeout(60):
            while line := (await proc.stdout.readline()).decode():
                out.append(line)
                if "renewbot listening" in line:
                    proc.terminate()
                    await proc.wait()
                    return None, "".join(out), (await proc.stderr.read()).decode()
            status = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return status, "".join(out), (await proc.stderr.read()).decode()


async def test_serve_refuses_keys_that_open_nothing_stored(tmp_path: Path) -> None:
    """A well-formed key that is not the one the stored tokens were saved with: no start, one
    line naming the variable (never a key), and a non-zero exit."""
    import json
    import uuid

    saved_with, unrelated = generate_key(), generate_key()
    env = _serve_env(tmp_path, unrelated)
    await _stored_caches(env["RENEWBOT_DATABASE__URL"], saved_with, [str(uuid.uuid4())])
    status, out, err = await _serve_until_listening_or_exit(env)
    assert status == 2, (status, out, err)  # before: it started and listened
    lines = [line for line in (out + err).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith("{")]  # not a JSON log record
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(said) == 1 and said[0].startswith("renewbot: RENEWBOT_SECURITY__ENCRYPTION_KEYS")
    assert "opens none of the 1 stored token caches" in said[0]
    assert all(r["level"] in ("debug", "info") for r in logged), logged  # no traceback
    assert saved_with not in out + err and unrelated not in out + err


async def test_serve_starts_when_only_some_stored_tokens_are_unreadable(tmp_path: Path) -> None:
    """One altered row among good ones does not stop the service: it starts and logs one
    warning with the count (the tenant is marked; tests/integration/test_unreadable_tokens.py)."""
    import json
    import uuid

    from sqlalchemy import text

    from adapters.storage.database import make_engine

    key = generate_key()
    env = _serve_env(tmp_path, key)
    url = env["RENEWBOT_DATABASE__URL"]
    tids = [str(uuid.uuid4()) for _ in range(3)]
    await _stored_caches(url, key, tids)
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE token_caches SET ciphertext = :c WHERE tenant_id = :t"),
            {"c": b"gAAAAAaltered", "t": tids[1]},
        )
    await engine.dispose()
    status, out, err = await _serve_until_listening_or_exit(env)
    assert status is None, err
    warnings = [
        json.loads(line)
        for line in (out + err).splitlines()
        if "startup.token_caches_unreadable" in line
    ]
    assert len(warnings) == 1 and warnings[0]["count"] == 1 and warnings[0]["of"] == 3
