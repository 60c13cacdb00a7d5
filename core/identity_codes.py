"""The one table of identity error codes: what each means, in plain words, and what it implies.

For every code Microsoft Entra (or our own checks) can end a sign-in or a refresh with: the words
for support and for the customer, whether a new device code can help, whether it kills the
tenant's refresh token (the monitor then calls the tenant expired), whether it concerns one
tenant or the whole app registration (then no tenant is to blame and one alert names the
registration problem), and whether it is a passing outage. Everything else (``messages.explain``,
the monitor, the renewal services, the identity adapter) asks this table; nothing else sorts codes.

Codes and meanings follow Microsoft's "Microsoft Entra authentication and authorization error
codes" reference (learn.microsoft.com/entra/identity-platform/reference-error-codes) and the OAuth
device authorization grant (RFC 8628 section 3.5) for the device-flow endings. Standard library
only; no chat or SDK vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    TENANT = "tenant"  # this tenant's sign-in or tokens
    APP = "app"  # the MSP's app registration: every tenant fails the same way


@dataclass(frozen=True)
class IdentityCode:
    """One identity error code and what it implies."""

    title: str
    support: str
    customer: str
    new_code_helps: bool = (
        False  # a fresh device code (after the customer fixes something) may work
    )
    kills_refresh_token: bool = False  # the stored refresh token can no longer be redeemed
    scope: Scope = Scope.TENANT
    transient: bool = False  # a passing outage: try again, change nothing
    consent_missing: bool = False  # the tenant has not (or no longer) consented to the app

    @property
    def retry_with_new_code(self) -> bool:
        return self.new_code_helps

    @property
    def is_app_wide(self) -> bool:
        return self.scope is Scope.APP


GENERIC = IdentityCode(
    "Sign-in failed",
    "Microsoft refused the sign-in. Check `errors` for the code, then start a new renewal.",
    "Sign-in did not complete. Please contact your support team.",
)

_CA = "Your organization's Conditional Access policy blocked this sign-in."
_AGAIN = "Please sign in again."
_SUPPORT_FOLLOWS = "The sign-in could not be confirmed yet. Your support team will follow up."
_REGISTRATION = (
    "Our sign-in application is misconfigured on our side. Your support team has been told; "
    "there is nothing you need to do."
)

CODES: dict[str, IdentityCode] = {
    # -- device-flow endings (RFC 8628 3.5): the customer can simply try again ----------------
    "authorization_declined": IdentityCode(
        "The customer declined the sign-in",
        "The customer pressed Decline / Cancel at Microsoft. Ask them to press New code and "
        "accept this time.",
        "You declined the sign-in. If that was a mistake, press New code and sign in again.",
        new_code_helps=True,
    ),
    "expired_token": IdentityCode(
        "The code expired",
        "The code lives about 15 minutes and was not used in time. The customer can press "
        "New code on the page (or run `code` here during a call).",
        "This code has expired. Press New code to get a fresh one.",
        new_code_helps=True,
    ),
    "bad_verification_code": IdentityCode(
        "Microsoft did not recognise the code",
        "The code was mistyped or is unknown. Ask the customer for a New code.",
        "That code was not recognised. Press New code and type the new one carefully.",
        new_code_helps=True,
    ),
    "AADSTS70000": IdentityCode(
        "The code is no longer valid",
        "The code was already used or withdrawn. Ask the customer for a New code.",
        "This code can no longer be used. Press New code.",
        new_code_helps=True,
    ),
    # -- the account that signed in -----------------------------------------------------------
    "AADSTS50020": IdentityCode(
        "The account belongs to another tenant",
        "The customer signed in with an account from a different organization (or a personal "
        "Microsoft account). Ask for an account of this tenant.",
        "That account belongs to a different organization. Press New code and sign in with an "
        "account of this organization.",
        new_code_helps=True,
    ),
    "AADSTS50034": IdentityCode(
        "The account does not exist in this tenant",
        "Microsoft has no such user in the customer's directory: a typo in the username, or an "
        "account of another organization. Ask the customer to check the username.",
        "That account was not found in your organization. Press New code and check the username.",
        new_code_helps=True,
    ),
    "AADSTS50105": IdentityCode(
        "The account is not assigned to our application",
        "The customer's Enterprise Application requires user assignment and this admin is not "
        "assigned. Their administrator assigns the user (Enterprise applications > Users and "
        "groups) or turns off 'Assignment required', then New code.",
        "Your account is not allowed to use this application yet. Ask your IT administrator to "
        "assign you to it, then press New code.",
        new_code_helps=True,
    ),
    "guest_account": IdentityCode(
        "A guest account signed in",
        "The account is a B2B guest in the customer's tenant (its home is another organization). "
        "Renewals need a member account of the tenant, ideally a Global Administrator.",
        "You signed in as a guest of this organization. Please sign in with an account that "
        "belongs to it.",
        new_code_helps=True,
    ),
    "wrong_tenant": IdentityCode(
        "Signed in to the wrong tenant",
        "The account that signed in belongs to a different tenant than this one (or is a "
        "personal Microsoft account). Ask for an administrator of this tenant.",
        "You signed in with an account of a different organization. Press New code and sign in "
        "with an account of this organization.",
        new_code_helps=True,
    ),
    "not_global_admin": IdentityCode(
        "The account that signed in is not a Global Administrator",
        "The Enterprise Application was missing, so this renewal needs a Global Administrator, "
        "but the account that signed in does not hold that role. Start a new renewal with a "
        "Global Administrator.",
        "A Global Administrator must sign in for this step. Please contact your support team.",
    ),
    # -- multi-factor authentication and Conditional Access -----------------------------------
    "AADSTS50076": IdentityCode(
        "Multi-factor authentication is required",
        "The tenant requires MFA for this sign-in. The customer must complete MFA at Microsoft; "
        "press New code for them.",
        "Your organization requires multi-factor authentication. Press New code and complete "
        "the extra verification step.",
        new_code_helps=True,
        kills_refresh_token=True,  # no silent refresh can satisfy it
    ),
    "AADSTS50079": IdentityCode(
        "The account must register for multi-factor authentication",
        "The admin has to set up MFA (Microsoft will walk them through it at sign-in). Then "
        "New code.",
        "Your organization requires you to set up multi-factor authentication. Press New code "
        "and follow Microsoft's steps to set it up.",
        new_code_helps=True,
        kills_refresh_token=True,
    ),
    "AADSTS53003": IdentityCode(
        "Conditional Access blocked the sign-in",
        "A Conditional Access policy in the customer's tenant blocks this sign-in (Microsoft's "
        "policy that blocks the device code flow answers this way). Where the page offers "
        "'Sign in with Microsoft', use that; otherwise their administrator must exclude this "
        "application from the policy.",
        f"{_CA} Use 'Sign in with Microsoft' if the page offers it, or ask your IT "
        "administrator to allow this application.",
        kills_refresh_token=True,
    ),
    "AADSTS530033": IdentityCode(
        "Conditional Access requires a compliant device",
        "A Conditional Access policy requires a compliant or managed device, which a device "
        "code sign-in cannot prove. The customer's administrator must exclude this application "
        "from the device-compliance policy.",
        f"{_CA} It requires a managed device. Ask your IT administrator to allow this application.",
        kills_refresh_token=True,
    ),
    "AADSTS70043": IdentityCode(
        "Conditional Access ended the session (sign-in frequency)",
        "The tenant's sign-in frequency policy expired the refresh token. Start a renewal; if it "
        "recurs the policy is shorter than our check interval.",
        f"Your organization's security policy asks you to sign in again. {_AGAIN}",
        kills_refresh_token=True,
    ),
    # -- consent ------------------------------------------------------------------------------
    "AADSTS65001": IdentityCode(
        "Consent is missing for the application",
        "The Enterprise Application is missing or consent was withdrawn. A Global Administrator "
        "must sign in and tick 'Consent on behalf of your organization'.",
        "Your organization has not approved this application. A Global Administrator must sign "
        "in and accept 'Consent on behalf of your organization'.",
        new_code_helps=True,
        kills_refresh_token=True,
        consent_missing=True,
    ),
    "AADSTS90094": IdentityCode(
        "Administrator approval is needed",
        "The account that signed in may not grant consent. Ask the customer to sign in with a "
        "Global Administrator account.",
        "This needs a Global Administrator. Press New code and sign in with a Global "
        "Administrator account.",
        new_code_helps=True,
        consent_missing=True,
    ),
    "AADSTS65004": IdentityCode(
        "The customer declined to consent",
        "The admin pressed Cancel on Microsoft's permissions screen. Ask them to press New code "
        "and accept (a Global Administrator ticks 'Consent on behalf of your organization').",
        "You declined the permissions. If that was a mistake, press New code and accept them.",
        new_code_helps=True,
        consent_missing=True,
    ),
    "consent_for_user_only": IdentityCode(
        "Consent was given only for the account that signed in",
        "The admin consented for themself, not 'on behalf of your organization'. A Global "
        "Administrator must grant consent for the organization (the admin-consent link in this "
        "thread); the renewal completes by itself once they have.",
        "You approved the application for your own account only. A Global Administrator must "
        "approve it for your organization: open the approval link your support team sent.",
    ),
    # -- the browser sign-in's return (authorization code flow, PKCE) -------------------------
    "AADSTS54005": IdentityCode(
        "The sign-in's code was already used",
        "Microsoft had already redeemed this authorization code (a return replayed or sent "
        "twice). Nothing changed; the customer presses Sign in with Microsoft again.",
        "This sign-in was already used. Press Sign in with Microsoft to sign in again.",
        new_code_helps=True,
    ),
    "AADSTS501481": IdentityCode(
        "The sign-in's proof key did not match",
        "Microsoft refused the authorization code because the PKCE verifier did not match (a "
        "code from another sign-in). Nothing changed; the customer signs in again.",
        "This sign-in could not be completed. Press Sign in with Microsoft to try again.",
        new_code_helps=True,
    ),
    "state_mismatch": IdentityCode(
        "The sign-in's return did not match the one we started",
        "The return from Microsoft carried another sign-in's state. Nothing changed; the "
        "customer signs in again from the Auth URL.",
        "This sign-in could not be completed. Press Sign in with Microsoft to try again.",
        new_code_helps=True,
    ),
    "nonce_mismatch": IdentityCode(
        "The sign-in's ID token was not issued for this sign-in",
        "The ID token's nonce did not match the one we sent: the token may have been replayed. "
        "It was refused; start a new renewal and tell security if it recurs.",
        "This sign-in could not be completed. Please contact your support team.",
    ),
    "AADSTS50011": IdentityCode(
        "Our redirect URI is not registered",
        "The app registration does not list the redirect URI renewbot sends "
        "(<public URL>/onboard/callback, under Mobile and desktop applications; see "
        "`renewbot manifests`). This affects every tenant's browser sign-in.",
        _REGISTRATION,
        scope=Scope.APP,
    ),
    # -- refresh tokens that died -------------------------------------------------------------
    "AADSTS700082": IdentityCode(
        "The refresh token expired after 90 days without use",
        "The stored tokens aged out. Renewing the tenant (`renew-token <tenant>`) is the fix.",
        "Your organization's connection expired after a long time without use. Please sign in "
        "again.",
        kills_refresh_token=True,
    ),
    "AADSTS700084": IdentityCode(
        "The refresh token expired (single-page-app lifetime)",
        "Microsoft treated the token as a single-page-app token (24 hours). Check the app "
        "registration's platform settings, then renew the tenant.",
        f"Your organization's connection expired. {_AGAIN}",
        kills_refresh_token=True,
    ),
    "AADSTS50173": IdentityCode(
        "The grant was revoked (password changed or sessions revoked)",
        "The admin's password was changed or their sessions were revoked. Start a new renewal.",
        "Your earlier sign-in was revoked, for example by a password change. Please sign in again.",
        kills_refresh_token=True,
    ),
    "AADSTS70008": IdentityCode(
        "The refresh token or code expired",
        "The stored grant expired. Start a new renewal.",
        f"Your earlier sign-in has expired. {_AGAIN}",
        kills_refresh_token=True,
    ),
    "AADSTS9002313": IdentityCode(
        "The stored refresh token is malformed",
        "Microsoft could not read the stored refresh token. Start a new renewal.",
        f"Your earlier sign-in can no longer be used. {_AGAIN}",
        kills_refresh_token=True,
    ),
    "no_tokens": IdentityCode(
        "No tokens are stored for the tenant",
        "Nothing was ever stored for this tenant (or it was removed). Start a renewal.",
        f"Your organization is not connected yet. {_AGAIN}",
        kills_refresh_token=True,
    ),
    "token_cache_unreadable": IdentityCode(
        "The stored tokens cannot be read",
        "None of the configured encryption keys opens this tenant's stored tokens (a key that is "
        "not the one they were saved with, or the stored copy was altered). Start a renewal "
        "(`renew-token <tenant>`): the new sign-in replaces them. If many tenants show this, "
        "check RENEWBOT_SECURITY__ENCRYPTION_KEYS first.",
        _SUPPORT_FOLLOWS,
        kills_refresh_token=True,
    ),
    # -- the tenant or a resource of it ---------------------------------------------------------
    "AADSTS90002": IdentityCode(
        "Microsoft does not know this tenant id",
        "The tenant id was not found. Check it with `show` and fix the tenant record.",
        "Your organization could not be found. Please contact your support team.",
    ),
    "AADSTS50059": IdentityCode(
        "No tenant was named in the sign-in",
        "Microsoft could not tell which tenant the sign-in is for. Check the tenant id with "
        "`show` and the authority host setting.",
        "Your organization could not be found. Please contact your support team.",
    ),
    "invalid_authority": IdentityCode(
        "Microsoft does not know this tenant id",
        "The sign-in service rejected the tenant id. Check it with `show` and fix the tenant "
        "record before starting again.",
        "Your organization could not be found. Please contact your support team.",
    ),
    "AADSTS500011": IdentityCode(
        "A token set names a service this tenant does not have",
        "Microsoft has no such resource in this tenant: usually the SharePoint host, which comes "
        "from the tenant's initial *.onmicrosoft.com domain (see `show`; set it with `tenants "
        "import`), or a service the tenant is not licensed for. A new code will not help.",
        _SUPPORT_FOLLOWS,
    ),
    "graph_mismatch": IdentityCode(
        "Microsoft Graph answered for another organization",
        "The new token works, but Graph reports a different organization. Check the tenant id "
        "in `show`.",
        "The sign-in could not be confirmed. Please contact your support team.",
    ),
    "graph_failed": IdentityCode(
        "Microsoft Graph refused the new token",
        "The token was issued but Graph did not accept it (or answered something unreadable). "
        "Run `validate` again in a few minutes; if it persists start a new renewal.",
        _SUPPORT_FOLLOWS,
    ),
    # -- the app registration: every tenant at once -------------------------------------------
    "AADSTS7000218": IdentityCode(
        "Public client flows are off in our app registration",
        "Microsoft wants a client secret because 'Allow public client flows' is off in the app "
        "registration (Authentication > Advanced settings). Turn it on; this affects every "
        "tenant, not this one.",
        _REGISTRATION,
        scope=Scope.APP,
    ),
    "AADSTS700016": IdentityCode(
        "Microsoft does not know our application id",
        "No application with our client id exists: check RENEWBOT_IDENTITY__CLIENT_ID against "
        "the app registration (and that it is multitenant). This affects every tenant.",
        _REGISTRATION,
        scope=Scope.APP,
    ),
    "invalid_client": IdentityCode(
        "Microsoft refused our application's credentials",
        "The app registration rejected our client (a wrong client id, a public client that is "
        "not allowed, or an expired credential). This affects every tenant: fix the "
        "registration, not the tenant.",
        _REGISTRATION,
        scope=Scope.APP,
    ),
    "unauthorized_client": IdentityCode(
        "Our application may not use this sign-in",
        "The app registration is not allowed this grant (device code needs 'Allow public client "
        "flows'; a disabled or single-tenant app answers this too). This affects every tenant.",
        _REGISTRATION,
        scope=Scope.APP,
    ),
    # -- passing outages ----------------------------------------------------------------------
    "unavailable": IdentityCode(
        "Microsoft's sign-in service did not answer",
        "The identity service is unreachable. Nothing was changed; try again in a few minutes.",
        "Microsoft's sign-in service is not answering. Please try again in a few minutes.",
        transient=True,
    ),
}
# OAuth's own names for a passing outage (RFC 6749 5.2 / 4.1.2.1); the adapter maps them to
# "unavailable", and reports from other services may carry them as they are.
CODES["temporarily_unavailable"] = CODES["server_error"] = CODES["unavailable"]


def lookup(code: str) -> IdentityCode:
    """The entry for ``code``; an unknown code gets the generic "Sign-in failed"."""
    return CODES.get(code, GENERIC)


def kills_refresh_token(code: str) -> bool:
    return lookup(code).kills_refresh_token


def is_app_wide(code: str) -> bool:
    return lookup(code).is_app_wide


def is_transient(code: str) -> bool:
    return lookup(code).transient


def consent_missing(code: str) -> bool:
    return lookup(code).consent_missing
