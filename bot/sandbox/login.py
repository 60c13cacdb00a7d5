"""The sandbox's device login page (plain HTTP on 127.0.0.1) and its scenario knobs.

A person (or the scripted customer of `renewbot demo --scripted`) enters the code, picks an account,
consents when the Enterprise Application is absent, or declines. Pages are server-rendered forms.
The consent screen follows "Microsoft Entra application consent experiences": the "Consent on
behalf of your organization" box is shown to a Global Administrator only and starts unticked;
without it the grant is for the signer alone (consentType Principal). Knobs:
``POST /_sandbox/tenants/{id}`` and ``POST /_sandbox/registrations/{client id}`` (JSON fields).
It never issues tokens itself: it only marks a flow approved, declined or failed.
"""

from __future__ import annotations

import html
import time
from dataclasses import fields
from typing import Any

from aiohttp import web

from bot.sandbox.directory import (
    DeviceFlow,
    Directory,
    Registration,
    SandboxAccount,
    SandboxTenant,
)

DIRECTORY_KEY = web.AppKey("directory", Directory)

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:30rem;margin:3rem auto;padding:0 1rem}"
    "button{padding:.5rem 1rem;margin:.25rem 0;display:block;width:100%}"
    "input{padding:.5rem;width:100%;box-sizing:border-box}.err{color:#a00}"
)


def page(title: str, body: str, status: int = 200) -> web.Response:
    doc = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}"
        f"</title><meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<style>{_STYLE}</style></head><body><p><b>Sandbox sign-in</b> (not Microsoft)</p>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(
        text=doc,
        content_type="text/html",
        status=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _hidden(**values: str) -> str:
    return "".join(
        f"<input type=hidden name={k} value='{html.escape(v)}'>" for k, v in values.items()
    )


def _find(d: Directory, code: str) -> DeviceFlow | None:
    flow = d.by_user_code.get(code.strip().upper().replace("-", "").replace(" ", ""))
    if flow is None or flow.status != "pending" or time.monotonic() >= flow.expires_at:
        return None
    return flow


def _code_form(error: str = "") -> str:
    err = f"<p class=err role=alert>{html.escape(error)}</p>" if error else ""
    return (
        f"{err}<form method=post action=/devicelogin><label for=otc>Code</label>"
        "<input id=otc name=otc autocomplete=off autofocus required>"
        "<button type=submit id=next>Next</button></form>"
    )


async def enter_code(request: web.Request) -> web.Response:
    return page("Enter code", "<p>Enter the code shown by the application.</p>" + _code_form())


async def submit_code(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY_KEY]
    otc = str((await request.post()).get("otc", ""))
    flow = _find(d, otc)
    if flow is None:
        return page(
            "Enter code",
            _code_form("That code was not recognised or has expired. Check it and try again."),
            status=400,
        )
    tenant = d.tenant(flow.tenant_id)
    assert tenant is not None
    buttons = "".join(
        f"<button name=upn value='{html.escape(a.upn)}'>{html.escape(a.name)} "
        f"({html.escape(a.upn)})</button>"
        for a in d.accounts.values()
    )
    return page(
        "Pick an account",
        (
            f"<p>You are signing in to <b>renewbot</b> for <b>{html.escape(tenant.name)}</b>.</p>"
            f"<form method=post action=/devicelogin/signin>{_hidden(otc=flow.user_code)}{buttons}"
            "</form><form method=post action=/devicelogin/decline>"
            f"{_hidden(otc=flow.user_code)}<button id=decline>Cancel sign-in</button></form>"
        ),
    )


def _fail(flow: DeviceFlow, code: str, title: str, text: str) -> web.Response:
    flow.status, flow.error_code = "failed", code
    return page(title, f"<p>{html.escape(text)}</p><p>Error AADSTS{code}.</p>")


def _approve(flow: DeviceFlow) -> web.Response:
    flow.status = "approved"
    return page(
        "You're signed in",
        "<p id=done>You have signed in to renewbot. You can close "
        "this window and return to the application.</p>",
    )


async def sign_in(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY_KEY]
    form = await request.post()
    flow = _find(d, str(form.get("otc", "")))
    account = d.accounts.get(str(form.get("upn", "")).lower())
    if flow is None or account is None:
        return page("Enter code", _code_form("This sign-in is no longer valid."), status=400)
    tenant = d.tenant(flow.tenant_id)
    assert tenant is not None
    flow.account = account
    if account.tenant_id != tenant.tenant_id:
        return _fail(
            flow,
            "50020",
            "Wrong organization",
            f"{account.upn} is not an account of {tenant.name}.",
        )
    if tenant.conditional_access:
        why = (
            "Your organization's Conditional Access policy requires a managed device."
            if tenant.conditional_access == "530033"
            else "Your organization's Conditional Access policy blocks sign-in with a code "
            "(device code flow)."
        )
        return _fail(flow, tenant.conditional_access, "You cannot access this right now", why)
    if tenant.mfa_required:
        return _fail(
            flow,
            "50076",
            "More information required",
            "Your organization requires multi-factor authentication.",
        )
    if not tenant.consented(account):
        registration = d.registrations.get(flow.client_id) or Registration(flow.client_id)
        asks, admin_box = consent_choices(registration, account)
        return page(
            "Permissions requested",
            (
                "<p><b>renewbot</b> needs permission to access resources in your organization.</p>"
                f"<ul id=permissions>{asks}</ul>"
                f"<form method=post action=/devicelogin/consent>{_hidden(otc=flow.user_code)}"
                f"{admin_box}<button name=decision value=accept id=accept>Accept</button>"
                "<button name=decision value=decline id=cancel>Cancel</button></form>"
            ),
        )
    return _approve(flow)


