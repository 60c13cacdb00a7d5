"""The privacy statement and the terms of use, served at /privacy and /terms.

The Teams app package points its privacyUrl and termsOfUseUrl here (Teams requires both,
https, reachable: "Teams app manifest schema", developer.privacyUrl / termsOfUseUrl), so the
links an admin follows from the Teams app catalogue open pages that exist. Plain HTML with no
script, the same security headers as every other answer. It must not show anything about a
tenant, a renewal or a setting's value: the pages are public.
"""

from __future__ import annotations

import html
import secrets
from dataclasses import dataclass

from aiohttp import web

from adapters.web.page import document


@dataclass(frozen=True)
class LegalPages:
    """``app_name`` is what the chat platforms show; ``operator`` is the MSP that runs it."""

    app_name: str = "renewbot"
    operator: str = ""

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/privacy", self.privacy), web.get("/terms", self.terms)]

    async def privacy(self, request: web.Request) -> web.Response:
        return self._page(f"Privacy statement: {self.app_name}", self._privacy_body())

    async def terms(self, request: web.Request) -> web.Response:
        return self._page(f"Terms of use: {self.app_name}", self._terms_body())

    @property
    def _who(self) -> str:
        return html.escape(self.operator or "the managed service provider that runs it")

    def _privacy_body(self) -> str:
        app = html.escape(self.app_name)
        return (
            f"<h1>Privacy statement</h1><p>{app} is run by {self._who} to renew the Microsoft "
            "365 sign-ins its platform uses for your organisation.</p>"
            "<h2>What it keeps</h2><ul>"
            "<li>Your organisation's name, Microsoft tenant id, domains and the username of the "
            "administrator who signs in.</li>"
            "<li>The tokens Microsoft issues when that administrator signs in, encrypted at "
            "rest, used only for the services your agreement names.</li>"
            "<li>A record of each renewal: who asked for it, when, and how it ended.</li>"
            "<li>The messages it posts in the Slack or Teams threads of a renewal.</li></ul>"
            "<h2>What it does not do</h2><ul>"
            "<li>It never posts or logs a token or a password.</li>"
            "<li>It sends no telemetry and shares nothing with anyone but Microsoft's sign-in "
            "service and the services the tokens are for.</li></ul>"
            "<h2>Your choices</h2><p>An administrator of your organisation can withdraw the "
            "consent at any time (Microsoft Entra admin center, Enterprise applications). "
            f"To have your data removed, ask {self._who}.</p>"
        )

    def _terms_body(self) -> str:
        app = html.escape(self.app_name)
        return (
            f"<h1>Terms of use</h1><p>{app} is provided by {self._who} to its own staff and "
            "customers, under the service agreement between them; that agreement governs its "
            "use.</p><ul>"
            "<li>It acts only on a renewal that the provider's staff ask for and that your "
            "administrator approves by signing in on Microsoft's own pages.</li>"
            "<li>Use it only for organisations you are authorised to act for.</li>"
            "<li>Withdrawing the consent in your tenant stops it at once.</li></ul>"
        )

    @staticmethod
    def _page(title: str, body: str) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        resp = web.Response(text=document(title, body, nonce), content_type="text/html")
        resp.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'none'; "
            "base-uri 'none'; frame-ancestors 'none'"
        )
        return resp
