"""The `renewbot` command line: serve, check, demo, sandbox, db, tenants, keys.

Settings come from RENEWBOT_* variables (and *_FILE files for secrets). A setting or a start-up
failure the operator can fix is one line naming the variable, exit status 2, no traceback;
secrets are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from importlib import metadata
from typing import Any

from bot import settings as bot_settings


def version() -> str:
    try:
        return metadata.version("renewbot")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="renewbot",
        description="Renew expired Microsoft 365 tokens from Slack, Teams or the console.",
    )
    p.add_argument("--version", action="version", version=f"renewbot {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="web server and background workers (production)")
    sub.add_parser("check", help="diagnose the configuration without starting")
    demo = sub.add_parser("demo", help="console chat with a sandbox identity provider")
    demo.add_argument("--scripted", action="store_true", help="run one renewal unattended")
    demo.add_argument("--tenant", default="contoso", help="demo tenant for --scripted")
    demo.add_argument("--account", help="account the scripted customer signs in with")
    sb = sub.add_parser("sandbox", help="the sandbox identity provider alone")
    sb.add_argument("--https-port", type=int, default=0)
    sb.add_argument("--http-port", type=int, default=0)
    sb.add_argument("--interval", type=int, default=5, help="device-code polling interval (s)")
    sb.add_argument("--extra-tenants", type=int, default=0, help="plain tenants for load tests")
    sb.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    sb.add_argument("--workdir", help="folder for its CA certificate (ca.pem); default: a new one")
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"])
    tenants = sub.add_parser("tenants", help="manage tenants")
    tsub = tenants.add_subparsers(dest="action", required=True)
    add = tsub.add_parser("add")
    for name in ("slug", "name", "tenant-id", "domain", "admin"):
        add.add_argument(f"--{name}", required=True)
    tsub.add_parser("list")
    imp = tsub.add_parser(
        "import", help="CSV: slug,display_name,tenant_id,primary_domain,admin_upn"
    )
    imp.add_argument("file")
    imp.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be added or updated; change nothing",
    )
    manifests = sub.add_parser("manifests", help="chat app manifests")
    msub = manifests.add_subparsers(dest="platform", required=True)
    slack = msub.add_parser("slack", help="print the Slack app manifest")
    slack.add_argument("--public-url", required=True, help="https URL where renewbot serves")
    slack.add_argument(
        "--socket-mode",
        action="store_true",
        help="commands and buttons over Socket Mode (Slack needs no Request URL; customers still "
        "open the onboarding page at the public URL)",
    )
    teams = msub.add_parser("teams", help="build the Teams app package (a zip to upload)")
    teams.add_argument("--app-id", required=True, help="the bot's Microsoft app id (a GUID)")
    teams.add_argument("--public-url", required=True, help="https URL where renewbot serves")
    teams.add_argument("--out", required=True, help="where to write the zip, e.g. renewbot.zip")
    teams.add_argument("--version", default="1.0.0", help="app version (raise it on each upload)")
    entra = msub.add_parser("entra", help="print the Entra app registration settings (JSON)")
    entra.add_argument("--public-url", required=True, help="https URL where renewbot serves")
    audit = sub.add_parser("audit", help="the audit trail")
    asub = audit.add_subparsers(dest="action", required=True)
    export = asub.add_parser("export", help="write audit entries as CSV or JSON lines")
    export.add_argument("--since", required=True, help="date, e.g. 2026-11-01")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    keys = sub.add_parser("keys", help="encryption keys, service keys of the token API")
    ksub = keys.add_subparsers(dest="action", required=True)
    ksub.add_parser("generate", help="print a new encryption key")
    ksub.add_parser("rotate", help="re-encrypt stored secrets with the first key")
    ksub.add_parser("webhook-secret", help="print a new webhook signing secret (whsec_...)")
    service = ksub.add_parser("service", help="keys of the token API (/api/tokens)")
    ssub = service.add_subparsers(dest="service_action", required=True)
    sadd = ssub.add_parser("add", help="make a key for a service (printed once)")
    sadd.add_argument("--name", required=True, help="the service, e.g. backup-jobs")
    sadd.add_argument("--tenant", action="append", default=[], help="allowed tenant (repeat)")
    sadd.add_argument("--set", action="append", default=[], help="allowed token set (repeat)")
    sadd.add_argument("--all-tenants", action="store_true", help="every tenant, now and later")
    sadd.add_argument("--rate", type=int, help="requests per minute (default from settings)")
    ssub.add_parser("list", help="the keys (never their secrets)")
    srevoke = ssub.add_parser("revoke", help="revoke by key id or service name")
    srevoke.add_argument("ref")
    return p


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(args.command)) as runner:
            return runner.run(_dispatch(args))
    except KeyboardInterrupt:
        return 130


def _loop_factory(command: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the long-running server (about a third less CPU per network round trip than
    asyncio's own loop: bench/README.md); asyncio's loop for everything else."""
    if command != "serve":
        return None
    import uvloop

    return uvloop.new_event_loop


