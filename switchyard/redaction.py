"""Secrets never reach logs: a logging filter that replaces every secret switchyard loaded with ***.

Prefect does not redact secrets from logs. Every secret switchyard loads (a service principal's
secret, the emulator's token) is registered here; the filter sits on the handlers (so records of
every logger, child loggers included, pass through it) and rewrites the message and the text of an
attached exception before anything is written or shipped to the Prefect API.
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


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
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
        return True


_filter = RedactSecrets()


def _install() -> None:
    """On every handler that exists now (the root's and Prefect's, which carry every child logger's
    records) and on the loggers switchyard writes to, for handlers added to them later."""
    loggers = [logging.getLogger(name) for name in ("", "prefect", "switchyard", "azure")]
    for logger in loggers:
        if _filter not in logger.filters:
            logger.addFilter(_filter)
        for handler in logger.handlers:
            if _filter not in handler.filters:
                handler.addFilter(_filter)
    for known in logging.Logger.manager.loggerDict.values():
        if isinstance(known, logging.Logger):
            for handler in known.handlers:
                if _filter not in handler.filters:
                    handler.addFilter(_filter)


def register_secret(secret: str | None) -> None:
    """From now on, `secret` is written as *** in every log record of this process."""
    if not secret:
        return
    with _lock:
        _secrets.add(secret)
    _install()
