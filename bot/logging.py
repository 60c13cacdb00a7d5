"""structlog configuration, once per process, with secret redaction on every logger.

Two layers, so that no library can write a secret whatever it logs and at whatever level:
- every ``LogRecord`` is redacted when it is created (``logging.setLogRecordFactory``): its message
  is formatted and masked before any handler, ours or a library's, sees it. This is what stops
  msal's ``msal.token_cache`` (whole token requests, device code included, at DEBUG),
  sqlalchemy's row echo, slack_sdk's request bodies and msrest's request dumps;
- ``redact_secrets`` runs in the structlog chain and in the ProcessorFormatter, on our own events,
  their ``extra`` fields and formatted tracebacks.
Masking is by key (``SECRET_KEYS``, in dicts and in text: JSON, reprs, form bodies, headers) and by
value shape (``_SHAPES``). It must not log anything itself, and it never raises for a bad record.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import sys
import threading
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

import structlog

from core import logcontext

SECRET_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "device_code",
        "code",  # an authorization code
        "code_verifier",
        "client_secret",
        "client_assertion",
        "assertion",
        "app_password",
        "signing_secret",
        "bot_token",
        "app_token",
        "password",
        "authorization",
        "token_cache",
        "ciphertext",
        "flow_state",
        "encryption_keys",
        "api_keys",
        "csrf",
        "token",
    }
)
MASK = "[redacted]"
_KEYS = "|".join(sorted((re.escape(k) for k in SECRET_KEYS), key=len, reverse=True))
# A secret key and its value inside text: JSON and reprs ("device_code": "..."), then form
# bodies, query strings, headers and key=value renderings (device_code=...&).
_QUOTED_KEY = re.compile(
    rf"""(?i)(["']?(?<![\w.-])(?:{_KEYS})["']?\s*[:=]\s*)(["'])((?:\\.|(?!\2).)*)\2"""
)
# Searched in the lowercased text first (no IGNORECASE, so the engine skips ahead cheaply).
_KEY_HINT = re.compile(rf"""(?:{_KEYS})["']?\s*[:=]""")
_BARE_KEY = re.compile(rf"(?i)((?<![\w.-])(?:{_KEYS})\s*[:=]\s*)(?![\"'\s\[])([^\s&\"',;}})\]]+)")
# Value shapes, whatever key (or none) they come with. Entra's own formats: access and ID tokens
# are JWTs; refresh tokens, authorization codes and device codes are opaque strings ("Token
# response" and "Device authorization response" in Microsoft's identity platform docs,
# learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow and v2-oauth2-device-code).
# What Entra issues today: refresh tokens and authorization codes start "0.A" / "1.A" (version,
# then base64url with dots and dashes); the docs' older examples and device codes are ESTS blobs
# starting "AwABAAAA", "OAAABAAAA", "AQABAAIAAAA", "DAQABAAEAAAA". The last shape is a backstop for
# any other long random credential (mixed case and digits, 40+ characters, e.g. a Fernet key).
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_SHAPES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"\bxox[a-z]-[A-Za-z0-9-]+|\bxapp-[A-Za-z0-9-]+"), MASK),
    (re.compile(r"(?<![\w.-])[0-9]\.A[A-Za-z0-9_.*~+/=-]{30,}"), MASK),  # Entra RT, auth code
    (re.compile(r"(?<![\w-])[A-Za-z0-9]{0,2}A[A-Za-z]?ABAA[A-Za-z0-9_-]{30,}"), MASK),  # ESTS
    (re.compile(r"gAAAAA[A-Za-z0-9_-]{20,}=*"), MASK),  # Fernet token (a sealed token cache)
    (re.compile(r"(/onboard/)(?!callback\b)[A-Za-z0-9_-]{16,}"), rf"\1{MASK}"),  # Auth URL
    (re.compile(r"\bsbx-(?:at|rt)\.[A-Za-z0-9_-]+"), MASK),  # the sandbox's older token shape
    (
        re.compile(
            r"(?<![\w-])(?=[\w-]*[A-Z])(?=[\w-]*[a-z])(?=[\w-]*[0-9])[A-Za-z0-9_-]{40,}={0,2}"
        ),
        MASK,
    ),
]


