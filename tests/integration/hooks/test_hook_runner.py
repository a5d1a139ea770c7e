"""Release hooks run for real: small Python scripts as commands (their own process groups, killed
whole on a timeout) and a real HTTP server on localhost for HTTP hooks."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypedDict

import pytest

from switchyard.core.hooks import CommandHook, HttpHook
from switchyard.redaction import register_secret
from switchyard.stack.processes import proc_stat
from tasks.hooks import run_command_hook, run_hook, run_http_hook

V2 = "1001000.20261100.1"


class Release(TypedDict):
    """What run_hook is told about the release (a TypedDict, so ** fills exactly these arguments)."""

    service: str
    environment: str
    image_version: str


RELEASE = Release(service="shop", environment="production", image_version=V2)


def script(directory: Path, body: str) -> Path:
    path = directory / "hook.py"
    path.write_text(textwrap.dedent(body))
    return path


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat.state not in ("Z", "X")


def wait_for_file(path: Path, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} was never written")


# Commands -----------------------------------------------------------------------------------------


def test_a_command_that_succeeds_sees_the_release_in_its_environment(tmp_path: Path) -> None:
    hook_script = script(
        tmp_path,
        """
        import json, os, sys
        keys = ["SWITCHYARD_SERVICE", "SWITCHYARD_ENVIRONMENT", "SWITCHYARD_IMAGE_VERSION", "SWITCHYARD_HOOK"]
        print(json.dumps({k: os.environ[k] for k in keys} | {"cwd": os.getcwd(), "inherited": os.environ["INHERITED"]}))
        print("migration 0042 applied", file=sys.stderr)
        """,
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    hook = CommandHook(command=[sys.executable, str(hook_script)], working_dir="work")
    result = run_hook(
        hook, "pre_deploy", **RELEASE, base_env={**os.environ, "INHERITED": "from the worker"}, root=tmp_path
    )
    assert result.passed and result.exit_code == 0 and not result.timed_out
    assert result.detail.startswith("exit code 0 after ")
    assert json.loads(result.stdout_tail) == {
        "SWITCHYARD_SERVICE": "shop",
        "SWITCHYARD_ENVIRONMENT": "production",
        "SWITCHYARD_IMAGE_VERSION": V2,
        "SWITCHYARD_HOOK": "pre_deploy",
        "cwd": str(workdir),
        "inherited": "from the worker",
    }
    assert result.stderr_tail == "migration 0042 applied"


def test_a_command_that_exits_non_zero_fails_with_its_code_and_output(tmp_path: Path) -> None:
    hook_script = script(
        tmp_path,
        """
        import sys
        print("expanding schema")
        print("ERROR: relation orders_v2 already exists with another type", file=sys.stderr)
        sys.exit(3)
        """,
    )
    result = run_command_hook(
        CommandHook(command=[sys.executable, str(hook_script)]), "pre_deploy", dict(os.environ), root=tmp_path
    )
    assert not result.passed and result.exit_code == 3 and not result.timed_out
    assert result.detail.startswith("exit code 3 after ")
    assert result.stdout_tail == "expanding schema"
    assert "already exists" in result.stderr_tail


def test_a_timeout_stops_the_whole_process_group_children_included(tmp_path: Path) -> None:
    """The hook starts a child that ignores SIGTERM, then hangs: both must be gone when it returns."""
    pids = tmp_path / "pids"
    hook_script = script(
        tmp_path,
        f"""
        import os, signal, subprocess, sys, time
        stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        child = subprocess.Popen([sys.executable, "-c", stubborn])
        with open({str(pids)!r}, "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        print("waiting for a lock that never comes", flush=True)
        time.sleep(600)
        """,
    )
    hook = CommandHook(command=[sys.executable, str(hook_script)], timeout_s=1.5)
    started = time.monotonic()
    result = run_command_hook(hook, "pre_deploy", dict(os.environ), root=tmp_path, grace_s=0.5)
    elapsed = time.monotonic() - started
    leader, child = (int(pid) for pid in wait_for_file(pids).split())
    assert not result.passed and result.timed_out and result.exit_code is None
    assert result.detail == "timed out after 1.5 s; its process group was stopped"
    assert result.stdout_tail == "waiting for a lock that never comes"
    assert elapsed < 1.5 + 0.5 + 5  # the timeout, the grace, and a margin for a busy machine
    assert not alive(leader), "the hook's process outlived its timeout"
    assert not alive(child), "a child the hook started (ignoring SIGTERM) outlived the timeout"


def test_what_a_successful_command_leaves_running_is_stopped_with_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    hook_script = script(
        tmp_path,
        f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        """,
    )
    result = run_command_hook(
        CommandHook(command=[sys.executable, str(hook_script)]), "post_promote", dict(os.environ), root=tmp_path
    )
    assert result.passed
    assert not alive(int(wait_for_file(pid_file)))


