"""Renders the chat platforms' app manifests from the templates in manifests/ (no secrets)."""

from __future__ import annotations

from pathlib import Path
from string import Template
from urllib.parse import urlsplit

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


class ManifestError(ValueError):
    """Bad input for a manifest (named, never a secret)."""


def slack(public_url: str, socket_mode: bool = False) -> str:
    """The Slack app manifest for a bot reachable at ``public_url`` (https)."""
    parts = urlsplit(public_url)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise ManifestError("--public-url must be an https:// URL such as https://bot.example.com")
    text = (MANIFESTS / "slack" / "manifest.yml").read_text(encoding="utf-8")
    return Template(text).substitute(
        PUBLIC_URL=public_url.rstrip("/"), SOCKET_MODE="true" if socket_mode else "false"
    )
