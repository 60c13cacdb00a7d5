"""Every sentence renewbot shows a person, as platform-neutral text.

Adapters may add formatting; they must not invent wording. Nothing here may contain a secret: the
functions take only names, user codes (meant to be shared) and error codes.
"""

from __future__ import annotations

from datetime import datetime

from core import commands, identity_codes
from core.identity_codes import IdentityCode
from core.model import ACTIVE_STATES, Renewal, RenewalState, Tenant
from core.ports import Email

Explanation = IdentityCode
"""An identity error in plain words: the entry of core.identity_codes' one table."""


def explain(code: str) -> IdentityCode:
    return identity_codes.lookup(code)


STATE_LABELS = {
    RenewalState.REQUESTED: "Requested",
    RenewalState.INVITED: "Invitation sent, waiting for the customer",
    RenewalState.CODE_ISSUED: "Code issued, waiting for sign-in",
    RenewalState.TOKENS_ACQUIRED: "Tokens acquired, validating",
    RenewalState.VALIDATED: "Validated",
    RenewalState.FAILED: "Failed",
    RenewalState.EXPIRED: "Expired",
    RenewalState.CANCELLED: "Cancelled",
}

ALL_TOKENS = "All tokens acquired! You can close this page now."


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else "never"


def thread_opened(tenant: Tenant, who: str) -> str:
    return f"Token renewal for {tenant.display_name} ({tenant.slug}), requested by {who}."


def status_line(tenant: Tenant, renewal: Renewal) -> str:
    """A one-line checklist of the lifecycle, for the status message kept up to date in place."""
    reached = [
        ("Invitation sent", renewal.invitation_hash is not None),
        ("Code issued", renewal.code_issued_at is not None),
        (
            "Tokens acquired",
            bool(renewal.tokens_total) and renewal.tokens_acquired == renewal.tokens_total,
        ),
        ("Validated", renewal.state is RenewalState.VALIDATED),
    ]
    steps = " → ".join(f"[{'x' if done else ' '}] {label}" for label, done in reached)
    label = STATE_LABELS[renewal.state]
    if renewal.state is RenewalState.CODE_ISSUED and renewal.tokens_acquired:
        label = f"Signed in, acquiring tokens ({renewal.tokens_acquired}/{renewal.tokens_total})"
    return f"{tenant.display_name}: {label}. {steps}"


def auth_url_posted(
    auth_url: str, email: str, expires_at: datetime | None, emailed_to: str = ""
) -> str:
    if emailed_to:
        return (
            f"Auth URL for the customer (valid until {_when(expires_at)}):\n{auth_url}\n"
            f"Emailing the invitation to {emailed_to}; this thread says when it is delivered."
        )
    return (
        f"Auth URL for the customer (invitation for {email}, valid until {_when(expires_at)}):\n"
        f"{auth_url}\nSend it to the customer. They open it, check the admin username and press "
        "Sign in with Microsoft (or Start authentication, for a code to enter on another device)."
    )


def code_posted(user_code: str, verification_uri: str, expires_at: datetime) -> str:
    return (
        f"Device code: {user_code}\nThe customer enters it at {verification_uri} and signs in "
        f"as a Global Administrator. The code expires at {_when(expires_at)}."
    )


def code_lapsed(reason_code: str) -> str:
    return f"{explain(reason_code).title}. {explain(reason_code).support}"


def token_progress(acquired: int, total: int, account: str) -> str:
    if acquired == 1:
        return f"Signed in as {account}. {acquired}/{total} tokens"
    return f"{acquired}/{total} tokens"


def validated(tenant: Tenant, account: str, warnings: tuple[str, ...]) -> str:
    text = f"Validated: {tenant.display_name} has new tokens (signed in as {account})."
    if warnings:
        text += "\nWarning: " + "\nWarning: ".join(warnings)
    return text


def announcement_validated(tenant: Tenant, account: str, warnings: tuple[str, ...] = ()) -> str:
    text = f"Tokens renewed and validated for {tenant.display_name} ({tenant.slug}) by {account}."
    return text + "".join(f"\nWarning: {w}" for w in warnings)


def failed(code: str) -> str:
    ex = explain(code)
    return f"Renewal failed: {ex.title}. {ex.support}"


def announcement_failed(tenant: Tenant, code: str) -> str:
    return f"Token renewal failed for {tenant.display_name} ({tenant.slug}): {explain(code).title}."


def expired() -> str:
    return "The invitation expired before the customer signed in. Start a new renewal."


def cancelled(who: str) -> str:
    return f"Renewal cancelled by {who}. The Auth URL no longer works."


def account_mismatch(expected: str, actual: str) -> str:
    return f"signed in as {actual}, but the tenant's M365 admin username is {expected}"


