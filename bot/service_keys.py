"""`renewbot keys service add|list|revoke`: the service keys of the token API.

A key is printed once, at `add`; only its hash is stored. Tenants are named as anywhere else
(slug, name, domain or id) and stored as tenant keys. Must not print a secret other than the new
key itself, and never a token.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.crypto import SecretBox
from adapters.storage.tokens import SqlTokenGrants
from adapters.storage.unit_of_work import SqlUnitOfWork
from bot.settings import Settings
from core.tokens import new_key


def _fail(text: str) -> int:
    print(f"renewbot: {text}", file=sys.stderr)
    return 2


async def manage_service_keys(
    settings: Settings, engine: AsyncEngine, box: SecretBox, args: argparse.Namespace
) -> int:
    grants = SqlTokenGrants(engine)
    now = datetime.now(UTC)
    if args.service_action == "revoke":
        count = await grants.revoke(args.ref, now)
        if not count:
            return _fail(f"no live key with id or service {args.ref[:60]!r}")
        print(f"revoked {count} key(s); replicas stop accepting them within their key cache")
        return 0
    async with SqlUnitOfWork(engine, box, read_only=True) as uow:
        tenants = {t.key: t for t in await uow.tenants.all()}
        if args.service_action == "list":
            for k in await grants.keys():
                names = ",".join(tenants[t].slug if t in tenants else t for t in k.tenants)
                state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "live"
                print(
                    f"{k.key_id}\t{k.service}\ttenants={names or '*'}\t"
                    f"sets={','.join(k.token_sets) or '*'}\t{k.rate_per_minute}/min\t"
                    f"created {k.created_at:%Y-%m-%d}\t{state}"
                )
            return 0
        allowed = []
        for ref in args.tenant:
            found = await uow.tenants.find_exact(ref)
            if found is None:
                return _fail(f"no tenant {ref[:60]!r} (see `renewbot tenants list`)")
            allowed.append(found.key)
    if not allowed and not args.all_tenants:
        return _fail("name the tenants with --tenant (repeat it), or pass --all-tenants")
    known = set(settings.identity.token_sets)
    unknown = [s for s in args.set if s not in known]
    if unknown:
        return _fail(f"unknown token set(s) {', '.join(unknown)}; known: {', '.join(known)}")
    rate = args.rate or settings.tokens.default_rate_per_minute
    if rate < 1:
        return _fail("--rate must be at least 1 request per minute")
    key, presented = new_key(args.name[:100], tuple(allowed), tuple(args.set), rate, now)
    await grants.add_key(key)
    print(f"service key for {key.service} (id {key.key_id}); shown once, store it now:")
    print(presented)
    return 0
