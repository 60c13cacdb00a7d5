"""Renders the chat platforms' app manifests from the templates in manifests/ (no secrets)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

# bot/manifest_templates links to the checkout's manifests/ and is a real folder in a wheel.
MANIFESTS = Path(__file__).resolve().parent / "manifest_templates"


class ManifestError(ValueError):
    """Bad input for a manifest (named, never a secret)."""


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
TEAMS_FILES = ("color.png", "outline.png")


def _https(public_url: str) -> str:
    parts = urlsplit(public_url)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise ManifestError("--public-url must be an https:// URL such as https://bot.example.com")
    return parts.hostname


def slack(public_url: str, socket_mode: bool = False) -> str:
    """The Slack app manifest for a bot reachable at ``public_url`` (https)."""
    _https(public_url)
    text = (MANIFESTS / "slack" / "manifest.yml").read_text(encoding="utf-8")
    return Template(text).substitute(
        PUBLIC_URL=public_url.rstrip("/"), SOCKET_MODE="true" if socket_mode else "false"
    )


def teams_manifest(app_id: str, public_url: str, version: str = "1.0.0") -> dict[str, Any]:
    """The Teams app manifest for the bot registered as ``app_id``, serving at ``public_url``."""
    if not _GUID.match(app_id):
        raise ManifestError(
            "--app-id must be the bot's Microsoft app id, a GUID such as "
            "1f2e3d4c-5b6a-4789-8abc-def012345678"
        )
    host = _https(public_url)
    doc: dict[str, Any] = json.loads((MANIFESTS / "teams" / "manifest.json").read_text("utf-8"))
    doc["id"] = app_id.lower()
    doc["version"] = version
    doc["bots"][0]["botId"] = app_id.lower()
    site = public_url.rstrip("/")
    # Both pages are served by `renewbot serve` (adapters/web/legal.py).
    doc["developer"].update(
        websiteUrl=site, privacyUrl=f"{site}/privacy", termsOfUseUrl=f"{site}/terms"
    )
    doc["validDomains"] = [host]
    return doc


def teams_package(app_id: str, public_url: str, version: str = "1.0.0") -> bytes:
    """The zip Teams takes as an app upload: manifest.json and the two icons at its root."""
    manifest = teams_manifest(app_id, public_url, version)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2) + "\n")
        for name in TEAMS_FILES:
            zf.write(MANIFESTS / "teams" / name, name)
    return buf.getvalue()


def write_teams_package(out: str, app_id: str, public_url: str, version: str = "1.0.0") -> None:
    """Build the package and write it to ``out``. Raises ManifestError, naming the problem."""
    package = teams_package(app_id, public_url, version)
    try:
        Path(out).write_bytes(package)
    except OSError as exc:
        raise ManifestError(f"cannot write {out}: {exc.strerror}") from None


def entra(public_url: str) -> dict[str, Any]:
    """The settings of the MSP's app registration in Microsoft Entra, as a fragment of its
    application manifest (Entra admin center > App registrations > Manifest).

    One public client serves both ways: the device code ("Allow public client flows",
    ``isFallbackPublicClient``) and Sign in with Microsoft (the authorization code with PKCE,
    its redirect URI under "Mobile and desktop applications", ``publicClient.redirectUris``, so
    that no client secret is needed: a redirect URI under "Web" would make Entra demand one,
    AADSTS7000218).
    """
    _https(public_url)
    return {
        "signInAudience": "AzureADMultipleOrgs",
        "isFallbackPublicClient": True,
        "publicClient": {"redirectUris": [f"{public_url.rstrip('/')}/onboard/callback"]},
        "web": {"redirectUris": []},
        "spa": {"redirectUris": []},
        # Microsoft Graph's delegated permissions renewbot itself reads (the well-known ids of
        # "Microsoft Graph permissions reference"); add those of your Exchange and SharePoint
        # token sets in the admin center (API permissions), as your platform needs them.
        "requiredResourceAccess": [
            {
                "resourceAppId": GRAPH_APP_ID,
                "resourceAccess": [
                    {"id": USER_READ, "type": "Scope"},
                    {"id": DIRECTORY_READ_ALL, "type": "Scope"},
                    {"id": OFFLINE_ACCESS, "type": "Scope"},
                ],
            }
        ],
    }


GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
USER_READ = "e1fe6dd8-ba31-4d61-89e7-88639da4683d"
DIRECTORY_READ_ALL = "06da0dbc-49e2-44d2-8312-53f166ab848a"
OFFLINE_ACCESS = "7427e0e9-2fba-42fe-b0c0-848c9e6a8182"