async def consent(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY_KEY]
    form = await request.post()
    flow = _find(d, str(form.get("otc", "")))
    if flow is None or flow.account is None:
        return page("Enter code", _code_form("This sign-in is no longer valid."), status=400)
    if form.get("decision") != "accept":
        flow.status = "declined"
        return page("Sign-in cancelled", "<p>You declined. You can close this window.</p>")
    if not flow.account.global_admin:
        return _fail(
            flow,
            "90094",
            "Need admin approval",
            "renewbot needs permission that only an administrator can grant.",
        )
    tenant = d.tenant(flow.tenant_id)
    assert tenant is not None
    tenant.record_consent(flow.account, for_organization=form.get("org") == "1")
    return _approve(flow)


async def decline(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY_KEY]
    flow = _find(d, str((await request.post()).get("otc", "")))
    if flow is not None:
        flow.status = "declined"
    return page("Sign-in cancelled", "<p>You cancelled the sign-in. You can close this window.</p>")


async def set_tenant(request: web.Request) -> web.Response:
    """Scenario knobs for tests and the demo: POST JSON fields of SandboxTenant."""
    d = request.app[DIRECTORY_KEY]
    tenant = d.tenants.get(request.match_info["tenant"])
    if tenant is None:
        return web.json_response({"error": "unknown tenant"}, status=404)
    try:
        changes: dict[str, Any] = await request.json()
    except ValueError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    allowed = {f.name for f in fields(SandboxTenant)} - {"tenant_id"}
    if not isinstance(changes, dict) or not set(changes) <= allowed:
        return web.json_response({"error": f"allowed fields: {sorted(allowed)}"}, status=400)
    for name, value in changes.items():
        setattr(tenant, name, value)
    return web.json_response({"ok": True})


async def set_registration(request: web.Request) -> web.Response:
    """Registration knobs: POST JSON fields of Registration; an unknown client id is registered."""
    d = request.app[DIRECTORY_KEY]
    client_id = request.match_info["client_id"]
    try:
        changes: dict[str, Any] = await request.json()
    except ValueError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    allowed = {f.name for f in fields(Registration)} - {"client_id"}
    if not isinstance(changes, dict) or not set(changes) <= allowed:
        return web.json_response({"error": f"allowed fields: {sorted(allowed)}"}, status=400)
    registration = d.registrations.setdefault(client_id, Registration(client_id))
    for name, value in changes.items():
        setattr(registration, name, tuple(value) if isinstance(value, list) else value)
    return web.json_response({"ok": True})


async def state(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY_KEY]
    last: dict[str, float] = {}
    gaps = []
    for code, at in d.polls:
        if code in last:
            gaps.append(at - last[code])
        last[code] = at
    return web.json_response(
        {
            "tenants": {t.tenant_id: t.name for t in d.tenants.values()},
            "pending_codes": [f.user_code for f in d.flows.values() if f.status == "pending"],
            "polls": len(d.polls),
            "min_poll_gap_seconds": min(gaps) if gaps else None,
        }
    )


def http_app(directory: Directory) -> web.Application:
    app = web.Application()
    app[DIRECTORY_KEY] = directory
    app.router.add_get("/devicelogin", enter_code)
    app.router.add_post("/devicelogin", submit_code)
    app.router.add_post("/devicelogin/signin", sign_in)
    app.router.add_post("/devicelogin/consent", consent)
    app.router.add_post("/devicelogin/decline", decline)
    app.router.add_post("/_sandbox/tenants/{tenant}", set_tenant)
    app.router.add_post("/_sandbox/registrations/{client_id}", set_registration)
    app.router.add_get("/_sandbox/state", state)
    return app


def consent_choices(registration: Registration, account: SandboxAccount) -> tuple[str, str]:
    """The consent screen's list of permissions, and its "Consent on behalf of your
    organization" box: unticked, and only for a Global Administrator (a GA may consent for
    themself only). Shared by the device code's and the browser's consent screens."""
    asks = "".join(f"<li>{html.escape(p)}</li>" for p in registration.graph_permissions)
    admin_box = (
        (
            "<p><label><input type=checkbox name=org value=1 id=org> Consent on behalf of "
            "your organization</label></p>"
        )
        if account.global_admin and account.user_type == "Member"
        else ""
    )
    return asks, admin_box
