"""The read side of the desk: what `show`, `pending`, `status`, `history` and `errors` answer.

Each view reads through a read-only unit of work and returns platform-neutral text (wording from
core.messages). Views never change anything and never call the identity provider or chat;
commands that change something are service steps (core.services, core.tenant_steps).
"""

from __future__ import annotations

from datetime import datetime

from core import messages
from core.chasing import Chaser
from core.errors import TokenCacheUnreadableError
from core.model import AuthState, Tenant
from core.ports import Clock, UnitOfWork, UnitOfWorkFactory
from core.tenants import resolve


def _age(since: datetime, now: datetime) -> str:
    minutes = int((now - since).total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // 1440} d"


async def _unreadable(uow: UnitOfWork, tenants: list[Tenant]) -> set[str]:
    """Keys of the expired tenants whose last recorded error is that their tokens cannot be read."""
    found = set()
    for t in tenants:
        if t.auth_state is AuthState.EXPIRED:
            last = await uow.identity_errors.newest(t.key, limit=1)
            if last and last[0].code == TokenCacheUnreadableError.code:
                found.add(t.key)
    return found


class Views:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, chaser: Chaser) -> None:
        self.uow = uow
        self.clock = clock
        self.chaser = chaser

    async def tenant(self, ref: str) -> str:
        """`show`: the tenant's configuration, last validation, health and open renewal."""
        async with self.uow(read_only=True) as uow:
            tenant = await resolve(uow, ref)
            open_renewal = await uow.renewals.active_for(tenant.key)
            unreadable = await _unreadable(uow, [tenant])
        summary = messages.tenant_summary(tenant, open_renewal)
        if unreadable:
            summary += "\n" + messages.tokens_unreadable(tenant.slug)
        return summary

    async def tenants(self, state: str | None, limit: int = 50) -> str:
        """`tenants [state]`: how many in each state, then the tenants (one state, or those that
        need action first), at most ``limit`` named."""
        order = [AuthState.EXPIRED, AuthState.EXPIRING, AuthState.UNKNOWN, AuthState.HEALTHY]
        wanted = [AuthState(state)] if state else order
        async with self.uow(read_only=True) as uow:
            counts = await uow.tenants.counts_by_state()
            listed: list[Tenant] = []
            for s in wanted:
                if len(listed) < limit:
                    listed += await uow.tenants.in_state(s, limit - len(listed))
        total = sum(counts.get(s, 0) for s in wanted)
        if not total:
            return f"No {state} tenants." if state else "No tenants yet."
        summary = ", ".join(f"{counts[s]} {s.value}" for s in wanted if counts.get(s))
        lines = [f"{total} tenants ({summary}):"]
        lines += [f"  {t.display_name} ({t.slug}): {t.auth_state.value}" for t in listed]
        if total > len(listed):
            lines.append(f"  ... and {total - len(listed)} more (narrow with `tenants <state>`)")
        return "\n".join(lines)

    async def history(self, ref: str) -> str:
        """`history`: the tenant's audit trail, newest first."""
        async with self.uow(read_only=True) as uow:
            tenant = await resolve(uow, ref)
            entries = await uow.audit.for_tenant(tenant.key)
        if not entries:
            return f"No history for {tenant.display_name} yet."
        lines = [f"History of {tenant.display_name}, newest first:"]
        lines += [
            f"{e.at:%Y-%m-%d %H:%M} {e.kind.split('.')[-1]} by {e.actor}"
            + (f" ({e.detail})" if e.detail else "")
            for e in entries
        ]
        return "\n".join(lines)

    async def pending(self) -> str:
        """`pending`: open invitations with age, state, and what was sent and comes next."""
        now = self.clock.now()
        async with self.uow(read_only=True) as uow:
            renewals = await uow.renewals.open()
            tenants = {r.tenant_key: await uow.tenants.get(r.tenant_key) for r in renewals}
            chased = await self.chaser.describe(uow, renewals)
        if not renewals:
            return "No open invitations."
        lines = ["Open invitations:"]
        for r in sorted(renewals, key=lambda r: r.created_at):
            t = tenants[r.tenant_key]
            name = t.display_name if t else r.tenant_key
            lines.append(
                f"{name}: {messages.STATE_LABELS[r.state]}, {_age(r.created_at, now)} old, "
                f"for {r.invitation_email}"
            )
            lines.append(f"  {chased[r.id]}")
        return "\n".join(lines)

    async def status(self) -> str:
        """`status`: tenants per token state, open renewals, the tenants that need action."""
        async with self.uow(read_only=True) as uow:
            counts = await uow.tenants.counts_by_state()
            urgent = await uow.tenants.needing_action(limit=15)
            # counted in the database: loading every open renewal cost 80% of the answer's CPU
            # at 300 open renewals (bench/status.py, py-spy)
            open_counts = await uow.renewals.count_by_state(open_only=True)
            unreadable = await _unreadable(uow, urgent)
        total = sum(counts.values())
        order = [AuthState.HEALTHY, AuthState.EXPIRING, AuthState.EXPIRED, AuthState.UNKNOWN]
        parts = [f"{counts[state]} {state.value}" for state in order if counts.get(state)]
        lines = [f"{total} tenants: {', '.join(parts) or 'none'}."]
        detail = ", ".join(f"{s.value}: {n}" for s, n in sorted(open_counts.items()) if n)
        opened = sum(open_counts.values())
        lines.append(f"Open renewals: {opened}" + (f" ({detail})" if detail else ""))
        if urgent:
            lines.append("Need action:")
            lines += [
                f"  {t.display_name} ({t.slug}): {t.auth_state.value}"
                + (f" ({messages.UNREADABLE_SHORT})" if t.key in unreadable else "")
                for t in urgent
            ]
        return "\n".join(lines)

    async def errors(self, ref: str | None) -> str:
        """`errors`: the newest identity errors, each explained with the next step."""
        async with self.uow(read_only=True) as uow:
            tenant = await resolve(uow, ref) if ref else None
            records = await uow.identity_errors.newest(tenant.key if tenant else None)
            names: dict[str, str] = {}
            for key in {r.tenant_key for r in records if r.tenant_key}:
                found = await uow.tenants.get(key)
                names[key] = f"{found.display_name} ({found.slug})" if found else "a removed tenant"
        if not records:
            return "No identity errors recorded."
        lines = ["Newest identity errors:"]
        for rec in records:
            ex = messages.explain(rec.code)
            seen_by = "" if rec.source in ("renewbot", "monitor") else f", reported by {rec.source}"
            lines.append(
                f"{rec.at:%Y-%m-%d %H:%M} {names.get(rec.tenant_key or '', 'no known tenant')}"
                f"{seen_by}: {rec.code}: "
                f"{ex.title}. Next: {ex.support}"
            )
        return "\n".join(lines)
