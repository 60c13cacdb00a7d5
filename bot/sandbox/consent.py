"""The admin consent endpoint: ``GET|POST /{tenant}/v2.0/adminconsent`` on the sandbox's HTTPS host.

Follows "Admin consent on the Microsoft identity platform": the app sends an administrator to
``/{tenant}/v2.0/adminconsent?client_id&scope&redirect_uri&state``; a Global Administrator of that
tenant signs in and accepts; the browser returns to ``redirect_uri`` with ``admin_consent=True``,
``tenant``, ``scope`` and ``state``, and the app has a tenant-wide (AllPrincipals) grant. A
decline returns ``error`` and ``error_description`` (AADSTS65004). Problems with the request
itself (unknown tenant or app, a redirect URI the registration does not list) are shown on the
page and never redirected, as Entra does. It grants nothing to anyone but a Global Administrator.
"""

from __future__ import annotations

import html
from urllib.parse import urlencode

from aiohttp import web

from bot.sandbox.directory import Directory, SandboxTenant
from bot.sandbox.login import page

_FIELDS = ("client_id", "scope", "redirect_uri", "state")


def _problem(code: int, text: str, status: int = 400) -> web.Response:
    return page("Sorry, but we're having trouble signing you in", (
        f"<p>AADSTS{code}: {html.escape(text)}</p>"
    ), status=status)  # fmt: skip


def _back(redirect_uri: str, **params: str) -> web.Response:
    sep = "&" if "?" in redirect_uri else "?"
    raise web.HTTPFound(f"{redirect_uri}{sep}{urlencode({'admin_consent': 'True', **params})}")


class AdminConsent:
    def __init__(self, directory: Directory) -> None:
        self.d = directory

    def _check(
        self, request: web.Request, values: dict[str, str]
    ) -> tuple[SandboxTenant | None, web.Response | None]:
        tid = request.match_info["tenant"]
        tenant = self.d.tenants.get(tid)
        if tenant is None:
            return None, _problem(90002, f"Tenant '{tid[:64]}' not found.")
        for name in ("client_id", "redirect_uri", "scope"):
            if not values.get(name):
                return None, _problem(
                    900144, f"The request body must contain the following parameter: '{name}'."
                )
        registration = self.d.registrations.get(values["client_id"])
        if registration is None:
            return None, _problem(
                700016,
                f"Application with identifier '{values['client_id'][:64]}' was not found in the "
                f"directory '{tenant.name}'.",
            )
        if registration.redirect_uris and values["redirect_uri"] not in registration.redirect_uris:
            return None, _problem(
                50011,
                "The redirect URI specified in the request does not match the redirect URIs "
                "configured for the application.",
            )
        return tenant, None

    async def show(self, request: web.Request) -> web.Response:
        values = {k: request.query.get(k, "") for k in _FIELDS}
        tenant, problem = self._check(request, values)
        if problem or tenant is None:
            return problem or _problem(90002, "Tenant not found.")
        hidden = "".join(
            f"<input type=hidden name={k} value='{html.escape(v)}'>" for k, v in values.items()
        )
        buttons = "".join(
            f"<button name=upn value='{html.escape(a.upn)}'>{html.escape(a.name)} "
            f"({html.escape(a.upn)})</button>"
            for a in self.d.accounts.values()
            if a.tenant_id == tenant.tenant_id
        )
        return page(
            "Permissions requested: accept for your organization",
            (
                f"<p><b>renewbot</b> asks for {html.escape(values['scope'])} for everyone in "
                f"<b>{html.escape(tenant.name)}</b>. Sign in as an administrator.</p>"
                f"<form method=post>{hidden}{buttons}"
                "<button name=decision value=decline id=cancel>Cancel</button></form>"
            ),
        )

    async def submit(self, request: web.Request) -> web.Response:
        form = await request.post()
        values = {k: str(form.get(k, "")) for k in _FIELDS}
        tenant, problem = self._check(request, values)
        if problem or tenant is None:
            return problem or _problem(90002, "Tenant not found.")
        if form.get("decision") == "decline":
            return _back(
                values["redirect_uri"],
                error="consent_required",
                error_description="AADSTS65004: The resource owner or authorization server "
                "denied the request.",
                state=values["state"],
            )
        account = self.d.accounts.get(str(form.get("upn", "")).lower())
        if account is None or account.tenant_id != tenant.tenant_id:
            return _problem(50020, "The account does not exist in this organization.")
        if not account.global_admin or account.user_type != "Member":
            return page(
                "Need admin approval",
                "<p>renewbot needs permission to access resources in your organization that "
                "only an admin can grant.</p><p>Error AADSTS90094.</p>",
                status=403,
            )
        tenant.record_consent(account, for_organization=True)
        return _back(
            values["redirect_uri"],
            tenant=tenant.tenant_id,
            scope=values["scope"],
            state=values["state"],
        )


def add_routes(app: web.Application, directory: Directory) -> None:
    consent = AdminConsent(directory)
    app.router.add_get("/{tenant}/v2.0/adminconsent", consent.show)
    app.router.add_post("/{tenant}/v2.0/adminconsent", consent.submit)