def not_global_admin_warning(account: str) -> str:
    return f"{account} is not a Global Administrator"


def unknown_tenant(ref: str, suggestions: tuple[str, ...]) -> str:
    if suggestions:
        return f"I don't know a tenant called '{ref}'. Did you mean: {', '.join(suggestions)}?"
    return (
        f"I don't know a tenant called '{ref}'. Try `status` to see the tenants that need action."
    )


def in_progress(tenant: Tenant, state: RenewalState) -> str:
    return (
        f"A renewal for {tenant.display_name} is already open ({STATE_LABELS[state].lower()}). "
        "See its thread, or cancel it first."
    )


def no_active(slug: str) -> str:
    return f"There is no open renewal for {slug}."


def apology(correlation_id: str) -> str:
    return f"Sorry, something went wrong on our side (reference {correlation_id})."


def busy() -> str:
    """Told at once, instead of an answer that would come late or not at all."""
    return (
        "renewbot is busy with many requests right now and did not start this one. "
        "Nothing was changed: please try again in a minute."
    )


def _initial_domain(tenant: Tenant) -> str:
    host = f"{tenant.sharepoint_label}-admin.sharepoint.com"
    if tenant.initial_domain:
        return f"Initial domain: {tenant.initial_domain} (SharePoint admin: {host})"
    return f"Initial domain: learnt at the next sign-in (until then SharePoint admin is {host})"


def tenant_summary(tenant: Tenant, open_renewal: Renewal | None) -> str:
    lines = [
        f"{tenant.display_name} ({tenant.slug})",
        f"Tenant id: {tenant.tenant_id}",
        f"Primary domain: {tenant.primary_domain}",
        _initial_domain(tenant),
        f"M365 admin username: {tenant.admin_upn}",
        f"Last validation: {_when(tenant.last_validated_at)}",
        f"Token health: {tenant.auth_state.value} (last refresh {_when(tenant.last_refresh_at)})",
    ]
    if tenant.snoozed_until:
        lines.append(f"Alerts snoozed until {_when(tenant.snoozed_until)}")
    if open_renewal:
        lines.append(f"Open renewal: {STATE_LABELS[open_renewal.state]}")
    return "\n".join(lines)


HELP = "\n".join(
    [
        "renew-token commands:",
        *(f"  renew-token {v.usage:<20}  {v.help}" for v in commands.VERBS.values()),
        "A tenant is its short name, display name, primary domain or tenant id.",
    ]
)


def withdrawn(tenant: Tenant) -> str:
    return (
        f"Another renewal for {tenant.display_name} was started at the same moment; this one "
        "was not created. Follow the other thread."
    )


def reopened_elsewhere(tenant: Tenant) -> str:
    return (
        f"This renewal of {tenant.display_name} got a new Auth URL while this thread was being "
        "opened, so this thread's link will not work. Follow the thread that shows the new one."
    )


def batch_opened(requester: str, count: int) -> str:
    return f"Renewal of all {count} expired tenants, requested by {requester}. Starting..."


def batch_summary(requester: str, lines: list[tuple[str, RenewalState]]) -> str:
    """The summary thread's status: counts, then one line per tenant."""
    done = sum(1 for _, state in lines if state is RenewalState.VALIDATED)
    open_ = sum(1 for _, state in lines if state in ACTIVE_STATES)
    ended = len(lines) - done - open_
    head = (
        f"Renewal of {len(lines)} expired tenants, requested by {requester}: "
        f"{done} validated, {open_} waiting" + (f", {ended} ended otherwise" if ended else "") + "."
    )
    return "\n".join([head] + [f"{name}: {STATE_LABELS[state]}" for name, state in lines])


def batch_started(count: int, skipped: list[str]) -> str:
    text = f"Renewing {count} expired tenants in one thread; each has its own Auth URL there."
    if skipped:
        text += f" Already open, so not restarted: {', '.join(skipped)}."
    return text


def no_expired() -> str:
    return "No tenant has expired tokens. `renew-token status` shows the others."


def consent_for_user_only(account: str | None, admin_consent_url: str) -> str:
    who = account or "The admin"
    return (
        f"{who} signed in and every token works, but consent was given only for their own "
        "account, not for the organization. A Global Administrator of the customer must open "
        f"{admin_consent_url} and accept; this renewal then completes by itself."
    )


def graph_unreachable() -> str:
    return (
        "Tokens acquired, but Microsoft Graph could not be reached to validate them. "
        "Run `validate` again in a few minutes."
    )


def revalidated(tenant: Tenant, organization_name: str) -> str:
    return f"Validated again: Microsoft Graph answers for {organization_name} ({tenant.slug})."


