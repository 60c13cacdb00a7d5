"""The Slack app manifest renders to valid YAML pointing at the bot's public URL."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import jsonschema
import pytest
import yaml

from bot import manifests
from tests.conftest import need


def test_slack_manifest_points_commands_and_buttons_at_the_bot() -> None:
    """Slash command and interactivity both go to /slack/events; scopes are the ones we use."""
    doc = yaml.safe_load(manifests.slack("https://bot.example.com/"))
    (command,) = doc["features"]["slash_commands"]
    assert command["command"] == "/renew-token"
    assert command["url"] == "https://bot.example.com/slack/events"
    assert doc["settings"]["interactivity"]["request_url"] == "https://bot.example.com/slack/events"
    scopes = doc["oauth_config"]["scopes"]["bot"]
    assert len(scopes) == len(set(scopes))  # each asked for once
    assert set(scopes) == {
        "commands",
        "chat:write",
        "chat:write.public",
        "usergroups:read",
        "channels:history",  # the delivery check (conversations.history / .replies)
        "groups:history",
    }
    assert doc["settings"]["socket_mode_enabled"] is False
    assert len(doc["display_information"]["long_description"]) >= 175


def test_socket_mode_variant() -> None:
    """Socket Mode is a flag of the same manifest."""
    doc = yaml.safe_load(manifests.slack("https://bot.example.com", socket_mode=True))
    assert doc["settings"]["socket_mode_enabled"] is True


@pytest.mark.parametrize("url", ["http://bot.example.com", "bot.example.com", "https://", ""])
def test_public_url_must_be_https(url: str) -> None:
    """Slack only calls https endpoints; a wrong URL is refused in words."""
    with pytest.raises(manifests.ManifestError):
        manifests.slack(url)


APP_ID = "1f2e3d4c-5b6a-4789-8abc-def012345678"
SCHEMAS = Path(__file__).resolve().parents[1] / "node" / "node_modules" / "@microsoft"
SCHEMA = SCHEMAS / "app-manifest" / "build" / "json-schemas" / "teams"


def _package() -> dict[str, bytes]:
    data = manifests.teams_package(APP_ID, "https://bot.example.com/")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_teams_package_validates_against_the_manifest_schema() -> None:
    """The uploaded manifest passes Microsoft's JSON schema for the version it declares."""
    files = _package()
    assert set(files) == {"manifest.json", "color.png", "outline.png"}
    doc = json.loads(files["manifest.json"])
    schema_file = SCHEMA / f"v{doc['manifestVersion']}" / "MicrosoftTeams.schema.json"
    need(None if schema_file.exists() else "run `make test` to install tests/node (npm ci)")
    schema = json.loads(schema_file.read_text("utf-8"))
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(doc), key=str)
    assert errors == [], [e.message for e in errors]
    assert doc["$schema"].endswith(f"/v{doc['manifestVersion']}/MicrosoftTeams.schema.json")


def test_teams_bot_has_every_scope_and_the_commands() -> None:
    """The bot works in teams, group chats and 1:1, and its command menu lists renew-token."""
    doc = json.loads(_package()["manifest.json"])
    (bot,) = doc["bots"]
    assert bot["botId"] == doc["id"] == APP_ID
    assert set(bot["scopes"]) == {"team", "personal", "groupChat"}
    titles = [c["title"] for c in bot["commandLists"][0]["commands"]]
    assert titles[0] == "renew-token" and "renew-token status" in titles
    assert doc["validDomains"] == ["bot.example.com"]
    assert doc["developer"]["privacyUrl"] == "https://bot.example.com/privacy"
    assert doc["developer"]["termsOfUseUrl"] == "https://bot.example.com/terms"


def test_teams_icons_have_the_sizes_teams_requires() -> None:
    """color.png is 192x192; outline.png is 32x32, white on a transparent background."""
    files = _package()
    width, height, color = png_pixels(files["color.png"])
    assert (width, height) == (192, 192)
    assert all(p[3] == 255 for p in color)  # full colour, opaque
    width, height, outline = png_pixels(files["outline.png"])
    assert (width, height) == (32, 32)
    assert all(p[3] == 0 or p[:3] == (255, 255, 255) for p in outline)
    assert any(p[3] == 0 for p in outline) and any(p[3] == 255 for p in outline)


@pytest.mark.parametrize(
    ("app_id", "url"),
    [("not-a-guid", "https://bot.example.com"), (APP_ID, "http://bot.example.com")],
)
def test_teams_package_refuses_bad_input(app_id: str, url: str) -> None:
    """A wrong app id or a non-https URL is refused in words, before anything is written."""
    with pytest.raises(manifests.ManifestError):
        manifests.teams_package(app_id, url)


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Decode an 8-bit RGBA, non-interlaced PNG (what Teams icons are) into pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    idat = b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IDAT":
            idat += body
        chunks[kind] = body
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour_type, interlace) == (8, 6, 0), "expected 8-bit RGBA"
    raw, stride, rows = zlib.decompress(idat), width * 4, []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - 4] if i >= 4 else 0
            b, c = prev[i], prev[i - 4] if i >= 4 else 0
            predictor = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
            line[i] = (line[i] + predictor) & 0xFF
        rows.append(line)
        prev = line
    pixels = [tuple(r[i : i + 4]) for r in rows for i in range(0, stride, 4)]
    return width, height, pixels


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)
