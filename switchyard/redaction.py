"""Secrets never reach logs: every secret switchyard loaded is written as ***.

Prefect does not redact secrets from logs. Every secret switchyard loads (a service principal's
secret, the emulator's token) is registered here; from then on every log record is rewritten as it
is made (its message and the text of an attached exception), before any handler writes it or ships
it to the Prefect API.
"""

from __future__ import annotations

import logging
import threading

_secrets: set[str] = set()
_lock = threading.Lock()


def redact(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


def _redact_record(record: logging.LogRecord) -> None:
    message = record.getMessage()
    redacted = redact(message)
    if redacted != message:
        record.msg, record.args = redacted, None
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        text = str(error)
        if redact(text) != text:
            # The traceback would print the secret: keep the type and the place, not the value.
            try:
                replacement = type(error)(redact(text))
            except Exception:  # a constructor that takes more than a message
                replacement = RuntimeError(f"{type(error).__name__}: {redact(text)}")
            record.exc_info = (type(replacement), replacement, record.exc_info[2])
        record.exc_text = None
    if record.exc_text:
        record.exc_text = redact(record.exc_text)


_installed = False


def _install() -> None:
    """Redact where records are made (the log record factory), not where they are written: every
    logger, child loggers included, and every handler, including those added later (Prefect adds
    its API handler when a run starts), see the redacted record."""
    global _installed
    if _installed:
        return
    made = logging.getLogRecordFactory()

    def redacting_factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = made(*args, **kwargs)  # type: ignore[arg-type]
        if _secrets:
            _redact_record(record)
        return record

    logging.setLogRecordFactory(redacting_factory)
    _installed = True


def register_secret(secret: str | None) -> None:
    """From now on, `secret` is written as *** in every log record of this process."""
    if not secret:
        return
    with _lock:
        _secrets.add(secret)
        _install()