async def _dispatch(args: argparse.Namespace) -> int:
    from bot import admin
    from bot import logging as bot_logging

    if args.command == "demo":
        from bot import demo

        bot_logging.configure(level=40)
        return await demo.run(scripted=args.scripted, tenant=args.tenant, account=args.account)
    if args.command == "sandbox":
        bot_logging.configure()
        return await _until_signal(
            admin.sandbox(
                args.https_port,
                args.http_port,
                args.interval,
                args.extra_tenants,
                args.latency,
                args.workdir,
            )
        )
    if args.command == "manifests":
        from bot import manifests

        try:
            if args.platform == "teams":
                manifests.write_teams_package(args.out, args.app_id, args.public_url, args.version)
                print(f"Wrote {args.out}: upload it in Teams (Apps > Manage your apps).")
            elif args.platform == "entra":
                print(json.dumps(manifests.entra(args.public_url), indent=2))
            else:
                print(manifests.slack(args.public_url, args.socket_mode), end="")
        except manifests.ManifestError as exc:
            print(f"renewbot: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "keys" and args.action == "generate":
        from adapters.storage.crypto import generate_key

        print(generate_key())
        return 0
    if args.command == "keys" and args.action == "webhook-secret":
        import base64
        import secrets

        print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
        return 0
    try:
        settings = bot_settings.load()
    except bot_settings.SettingsError as exc:
        return _said(exc.problems)
    bot_logging.configure(
        json=settings.log.format == "json",
        level=logging.getLevelNamesMapping()[settings.log.level],
    )
    bot_logging.log_uncaught()
    bot_logging.lean_records()
    from bot import check

    try:
        if args.command == "check":
            return await _check(settings)
        if args.command == "serve":
            problems = settings.problems()
            if problems:
                return _said(problems)
            for warning in settings.warnings():
                print(f"renewbot: warning: {warning}", file=sys.stderr)
                logging.getLogger("renewbot.startup").warning(
                    "startup.setting_warning", extra={"warning": warning}
                )
            return await _until_signal(admin.serve(settings))
        return await admin.manage(settings, args)
    except Exception as exc:
        said = check.explain(exc, settings.database.url)
        if said is None:
            raise
        return _said([said])


def _said(problems: list[str]) -> int:
    for problem in problems:
        print(f"renewbot: {problem}", file=sys.stderr)
    return 2


async def _check(settings: bot_settings.Settings) -> int:
    from bot import check

    print(f"renewbot {version()}: checking the {settings.environment} configuration")
    findings = await check.diagnose(settings)
    for finding in findings:
        print(finding)
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warn" for f in findings)
    verdict = "ready to serve" if not errors else "fix the [error] lines before `renewbot serve`"
    print(f"{errors} error(s), {warnings} warning(s): {verdict}")
    return 2 if errors else 0


async def _until_signal(coro: Coroutine[Any, Any, int]) -> int:
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return 0