def revalidation_failed(tenant: Tenant, code: str) -> str:
    ex = explain(code)
    return f"Validation of {tenant.display_name} failed: {ex.title}. {ex.support}"


def changed_meanwhile() -> str:
    return "That renewal changed at the same moment (the customer or a colleague acted). Try again."


def storage_unavailable() -> str:
    return "I can't reach my database right now. Nothing was changed; try again in a minute."


def not_allowed(permission: str) -> str:
    if permission == "operate":
        return (
            "Sorry, you may not start or change renewals here. Ask an administrator to add you "
            "to the renewbot operators, or use an allowed channel."
        )
    return "Sorry, you may not use renewbot here. Ask an administrator for access."


def started(tenant: Tenant) -> str:
    return f"Renewal for {tenant.display_name} started in a thread."


def no_thread(tenant: Tenant, auth_url: str) -> str:
    return (
        f"Renewal for {tenant.display_name} started, but I could not post in this channel "
        f"(invite me to it, or use another channel). Auth URL for the customer: {auth_url}"
    )


def tenant_expired(tenant: Tenant, reason: str) -> str:
    why = f" ({explain(reason).title})" if reason else ""
    return (
        f"Tokens of {tenant.display_name} ({tenant.slug}) have expired{why}. "
        "Press Renew (or type `renew-token " + tenant.slug + "`) to start a renewal."
    )


UNREADABLE_WORDS = (
    "its stored tokens cannot be read (no configured encryption key opens them, or the stored "
    "copy was altered), so nothing can be refreshed until a new sign-in"
)


def tenant_tokens_unreadable(tenant: Tenant) -> str:
    return (
        f"{tenant.display_name} ({tenant.slug}) needs a renewal: {UNREADABLE_WORDS}. "
        "Press Renew (or type `renew-token " + tenant.slug + "`) to start one."
    )


UNREADABLE_SHORT = "stored tokens cannot be read: renewal needed"


def tokens_unreadable(name: str) -> str:
    """Said by `validate`, `show` ... of a tenant whose stored tokens cannot be read."""
    return f"{name} needs a renewal: {UNREADABLE_WORDS}. Type `renew-token {name}` to start one."


def tenants_tokens_unreadable(names: list[str]) -> str:
    return (
        f"{len(names)} tenants need a renewal because their stored tokens cannot be read "
        f"(no configured encryption key opens them, or the stored copies were altered): "
        f"{_listed(names)}. Check RENEWBOT_SECURITY__ENCRYPTION_KEYS, then press Renew all "
        "expired (or type `renew-token renew all-expired`)."
    )


def tenant_expiring(tenant: Tenant, days: int) -> str:
    return (
        f"Tokens of {tenant.display_name} ({tenant.slug}) expire in {days} days unless they are "
        "used. Renew now to avoid an outage."
    )