# Shapes are tried only on long runs without spaces, quotes or brackets: log lines are mostly
# short words, and one pass of a plain character class is cheap (a 240-character slack_sdk line:
# about 20 us instead of 70 us with every pattern run over the whole line).
_RUN = re.compile(r"[^\s\"'`,;(){}\[\]<>|\\]{16,}")


def _mask_run(match: re.Match[str]) -> str:
    run = match.group(0)
    for pattern, replacement in _SHAPES:
        run = pattern.sub(replacement, run)
    return run


def redact_text(text: str) -> str:
    """``text`` with every secret shape and every value of a secret key masked."""
    if text in _CLEAN:
        return text
    lower = text.lower()
    masked = text
    if "bearer" in lower or "basic" in lower:
        masked = _BEARER.sub(rf"\1 {MASK}", masked)
    masked = _RUN.sub(_mask_run, masked)
    if _KEY_HINT.search(lower):
        masked = _QUOTED_KEY.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}{m.group(2)}", masked)
        masked = _BARE_KEY.sub(lambda m: m.group(1) + MASK, masked)
    if masked == text and len(text) <= CLEAN_LENGTH:
        if len(_CLEAN) >= CLEAN_KEPT:
            _CLEAN.clear()
        _CLEAN.add(text)
    return masked


