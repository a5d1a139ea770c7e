"""Release hooks, run: a command in a process group of its own, or an HTTP call, each bounded by its
timeout. What a hook is and when it runs is switchyard/core/hooks.py and rollout.pre_deploy_due.

A hook's failure is a result, not an exception: the flow decides what it means (a refusal before
pre_deploy's changes, an alert after post_promote). Hooks are never retried here: a migration that
failed half-way is for a person to look at, and the release can be started again (hooks are
idempotent, docs/expand-contract.md).
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from switchyard.checkout import REPO_ROOT, default_state_dir
from switchyard.core.config import ServiceConfig
from switchyard.core.hooks import (
    OUTPUT_TAIL_CHARS,
    CommandHook,
    HookName,
    HookResult,
    HttpHook,
    RunPurpose,
    hook_environment,
    hook_payload,
    mask,
    secret_values,
    tail,
)
from switchyard.core.versions import ImageVersion
from switchyard.redaction import redact
from switchyard.stack.processes import stop_process_group
from tasks.release import ReleaseContext

# After a timeout the group gets SIGTERM first (a migration tool may still roll its transaction
# back), then SIGKILL.
STOP_GRACE_S = 5.0
_BODY_METHODS = ("POST", "PUT", "PATCH")
# Bytes of each stream kept for the tail (UTF-8 takes up to 4 bytes a character).
_TAIL_BYTES = 4 * OUTPUT_TAIL_CHARS


def _read_tail(stream: BinaryIO) -> tuple[str, bool]:
    """The end of a captured stream, and whether its start was left out; a hook's output may be huge."""
    size = stream.seek(0, os.SEEK_END)
    start = max(0, size - _TAIL_BYTES)
    stream.seek(start)
    return stream.read().decode("utf-8", errors="replace"), start > 0


def run_command_hook(
    hook: CommandHook, name: RunPurpose, env: dict[str, str], *, root: Path = REPO_ROOT, grace_s: float = STOP_GRACE_S
) -> HookResult:
    """Run `hook.command` (no shell) in its own session, so that a timeout, or the end of the
    command, stops everything it started: a forgotten child must not outlive the release step."""
    started_at, started = datetime.now(UTC), time.monotonic()
    cwd = Path(hook.working_dir) if hook.working_dir else root
    cwd = cwd if cwd.is_absolute() else root / cwd

    def result(passed: bool, detail: str, **fields: object) -> HookResult:
        return HookResult.model_validate(
            {
                "hook": name,
                "kind": "command",
                "target": hook.describe(),
                "passed": passed,
                "detail": detail,
                "started_at": started_at,
                "duration_s": round(time.monotonic() - started, 3),
                **fields,
            }
        )

    if not cwd.is_dir():
        return result(False, f"working directory {cwd} does not exist on this worker")
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        # Files, not pipes: nothing can block on a full pipe, and a grandchild that keeps the
        # output open cannot make us wait for it.
        try:
            process = subprocess.Popen(
                hook.command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,  # its own process group: what it starts goes with it
            )
        except OSError as error:
            return result(False, f"could not start {hook.command[0]!r}: {error.strerror or error}")
        code: int | None = None
        try:
            code = process.wait(timeout=hook.timeout_s)
        except subprocess.TimeoutExpired:
            pass  # code stays None: timed out
        finally:
            # Also on success and on cancellation: whatever is left in the group goes now.
            stop_process_group(process, grace_s)
        out, out_cut = _read_tail(stdout)
        err, err_cut = _read_tail(stderr)
    elapsed = time.monotonic() - started
    if code is None:
        passed, detail = False, f"timed out after {hook.timeout_s:g} s; its process group was stopped"
    else:
        passed = code == 0
        detail = f"exit code {code} after {elapsed:.1f} s" if code >= 0 else f"killed by signal {-code}"
    return result(
        passed,
        detail,
        exit_code=code,
        timed_out=code is None,
        stdout_tail=tail(out, cut=out_cut),
        stderr_tail=tail(err, cut=err_cut),
    )


class _Deadline(Exception):
    pass


