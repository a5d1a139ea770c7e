"""A registered secret never reaches a log line: not from a child logger, not in an exception's
text or traceback, not through a handler added after the secret was registered."""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Iterator

import pytest
from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings

from switchyard.redaction import register_secret


@pytest.fixture
def secret() -> str:
    value = f"s3cr3t-{secrets.token_hex(8)}"
    register_secret(value)
    return value


@pytest.fixture
def root_output() -> Iterator[io.StringIO]:
    """What a handler on the root logger (as Prefect's and a console's are) writes."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield output
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("name", ["switchyard.cloud.azure.clients", "azure.identity._internal", "urllib3.connection"])
def test_a_child_loggers_message_is_redacted(secret: str, root_output: io.StringIO, name: str) -> None:
    logging.getLogger(name).warning("token is %s in %s", secret, "a header")
    written = root_output.getvalue()
    assert "token is *** in a header" in written
    assert secret not in written


def test_an_exceptions_text_and_traceback_are_redacted(secret: str, root_output: io.StringIO) -> None:
    def fail() -> None:
        raise ValueError(f"login with client secret {secret} refused")

    try:
        fail()
    except ValueError:
        logging.getLogger("switchyard.tasks").exception("the login failed")
    written = root_output.getvalue()
    assert "ValueError: login with client secret *** refused" in written
    assert "in fail" in written  # the traceback's place stays: only the value goes
    assert secret not in written


def test_an_exception_whose_constructor_takes_more_than_a_message_is_still_redacted(
    secret: str, root_output: io.StringIO
) -> None:
    class HttpError(Exception):
        def __init__(self, status: int, body: str) -> None:
            super().__init__(f"{status}: {body}")

    # Outside a run Prefect's API handler has nowhere to send it, and would say so as a warning.
    with temporary_settings(updates={PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}):
        try:
            raise HttpError(401, f"bad secret {secret}")
        except HttpError:
            logging.getLogger("prefect.task_runs").exception("call failed")
    written = root_output.getvalue()
    assert "HttpError: 401: bad secret ***" in written
    assert secret not in written