# Short texts found to hold nothing to mask (event names, logger names, ids): a line's fields
# repeat from line to line, and each was tried on every shape each time (about a third of a
# line's cost). Only what redaction left unchanged is kept, so no masked value is; bounded.
_CLEAN: set[str] = set()
CLEAN_LENGTH, CLEAN_KEPT = 200, 4096


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {k: MASK if str(k).lower() in SECRET_KEYS else _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return [_scrub(v) for v in value]
    return value


# Set by the processors themselves from what the code says (the method, the logger's name, the
# clock), over any value given with the same key: nothing to mask, and the timestamp is a run
# of 27 characters that every shape would be tried on.
_OURS = frozenset({"_record", "timestamp", "level", "logger"})


def redact_secrets(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret keys and secret-shaped values, recursively."""
    for key in list(event_dict):
        if key in _OURS:
            continue
        if key.lower() in SECRET_KEYS:
            event_dict[key] = MASK
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Format the record's message now and mask it; a dict message (structlog's) stays a dict."""
    if isinstance(record.msg, dict):
        record.msg = _scrub(record.msg)
        return record
    try:
        text = record.getMessage()
    except Exception:  # a bad format string must not lose the record, nor leak its arguments
        text = f"{record.msg!r} (unformattable arguments: {record.args!r})"
    record.msg = redact_text(text)
    record.args = ()
    return record


_Factory = Callable[..., logging.LogRecord]


class _RedactingFactory:
    def __init__(self, base: _Factory) -> None:
        self.base = base

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(self.base(*args, **kwargs))


def install_record_redaction() -> None:
    """Mask every LogRecord at creation, for every logger and handler (idempotent)."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(current))


def merge_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The ids an entry point bound (core.logcontext): request, platform, tenant, renewal."""
    for key, value in logcontext.current().items():
        event_dict.setdefault(key, value)
    return event_dict


def stamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``timestamp``: when the line was logged, ISO 8601 in UTC (a record's own time: the
    handler may write it a moment later)."""
    record = event_dict.get("_record")
    at = datetime.fromtimestamp(record.created, UTC) if record is not None else datetime.now(UTC)
    event_dict["timestamp"] = at.isoformat().replace("+00:00", "Z")
    return event_dict


def _extra_to_event(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    record = event_dict.get("_record")
    if record is not None:
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                event_dict.setdefault(key, value)
    return event_dict


_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# Chatty below WARNING: SQL statements and rows, MSAL's cache events, connection pools. At DEBUG
# they speak too (everything they say is redacted); at INFO and above they only warn. Set
# explicitly both ways: sqlalchemy sets its own logger to WARNING when imported.
NOISY = ("msal", "urllib3", "aiohttp.access", "sqlalchemy", "asyncio", "aiosqlite", "asyncpg")
# slack_sdk decides whether to build a request's debug text from the `level` of these very
# loggers (`logger.level <= DEBUG`), not their effective level: left NOTSET (0), it formatted a
# debug line of every Web API call and response_url post at INFO and threw it away.
SLACK_SDK = (
    "slack_sdk.web.async_base_client",
    "slack_sdk.web.base_client",
    "slack_sdk.webhook.async_client",
    "slack_sdk.webhook.client",
    "slack_sdk.webhook.internal_utils",
)


class DeferredHandler(logging.Handler):
    """A stream handler that writes a record when the event loop next waits, not in the middle
    of the work that logged it.

    Formatting a JSON line (the redacting chain, the renderer) and writing it cost 0.1-0.2 ms,
    and a renewal logs twice before its thread is posted; written when the loop is about to wait
    for the database or Slack anyway, they cost that wait nothing (bench/wrk.py, first post).
    A record is formatted in the context it was logged in (its bound ids), and the records of one
    turn of the loop go out in one write. Written at once, after any pending: a WARNING or worse,
    and anything logged off the loop (a worker thread, before the loop starts). ``flush`` (and so
    ``logging.shutdown`` at exit) writes whatever is pending.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._pending: list[tuple[logging.LogRecord, contextvars.Context | None]] = []
        self._scheduled: asyncio.AbstractEventLoop | None = None  # where a flush is due
        self._flushing = False

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or record.levelno >= logging.WARNING or len(self._pending) >= MAX_PENDING:
            self._pending.append((record, None))
            self.flush()
            return
        if self._scheduled is not loop:  # (a loop that closed before its turn came: this one)
            loop.call_soon(self.flush)
            self._scheduled = loop
        self._pending.append((record, contextvars.copy_context()))

    def flush(self) -> None:
        self.acquire()
        try:
            if self._flushing:  # logged while formatting: written by the flush under way
                return
            self._flushing = True
            try:
                while self._pending:
                    pending, self._pending, self._scheduled = self._pending, [], None
                    self._write(pending)
            finally:
                self._flushing = False
        finally:
            self.release()

    def _write(self, pending: list[tuple[logging.LogRecord, contextvars.Context | None]]) -> None:
        lines = []
        for record, context in pending:
            try:
                lines.append(context.run(self.format, record) if context else self.format(record))
            except Exception:
                self.handleError(record)
        if not lines:
            return
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except Exception:
            self.handleError(pending[-1][0])


MAX_PENDING = 256
"""Lines a turn of the loop may leave to be written; beyond, each is written at once."""


def configure(
    *, json: bool = False, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Configure structlog and the root logger: one handler, redacted, at ``level``."""
    install_record_redaction()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        merge_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        stamp,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            redact_secrets,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _extra_to_event],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets,  # once, after the traceback became text: it covers every key
            renderer,
        ],
    )
    handler = DeferredHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(
            logging.DEBUG if level <= logging.DEBUG else max(level, logging.WARNING)
        )
    for name in SLACK_SDK:
        logging.getLogger(name).setLevel(level)


def lean_records() -> None:
    """No record looks up where in the source it was logged from, nor its thread or process:
    no line shows them (the logging HOWTO's "Optimization" switches; a record walked the stack
    for its caller). Process-wide, so for processes, not for tests (pytest shows them)."""
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def log_uncaught() -> None:
    """Uncaught exceptions (main thread and others) go through the redacting log, not bare
    stderr: an exception message can carry a token. For processes, not for tests."""
    crash = logging.getLogger("renewbot.crash")

    def main_hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        crash.critical("process.uncaught_exception", exc_info=(kind, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            crash.error(
                "thread.uncaught_exception",
                exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
                extra={"thread_name": args.thread.name if args.thread else None},
            )

    sys.excepthook = main_hook
    threading.excepthook = thread_hook