def run_http_hook(hook: HttpHook, name: RunPurpose, payload: dict[str, str]) -> HookResult:
    """Call `hook.url`; it passes on exactly `hook.expect_status`. Redirects are not followed: a
    redirect to a login page is not a migration that ran."""
    started_at, started = datetime.now(UTC), time.monotonic()
    deadline = started + hook.timeout_s
    status: int | None = None
    body = bytearray()
    cut = timed_out = False
    try:
        # httpx's timeout bounds each network wait; the deadline bounds a body that trickles.
        with (
            httpx.Client(timeout=hook.timeout_s, follow_redirects=False) as client,
            client.stream(hook.method, hook.url, json=payload if hook.method in _BODY_METHODS else None) as response,
        ):
            status = response.status_code
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _TAIL_BYTES:
                    del body[: len(body) - _TAIL_BYTES]
                    cut = True
                if time.monotonic() > deadline:
                    raise _Deadline
        passed = status == hook.expect_status
        detail = f"HTTP {status}" + ("" if passed else f", expected {hook.expect_status}")
    except (httpx.TimeoutException, _Deadline):
        timed_out, passed = True, False
        detail = f"timed out after {hook.timeout_s:g} s"
    except httpx.HTTPError as error:
        passed, detail = False, f"could not call {hook.describe()}: {type(error).__name__}: {error}"
    elapsed = time.monotonic() - started
    return HookResult(
        hook=name,
        kind="http",
        target=hook.describe(),
        passed=passed,
        detail=f"{detail} after {elapsed:.1f} s" if not timed_out else detail,
        started_at=started_at,
        duration_s=round(elapsed, 3),
        status_code=status,
        timed_out=timed_out,
        stdout_tail=tail(body.decode("utf-8", errors="replace"), cut=cut),
    )


def run_hook(
    hook: CommandHook | HttpHook,
    name: RunPurpose,
    *,
    service: str,
    environment: str,
    image_version: str,
    base_env: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
    root: Path = REPO_ROOT,
) -> HookResult:
    """Run a hook for a release and return its result with every secret masked: the ones switchyard
    loaded (switchyard/redaction.py) and the values of secret-named variables the hook inherits;
    the output goes to logs and to the release's artifact, which no logging filter sees."""
    base = dict(os.environ) if base_env is None else base_env
    if isinstance(hook, CommandHook):
        env = hook_environment(base, service=service, environment=environment, image_version=image_version, hook=name)
        result = run_command_hook(hook, name, {**env, **(extra_env or {})}, root=root)
    else:
        payload = hook_payload(service=service, environment=environment, image_version=image_version, hook=name)
        result = run_http_hook(hook, name, payload)
    secrets = secret_values(base)

    def clean(text: str) -> str:
        return mask(redact(text), secrets)

    return result.model_copy(
        update={
            "target": clean(result.target),
            "detail": clean(result.detail),
            "stdout_tail": clean(result.stdout_tail),
            "stderr_tail": clean(result.stderr_tail),
        }
    )


def log_result(logger: logging.Logger | logging.LoggerAdapter[logging.Logger], result: HookResult) -> None:
    """One line for the result, then the end of the output, in the run's logs."""
    level = logging.INFO if result.passed else logging.ERROR
    logger.log(level, "%s hook `%s`: %s", result.hook, result.target, result.detail)
    for stream, text in (("stdout", result.stdout_tail), ("stderr", result.stderr_tail)):
        if text:
            logger.log(level, "%s hook %s (the end):\n%s", result.hook, stream, text)


def _run_for_release(context: ReleaseContext, name: HookName) -> HookResult | None:
    # The service's own hook (its migrations) before the policy's, which every service shares.
    hook = context.service.hooks.get(name) or context.policy.hooks.get(name)
    if hook is None:
        return None
    logger = get_run_logger()
    logger.info("%s hook: %s (timeout %g s)", name, hook.describe(), hook.timeout_s)
    result = run_hook(
        hook,
        name,
        service=context.service.name,
        environment=context.environment.name,
        image_version=context.image_version,
        extra_env=release_facts(context.service, context.environment.name, context.image_version),
    )
    log_result(logger, result)
    return result


def release_facts(service: ServiceConfig, environment: str, image_version: str) -> dict[str, str]:
    """What a migration needs to know beside the image: which app version it ships (migrations
    are tied to app versions) and where the service's shared database is."""
    facts = {"SWITCHYARD_APP_VERSION": str(ImageVersion.from_gallery_version(image_version).app_version)}
    database = service.database_url(environment, str(default_state_dir()))
    if database is not None:
        facts["SWITCHYARD_DATABASE_URL"] = database
    return facts


# No retries and no cache: a hook runs once per call, and only the flow decides to call it.
@task(name="run pre_deploy hook", cache_policy=NO_CACHE)
def run_pre_deploy_hook(context: ReleaseContext) -> HookResult | None:
    """The release policy's pre_deploy hook (an expand migration), or None when it has none."""
    return _run_for_release(context, "pre_deploy")


@task(name="run post_promote hook", cache_policy=NO_CACHE)
def run_post_promote_hook(context: ReleaseContext) -> HookResult | None:
    """The release policy's post_promote hook (a contract migration), or None when it has none."""
    return _run_for_release(context, "post_promote")
