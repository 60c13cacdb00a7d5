"""A throwaway PostgreSQL 15 server for the test session, started as the postgres user.

initdb and postgres refuse to run as root, so both go through `runuser -u postgres` when we are
root. With CI=true a missing server is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PG_BIN = Path(os.environ.get("RENEWBOT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def available() -> str | None:
    """None when a server can be started here, else why not."""
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL binaries not found in {PG_BIN}"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is missing"
    return None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield an asyncpg URL of a fresh server on 127.0.0.1; stop and delete it afterwards."""
    with restartable_server() as (url, _):
        yield url


def restart(data: Path, log: Path) -> None:
    """Restart the server whose data directory is ``data`` (connections are dropped); it keeps
    the options it was started with (pg_ctl reads them from postmaster.opts)."""
    subprocess.run(
        _as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-m", "fast", "-w", "restart"]
        ),
        check=True,
        capture_output=True,
    )


@contextmanager
def restartable_server() -> Iterator[tuple[str, Callable[[], None]]]:
    """A fresh server of one's own, and a function that restarts it."""
    base = Path(tempfile.mkdtemp(prefix="renewbot-pg-"))
    base.chmod(0o755)
    data = base / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    log = base / "server.log"
    subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    if os.geteuid() == 0:
        log.touch()
        shutil.chown(log, "postgres", "postgres")
    opts = (
        f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={data} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    subprocess.run(
        _as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", opts, "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres", lambda: restart(data, log)
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


async def fresh_database(server_url: str) -> str:
    """Create an empty database on the suite's server and return its URL."""
    import uuid

    import asyncpg

    name = f"rb_{uuid.uuid4().hex[:12]}"
    dsn = server_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"
