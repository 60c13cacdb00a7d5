"""A slash command's form body reads as the standard library reads it, hostile bodies too."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest

from adapters.slack.app import form_fields

BODIES = [
    urlencode({"command": "/renew-token", "text": "contoso & co = 100% +1", "user_id": "U1"}),
    "text=renew+contoso&text=status",  # repeated: the last one
    "text=&user_id=U1&channel_id",  # empty, and no value at all
    "text=%E2%9C%93+ok&user_name=J%C3%B6rg",  # UTF-8 escapes
    "text=%zz%4&bad%=x",  # broken escapes stay as typed
    "text=a=b=c&&&=orphan&",  # '=' in a value, empty pairs, a value without a name
    "",
    "text=%00%0a%0d",  # control characters
]


@pytest.mark.parametrize("body", BODIES)
def test_a_form_body_reads_as_parse_qsl_reads_it(body: str) -> None:
    raw = body.encode()
    assert form_fields(raw) == dict(parse_qsl(raw.decode("utf-8", "replace")))


def test_a_body_that_is_not_utf8_reads_as_parse_qsl_reads_it() -> None:
    raw = b"text=\xff\xfe+renew&user_id=U1"
    assert form_fields(raw) == dict(parse_qsl(raw.decode("utf-8", "replace")))
