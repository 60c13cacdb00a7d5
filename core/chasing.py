"""Chasing a customer who stalls, so support need not remember to look.

Steps of the current invitation, each configurable (None or 0: off), each announced in the
renewal's thread, none taken once the renewal is validated, cancelled or ended:

- ``not_opened``: the link not opened after ``remind_after`` and email not configured: a note in
  the thread (with email, the reminder email does this: core.mailing);
- ``mention``: opened (or a code issued) but no sign-in after ``mention_after``, or
  ``mention_after_lapses`` codes expired unused: the person who asked is mentioned, with a
  suggestion (`code <tenant>` while on the phone);
- ``expiry``: ``warn_before_expiry`` before the invitation expires, still no sign-in: support is
  told once, with a Send a fresh invitation button.

Exactly once: a step is claimed through the database (``ChaseLog.claim``, a row per renewal,
invitation and step) in the transaction that stores its chat post, so two replicas never both
post it and a restart does not post it again. Time comes from the Clock. Also here: the steps
the page and the button need (the link was opened, a fresh code when one lapsed while the
customer watches, a fresh invitation). Must not: send anything itself (the outboxes do).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from core import commands, messages
from core.errors import ConcurrencyError, NoActiveRenewalError
from core.mailing import stage_note
from core.model import Actor, Renewal, RenewalState, Tenant
from core.ports import Action, AuditEntry, EmailRecord, Mention, Message, UnitOfWork
from core.services import RenewalService, hash_invitation
from core.tenants import resolve

log = logging.getLogger("renewbot.chase")


@dataclass(frozen=True)
class ChaseConfig:
    remind_after: timedelta | None = timedelta(hours=24)
    mention_after: timedelta | None = timedelta(hours=4)
    mention_after_lapses: int = 2
    warn_before_expiry: timedelta | None = timedelta(hours=24)


LABELS = {
    "invitation": "invitation emailed",
    "reminder": "reminder emailed",
    "not_opened": "not-opened note",
    "mention": "requester mentioned",
    "expiry": "expiry warning",
}


def _signed_in(r: Renewal) -> bool:
    return r.tokens_acquired > 0 or r.state not in (RenewalState.INVITED, RenewalState.CODE_ISSUED)


def _engaged_at(r: Renewal) -> datetime | None:
    """When the customer was first seen on the current invitation (page or a code)."""
    seen = [t for t in (r.link_opened_at, r.code_issued_at) if t is not None]
    if r.invited_at is not None:
        seen = [t for t in seen if t >= r.invited_at]
    return min(seen) if seen else None


def plan(r: Renewal, config: ChaseConfig, emailing: bool) -> dict[str, datetime]:
    """The chasing steps that apply to ``r`` as it is now, each with the time it falls due."""
    if not r.is_active or _signed_in(r) or r.invited_at is None:
        return {}
    steps: dict[str, datetime] = {}
    engaged = _engaged_at(r)
    if config.remind_after and not emailing and engaged is None:
        steps["not_opened"] = r.invited_at + config.remind_after
    if config.mention_after_lapses and r.codes_lapsed >= config.mention_after_lapses:
        steps["mention"] = r.updated_at or r.invited_at
    elif config.mention_after and engaged is not None:
        steps["mention"] = engaged + config.mention_after
    if config.warn_before_expiry and r.invitation_expires_at is not None:
        steps["expiry"] = max(r.invited_at, r.invitation_expires_at - config.warn_before_expiry)
    return steps


def step_key(r: Renewal, step: str) -> str:
    return f"{step}:{r.invitation_ref}"


class Chaser:
    def __init__(self, service: RenewalService, config: ChaseConfig | None = None) -> None:
        self.service = service
        self.config = config or ChaseConfig()

    @property
    def emailing(self) -> bool:
        return self.service.mail is not None

    async def sweep(self) -> int:
        """Take every chasing step that is due. Returns how many this process took."""
        s = self.service
        now = s.clock.now()
        async with s.uow(read_only=True) as uow:
            renewals = await uow.renewals.open()
            taken = await uow.chases.taken([r.id for r in renewals])
        done = 0
        for r in renewals:
            for step, due in plan(r, self.config, self.emailing).items():
                if due <= now and step_key(r, step) not in taken.get(r.id, {}):
                    done += await self._take(r.id, step)
        return done

    async def _take(self, renewal_id: str, step: str) -> int:
        s = self.service
        now = s.clock.now()
        async with s.uow() as uow:
            r = await uow.renewals.get(renewal_id)
            if r is None:
                return 0
            due = plan(r, self.config, self.emailing).get(step)
            if due is None or due > now:
                return 0  # it changed meanwhile (signed in, cancelled, opened)
            if not await uow.chases.claim(r.id, step_key(r, step), now):
                return 0  # another replica took it, or it was taken before a restart
            tenant = await uow.tenants.get(r.tenant_key)
            assert tenant is not None, "renewals reference tenants by foreign key"
            await stage_note(uow, s.clock, r, self._message(tenant, r, step))
            await uow.audit.add(
                AuditEntry(now, f"renewal.chase_{step}", "renewbot", r.id, r.tenant_key)
            )
            await uow.commit()
        log.info("chase.step", extra={"renewal_id": renewal_id, "step": step})
        await s.notifier.flush()
        return 1

    def _message(self, tenant: Tenant, r: Renewal, step: str) -> Message:
        who = r.requested_by
        mention = Mention(who.platform, who.user_id, who.describe())
        if step == "not_opened":
            hours = (self.config.remind_after or timedelta()).total_seconds() / 3600
            return Message(messages.not_opened(hours), "warning")
        if step == "mention":
            if (
                self.config.mention_after_lapses
                and r.codes_lapsed >= self.config.mention_after_lapses
            ):
                why = messages.stalled_lapsed(r.codes_lapsed)
            else:
                hours = (self.config.mention_after or timedelta()).total_seconds() / 3600
                why = messages.stalled_opened(hours)
            return Message(messages.stalled(tenant, why), "warning", mention=mention)
        fresh = Action("reinvite", tenant.slug, "Send a fresh invitation")
        text = messages.invitation_expiring(tenant, r.invitation_expires_at)
        return Message(text, "warning", (fresh,), mention=mention)

    # -- pending ------------------------------------------------------------------------------

    async def describe(self, uow: UnitOfWork, renewals: list[Renewal]) -> dict[str, str]:
        """Per renewal: what was sent when, and what is next (for `pending`)."""
        ids = [r.id for r in renewals]
        taken = await uow.chases.taken(ids)
        mails = await uow.emails.history(ids)
        lines = {}
        for r in renewals:
            done: list[tuple[str, datetime]] = []
            upcoming: list[tuple[str, datetime]] = []
            for mail in (m for m in mails if m.renewal_id == r.id):
                self._mail_line(mail, done, upcoming)
            for key, at in taken.get(r.id, {}).items():
                done.append((LABELS.get(key.split(":")[0], key), at))
            for step, due in plan(r, self.config, self.emailing).items():
                if step_key(r, step) not in taken.get(r.id, {}):
                    upcoming.append((LABELS[step], due))
            if r.invitation_expires_at and r.is_active:
                upcoming.append(("invitation expires", r.invitation_expires_at))
            lines[r.id] = messages.chase_history(
                sorted(done, key=lambda d: d[1]), sorted(upcoming, key=lambda u: u[1])
            )
        return lines

    @staticmethod
    def _mail_line(
        mail: EmailRecord, done: list[tuple[str, datetime]], upcoming: list[tuple[str, datetime]]
    ) -> None:
        label = LABELS[mail.kind]
        if mail.state == "sent" and mail.sent_at:
            done.append((label, mail.sent_at))
        elif mail.state == "failed":
            done.append((f"{mail.kind} email NOT delivered ({mail.error[:60]})", mail.created_at))
        elif mail.state == "pending":
            upcoming.append((label.replace("emailed", "email"), mail.not_before or mail.created_at))

    # -- steps of the page and the button -----------------------------------------------------

    async def link_opened(self, token: str) -> None:
        """The page's script asked for the status: the customer opened the link (recorded once).

        The page's script, not the GET of the page: mail scanners fetch links in emails, and
        seldom run their scripts.
        """
        s = self.service
        renewal, _ = await s.lookup_invitation(token)
        if renewal.link_opened_at is not None or not renewal.is_active:
            return
        try:
            async with s.uow() as uow:
                stored = await uow.renewals.get(renewal.id)
                if stored is None or not stored.link_opened(s.clock.now()):
                    return
                await uow.renewals.save(stored)
                await uow.audit.add(
                    AuditEntry(
                        s.clock.now(),
                        "renewal.link_opened",
                        "the customer",
                        stored.id,
                        stored.tenant_key,
                    )
                )
                await uow.commit()
        except ConcurrencyError:
            return  # changed at the same moment; the next status poll records it

    async def renew_lapsed_code(self, token: str, actor: Actor) -> Renewal:
        """The customer is on the page and the code ran out: a fresh one, nothing pressed.

        Only for a code that expired unused; any other state is returned as it is.
        """
        s = self.service
        renewal, _ = await s.open_invitation(token)
        now = s.clock.now()
        code = renewal.device_code
        lapsed = renewal.state is RenewalState.INVITED and renewal.failure_code == "expired_token"
        running_out = (
            renewal.state is RenewalState.CODE_ISSUED
            and not renewal.tokens_acquired
            and code is not None
            and code.expires_at <= now
        )
        if not (lapsed or running_out):
            return renewal
        return await s.start_authentication(token, actor, fresh=True)

    async def resend_invitation(self, cmd: commands.ResendInvitation) -> Renewal:
        """A fresh Auth URL for the open renewal (the old link dies), emailed when configured."""
        s = self.service
        now = s.clock.now()
        token = secrets.token_urlsafe(32)
        async with s.uow() as uow:
            tenant = await resolve(uow, cmd.tenant_ref)
            renewal = await uow.renewals.active_for(tenant.key)
            if renewal is None:
                raise NoActiveRenewalError(tenant.slug)
            expires = now + s.config.invitation_ttl
            renewal.renew_invitation(hash_invitation(token), expires, s.auth_url(token), now)
            await uow.renewals.save(renewal)
            await uow.audit.add(
                AuditEntry(
                    now, "renewal.reinvited", cmd.requester.describe(), renewal.id, tenant.key
                )
            )
            if s.mail is not None:
                await s.mail.stage(uow, tenant, renewal)
            await s.notifier.stage(uow, tenant, renewal)
            await uow.commit()
        await s.notifier.flush()
        return renewal