def test_a_command_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    hook_script = script(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    result = run_command_hook(
        CommandHook(command=[sys.executable, str(hook_script)]), "pre_deploy", dict(os.environ), root=tmp_path
    )
    assert not result.passed and result.exit_code == -signal.SIGKILL
    assert result.detail == f"killed by signal {int(signal.SIGKILL)}"


def test_a_missing_program_or_working_directory_is_a_failed_hook_not_a_crash(tmp_path: Path) -> None:
    missing = run_command_hook(
        CommandHook(command=["switchyard-no-such-program"]), "pre_deploy", dict(os.environ), root=tmp_path
    )
    assert not missing.passed and "could not start 'switchyard-no-such-program'" in missing.detail
    nowhere = run_command_hook(
        CommandHook(command=[sys.executable, "-V"], working_dir="nowhere"), "pre_deploy", {}, root=tmp_path
    )
    assert (
        not nowhere.passed
        and nowhere.detail == f"working directory {tmp_path / 'nowhere'} does not exist on this worker"
    )


def test_only_the_end_of_a_long_output_is_kept(tmp_path: Path) -> None:
    hook_script = script(tmp_path, "for i in range(200_000):\n    print(f'line {i}')\n")
    result = run_command_hook(
        CommandHook(command=[sys.executable, str(hook_script)]), "pre_deploy", dict(os.environ), root=tmp_path
    )
    assert result.passed
    assert result.stdout_tail.startswith("[... earlier output not shown]\n")
    assert result.stdout_tail.endswith("line 199999")
    assert len(result.stdout_tail) < 4100


def test_secrets_never_leave_in_the_output(tmp_path: Path) -> None:
    """The worker's secret-named variables and every secret switchyard loaded are masked."""
    register_secret("emulator-token-for-hooks-test")
    hook_script = script(
        tmp_path,
        """
        import os
        print("connecting with", os.environ["DATABASE_PASSWORD"], "and", "emulator-token-for-hooks-test")
        """,
    )
    result = run_hook(
        CommandHook(command=[sys.executable, str(hook_script)]),
        "pre_deploy",
        **RELEASE,
        base_env={**os.environ, "DATABASE_PASSWORD": "correct-horse-battery"},
        root=tmp_path,
    )
    assert result.stdout_tail == "connecting with *** and ***"


# HTTP ---------------------------------------------------------------------------------------------


class Migrations:
    """What the local migration service answers, and what it was asked."""

    def __init__(self, status: int = 200, body: str = "ok", delay_s: float = 0.0) -> None:
        self.status, self.body, self.delay_s = status, body, delay_s
        self.requests: list[tuple[str, str, dict[str, object] | None]] = []


@contextmanager
def migrations_server(migrations: Migrations) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length)) if length else None
            migrations.requests.append((self.command, self.path, payload))
            time.sleep(migrations.delay_s)
            body = migrations.body.encode()
            try:
                self.send_response(migrations.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except BrokenPipeError:
                pass  # the hook gave up waiting (the timeout test): nobody reads the answer

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_hook_that_answers_the_expected_status_passes_and_is_told_the_release() -> None:
    migrations = Migrations(status=204, body="")
    with migrations_server(migrations) as url:
        hook = HttpHook(url=f"{url}/contract", expect_status=204)
        result = run_hook(hook, "post_promote", service="shop", environment="production", image_version=V2)
    assert result.passed and result.status_code == 204 and result.detail.startswith("HTTP 204 after ")
    assert migrations.requests == [("POST", "/contract", {**RELEASE, "hook": "post_promote"})]


def test_an_http_hook_with_another_status_fails_with_the_response() -> None:
    migrations = Migrations(status=500, body='{"error": "lock timeout on table orders"}')
    with migrations_server(migrations) as url:
        result = run_http_hook(HttpHook(url=f"{url}/expand", method="PUT"), "pre_deploy", {"hook": "pre_deploy"})
    assert not result.passed and result.status_code == 500
    assert result.detail.startswith("HTTP 500, expected 200 after ")
    assert "lock timeout" in result.stdout_tail


def test_a_get_hook_sends_no_body() -> None:
    migrations = Migrations()
    with migrations_server(migrations) as url:
        assert run_http_hook(HttpHook(url=f"{url}/ready", method="GET"), "pre_deploy", {"hook": "x"}).passed
    assert migrations.requests == [("GET", "/ready", None)]


def test_an_http_hook_that_does_not_answer_in_time_fails_as_timed_out() -> None:
    migrations = Migrations(delay_s=3.0)
    with migrations_server(migrations) as url:
        started = time.monotonic()
        result = run_http_hook(HttpHook(url=f"{url}/expand", timeout_s=0.5), "pre_deploy", {})
    assert time.monotonic() - started < 2.5
    assert not result.passed and result.timed_out and result.detail == "timed out after 0.5 s"


def test_an_http_hook_nobody_listens_for_fails_clearly() -> None:
    with migrations_server(Migrations()) as url:
        pass  # the port is free again
    result = run_http_hook(HttpHook(url=f"{url}/expand"), "pre_deploy", {})
    assert not result.passed and result.detail.startswith(f"could not call POST {url}/expand: ConnectError")


@pytest.mark.parametrize("status", [301, 302])
def test_a_redirect_is_not_followed_and_fails(status: int) -> None:
    with migrations_server(Migrations(status=status)) as url:
        result = run_http_hook(HttpHook(url=f"{url}/expand"), "pre_deploy", {})
    assert not result.passed and result.status_code == status
