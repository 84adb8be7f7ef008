"""Secrets out of the messages that are stored (task and job errors) and logged.

`redact` replaces given secrets and anything shaped like a key with `[REDACTED]`,
keeping the prefix that says what kind of key it was (`sk_test_[REDACTED]`,
`Bearer [REDACTED]`). `install_log_redaction` (run when the package is imported)
passes every record of the `supasaasy` loggers through `RedactingFilter`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 8  # shorter given secrets are left alone: they would match ordinary words

_PATTERNS = (
    # Authorization values (RFC 9110 token68); the scheme is kept.
    re.compile(r"\b((?i:bearer)\s+)[A-Za-z0-9._~+/-]{8,}=*"),
    re.compile(r"\b(Basic\s+)[A-Za-z0-9._~+/-]{8,}=*"),
    # JWTs (header.payload.signature), such as Supabase keys.
    re.compile(r"()\beyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    # Stripe secret and restricted keys, webhook secrets; Notion tokens.
    re.compile(r"\b((?:sk|rk)_(?:live|test)_|whsec_|ntn_)[A-Za-z0-9]+"),
    re.compile(r"\b(secret_)[A-Za-z0-9]{20,}"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each of `secrets` (those of 8 characters or more) and every key-shaped
    string replaced by `[REDACTED]`. A recognised key keeps its prefix (`sk_live_`,
    `whsec_`, `ntn_`, `secret_`, `Bearer `, `Basic `); a given secret or a JWT is replaced
    whole. Text without secrets comes back unchanged, and redacting twice changes nothing."""
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len,
                         reverse=True):  # fmt: skip
        text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """Redacts a record's message (formatted with its args), exception text and stack;
    never drops a record. A record left with nothing to redact is not changed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # args that do not fit: logging reports it when the record is written
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if redact(text) != text:
                record.exc_text = redact(text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction() -> None:
    """Pass every record of the `supasaasy` logger and its descendants through
    RedactingFilter as it is made, whichever handlers then write it.

    A filter on the `supasaasy` logger would not do: logger filters apply only to
    records logged on that very logger, not to those of `supasaasy.worker` and the
    others. So the filter runs in the log record factory (chained to the one in place),
    which sees every record of every logger; others' records are left untouched."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return
    redacting = RedactingFilter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name == "supasaasy" or record.name.startswith("supasaasy."):
            redacting.filter(record)
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
