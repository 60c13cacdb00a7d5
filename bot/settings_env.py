"""How settings are read from the environment and how a bad one is told to the operator.

- ``SecretFiles``: a pydantic-settings source that gives every secret (each ``SecretStr`` field,
  in any group, present or added later) a ``*_FILE`` variant: ``RENEWBOT_SLACK__BOT_TOKEN_FILE=
  /run/secrets/slack_bot_token`` reads the value from that file (Docker and Kubernetes secrets).
- ``describe``: one line per bad setting, naming the variable and what to do; never its value.

Imports nothing of bot.settings (which imports this module), and must never print or log a
setting's value: pydantic's error ``input`` is dropped, file contents are never echoed.
"""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

PREFIX = "RENEWBOT_"
DELIMITER = "__"


class SettingsError(ValueError):
    """Settings that cannot be used; ``problems`` holds one line per variable, no values."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _holds(annotation: Any, kind: type) -> bool:
    """True when ``annotation`` is ``kind`` or a union with it (``SecretStr | None``)."""
    if annotation is kind:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_holds(arg, kind) for arg in typing.get_args(annotation))
    return False


def _is_complex(annotation: Any) -> bool:
    """Fields pydantic-settings reads as JSON (dicts, lists)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_complex(a) for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) in (dict, list, set, tuple) or bool(_model_of(annotation))


def fields(
    model: type[BaseModel], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """Every leaf setting of ``model`` with its path (groups are walked, not listed)."""
    for name, info in model.model_fields.items():
        group = _model_of(info.annotation)
        if group is not None:
            yield from fields(group, (*path, name))
        else:
            yield (*path, name), info


def variable(path: tuple[str, ...]) -> str:
    """``("web", "port")`` -> ``RENEWBOT_WEB__PORT``."""
    return PREFIX + DELIMITER.join(part.upper() for part in path)


def _environ() -> dict[str, str]:
    return {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(PREFIX)}


def is_secret(info: FieldInfo) -> bool:
    """SecretStr settings, and plain ones marked ``json_schema_extra={"secret": True}`` (a
    database URL holds a password but is a str for SQLAlchemy)."""
    extra = info.json_schema_extra
    return _holds(info.annotation, SecretStr) or (
        isinstance(extra, dict) and bool(extra.get("secret"))
    )


class SecretFiles(PydanticBaseSettingsSource):
    """``RENEWBOT_<GROUP>__<SECRET>_FILE``: the secret's value read from a mounted file.

    Trailing whitespace (the newline most editors and ``echo`` add) is dropped; an empty file
    counts as unset. Setting both the variable and its ``_FILE`` variant is refused, as is a file
    that cannot be read.
    """

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ builds the whole nested dict at once

    def __call__(self) -> dict[str, Any]:
        env = _environ()
        found: dict[str, Any] = {}
        problems = []
        for path, info in fields(self.settings_cls):
            if not is_secret(info):
                continue
            name = variable(path)
            file_var = name + "_FILE"
            where = env.get(file_var, "").strip()
            if not where:
                continue
            if env.get(name, "").strip():
                problems.append(f"{name} and {file_var} are both set: keep only one of them")
                continue
            try:
                value = Path(where).read_text(encoding="utf-8").rstrip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                problems.append(f"{file_var} names {where}, which cannot be read ({reason})")
                continue
            if not value:  # an empty mounted file: as if unset (compose needs every file)
                continue
            node = found
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        if problems:
            raise SettingsError(problems)
        return found


_PLAIN = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "missing": "is required",
    "dict_type": 'must be a JSON object, e.g. {"graph": ["https://graph.microsoft.com/.default"]}',
    "list_type": 'must be a JSON list, e.g. ["U123", "U456"]',
}


def describe(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per bad setting of ``model``, naming its variable and never its value."""
    known = {p for p, _ in fields(model)}
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        path = tuple(str(p) for p in error["loc"])
        # a dict or list setting's inner position (("identity", "token_sets", "graph", 0)) is
        # one variable: cut the path at the deepest field the model knows
        while len(path) > 1 and path not in known:
            path = path[:-1]
        said = _PLAIN.get(error["type"]) or str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{variable(path)} is invalid: {said}")
    return lines


def unparsable_json(
    settings_cls: type[BaseModel], env: Mapping[str, str] | None = None
) -> list[str]:
    """The JSON settings (dicts, lists) set to text that is not JSON, one line each.

    pydantic-settings reports these as "error parsing value for field <group>", which names
    neither the variable nor the problem.
    """
    env = _environ() if env is None else env
    lines = []
    for path, info in fields(settings_cls):
        name = variable(path)
        raw = env.get(name)
        if raw is None or not _is_complex(info.annotation):
            continue
        try:
            json.loads(raw)
        except json.JSONDecodeError as exc:
            shape = '["a", "b"]' if typing.get_origin(info.annotation) is list else '{"a": ["b"]}'
            lines.append(
                f"{name} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                f"write it like {shape}"
            )
    return lines
