"""What a person sees on the terminal while switchyard runs flows in this process."""

from __future__ import annotations

import logging


class _WithoutTraceback(logging.Formatter):
    """Formats like the formatter it wraps, minus the traceback. The record itself is left as it is:
    the same record also reaches Prefect's API log handler, which must keep the traceback."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_console_tracebacks() -> None:
    """Prefect prints a failed run's traceback on the console; the outcome line says what happened,
    and the run's logs in the Prefect UI keep the traceback."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, _WithoutTraceback):
                handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))
