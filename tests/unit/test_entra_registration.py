"""`renewbot manifests entra`: the redirect URI to register is the one the bot sends."""

from __future__ import annotations

import pytest

from bot import manifests
from tests.unit.conftest import World


def test_registered_redirect_uri_is_the_one_the_bot_sends(world: World) -> None:
    """A mismatch here is AADSTS50011 for every customer: the two must never drift apart."""
    doc = manifests.entra("https://bot.test")
    assert doc["publicClient"]["redirectUris"] == [world.service.callback_url]
    assert doc["isFallbackPublicClient"] is True  # the device code fallback needs it
    assert doc["web"]["redirectUris"] == []  # a Web redirect URI would demand a secret


def test_entra_settings_need_an_https_url() -> None:
    """Entra accepts http redirect URIs only for localhost; we ask for https."""
    with pytest.raises(manifests.ManifestError):
        manifests.entra("http://bot.test")
