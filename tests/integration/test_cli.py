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
    """The exit status tells the truth: a blocked tenant is a non-zero exit."""
    done = renewbot("demo", "--scripted", "--tenant", "northwind")
    assert done.returncode == 1
    assert "Conditional Access" in done.stdout and "ended in state FAILED" in done.stdout


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


def test_tenants_import_is_all_or_nothing(tmp_path: Path) -> None:
    """A CSV with one bad line imports nothing and names the line; a good one imports all."""
    env = {
        "RENEWBOT_SECURITY__ENCRYPTION_KEYS": generate_key(),
        "RENEWBOT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/t.db",
    }
    assert renewbot("db", "upgrade", env=env).returncode == 0
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
    assert again.returncode == 2 and "already known" in again.stderr


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
