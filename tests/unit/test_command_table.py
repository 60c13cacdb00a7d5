"""The one table of commands: each verb's help line, permission and parser come from one entry."""

from __future__ import annotations

import pytest

from core import commands, messages
from core.access import Permission, permission_for
from core.model import Actor, Origin

WHO = Actor("test", "U1", "Sam")
HERE = Origin("test", "C1")
EXAMPLES = {
    "": "contoso",
    "renew all-expired": "renew all-expired",
    "code": "code contoso",
    "resend": "resend contoso",
    "cancel": "cancel contoso",
    "validate": "validate contoso",
    "show": "show contoso",
    "pending": "pending",
    "tenants": "tenants expired",
    "status": "status",
    "history": "history contoso",
    "errors": "errors",
    "snooze": "snooze contoso 2d",
    "help": "help",
}


def test_every_verb_has_an_example_here() -> None:
    assert set(EXAMPLES) == set(commands.VERBS)


@pytest.mark.parametrize("verb", list(EXAMPLES))
def test_a_verb_reads_as_its_command_with_its_permission_and_help(verb: str) -> None:
    """What the table declares is what parse, access and help do."""
    entry = commands.VERBS[verb]
    cmd = commands.parse(EXAMPLES[verb], HERE, WHO)
    assert isinstance(cmd, entry.command)
    wanted = Permission.OPERATE if entry.operates else Permission.READ
    assert permission_for(cmd) is wanted
    assert f"renew-token {entry.usage}" in messages.HELP and entry.help in messages.HELP