def _listed(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def tenants_expired(names: list[str]) -> str:
    return (
        f"Tokens of {len(names)} tenants have expired: {_listed(names)}. Press Renew all "
        "expired (or type `renew-token renew all-expired`) to invite them all in one thread."
    )


def tenants_expiring(names: list[str]) -> str:
    return (
        f"Tokens of {len(names)} tenants will expire soon unless they are used: "
        f"{_listed(names)}. `renew-token status` shows the days left."
    )


def tenants_recovered(names: list[str]) -> str:
    return f"Tokens of {len(names)} tenants are healthy again: {_listed(names)}."


def tenant_recovered(tenant: Tenant) -> str:
    return f"Tokens of {tenant.display_name} ({tenant.slug}) are healthy again."


def snoozed(tenant: Tenant, until: datetime | None) -> str:
    if until is None:
        return f"Alerts for {tenant.display_name} are back on."
    return f"Alerts for {tenant.display_name} are snoozed until {_when(until)}."


def digest(expiring: int, expired: int, lines: list[str]) -> str:
    head = f"Daily token health: {expired} expired, {expiring} expiring."
    more = expired + expiring - len(lines)
    tail = [f"... and {more} more (see `status`)."] if more > 0 else []
    return "\n".join([head, *lines, *tail])


def registration_problem(code: str) -> str:
    ex = explain(code)
    return (
        f"Our Microsoft Entra app registration needs fixing ({code}): {ex.title}. {ex.support} "
        "No tenant is marked expired because of it; renewals will work again once it is fixed."
    )


# -- the invitation email and chasing (core.mailing, core.chasing) ------------------------------


def mask_email(address: str) -> str:
    """``a•••@customer.com``: enough for support to recognise, not a full address in chat."""
    local, at, domain = address.strip().partition("@")
    if not at:
        return "•••"
    return f"{local[:1]}•••@{domain}"


def _hours(h: float) -> str:
    return f"{h:g} hour" + ("" if h == 1 else "s")


def invitation_email(
    tenant: Tenant, to: str, requester: str, organization: str, link: str, expires_at: datetime
) -> Email:
    """The invitation as the customer receives it: who asks, for what and why, the link, when it
    expires, and what Microsoft's screens will show."""
    return Email(
        to=to,
        subject=f"Action needed: renew the Microsoft 365 connection for {tenant.display_name}",
        intro=(
            "Hello,",
            f"{requester} of {organization} asks you to sign in once so that our tools keep "
            f"working with {tenant.display_name}'s Microsoft 365 (backup and management). "
            "The connection's sign-in has expired; it takes about two minutes and needs a "
            "Global Administrator account of your organization.",
            "Open this link and press Sign in with Microsoft:",
        ),
        link=link,
        link_label="Renew the Microsoft 365 connection",
        outro=(
            f"The link works until {_when(expires_at)} and only once. Do not forward it.",
            "What you will see: Microsoft's own sign-in page (login.microsoftonline.com) asks "
            "for your account. If it asks for permissions, tick Consent on behalf of your "
            "organization and accept. Our page then says: All tokens acquired! You can close "
            "this page now. (Signing in on another device? Our page can show a short code "
            "instead, which you enter at microsoft.com/devicelogin.)",
            f"We will never ask for your password. If you did not expect this email, reply to it "
            f"or call {organization} before you sign in.",
        ),
    )


def reminder_email(
    tenant: Tenant, to: str, requester: str, organization: str, link: str, expires_at: datetime
) -> Email:
    first = invitation_email(tenant, to, requester, organization, link, expires_at)
    return Email(
        to=to,
        subject=f"Reminder: renew the Microsoft 365 connection for {tenant.display_name}",
        intro=(
            "Hello,",
            f"A reminder from {requester} of {organization}: {tenant.display_name}'s Microsoft "
            "365 connection still needs a sign-in by a Global Administrator (about two minutes).",
            "Open this link and press Sign in with Microsoft:",
        ),
        link=link,
        link_label=first.link_label,
        outro=first.outro,
    )


def invitation_emailed(masked: str, kind: str) -> str:
    if kind == "reminder":
        return f"Reminder emailed to {masked}: the customer had not opened the link yet."
    return f"Invitation emailed to {masked}."


def email_refused(masked: str, kind: str, reason: str) -> str:
    what = "reminder" if kind == "reminder" else "invitation"
    return (
        f"The {what} email to {masked} was refused by the mail server ({reason}). Check the "
        "address: `renew-token cancel` this renewal and start it again with the right email "
        "(`renew-token <tenant> <email>`), or send the Auth URL above to the customer yourself."
    )


def email_failed(masked: str, kind: str, reason: str, attempts: int) -> str:
    what = "reminder" if kind == "reminder" else "invitation"
    return (
        f"The {what} email to {masked} could not be delivered after {attempts} attempts "
        f"({reason}). Send the Auth URL above to the customer yourself, and ask an "
        "administrator to check the mail settings (RENEWBOT_EMAIL__...)."
    )


def not_opened(hours: float) -> str:
    return (
        f"The customer has not opened the Auth URL after {_hours(hours)}. Send it to them "
        "again, or call them."
    )


def stalled(tenant: Tenant, why: str) -> str:
    """Said to the person who asked (the adapter puts a real mention of them in front)."""
    return (
        f"The customer of {tenant.display_name} seems stuck: {why}. Suggestion: call them "
        f"and run `renew-token code {tenant.slug}` while on the phone; read them the code "
        "from this thread."
    )


def stalled_opened(hours: float) -> str:
    return f"they opened the link {_hours(hours)} ago but have not signed in"


def stalled_lapsed(count: int) -> str:
    return f"{count} codes expired without a sign-in"


def invitation_expiring(tenant: Tenant, expires_at: datetime | None) -> str:
    return (
        f"The invitation for {tenant.display_name} expires at {_when(expires_at)} and "
        "nobody has signed in yet. Press Send a fresh invitation for a new link (emailed again "
        "when email is configured), or cancel the renewal."
    )


def fresh_invitation(tenant: Tenant) -> str:
    return (
        f"A fresh invitation for {tenant.display_name} is in the thread; the old link no "
        "longer works."
    )


def chase_history(done: list[tuple[str, datetime]], upcoming: list[tuple[str, datetime]]) -> str:
    """`pending`'s second line of an invitation: what was sent when, and what is next."""
    parts = []
    if done:
        parts.append("sent: " + ", ".join(f"{what} {_when(at)}" for what, at in done))
    if upcoming:
        what, at = upcoming[0]
        parts.append(f"next: {what} at {_when(at)}")
    return "; ".join(parts) if parts else "nothing sent yet"
