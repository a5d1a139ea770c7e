"""Running Packer: streamed output, timeouts, cancellation, its process group.

``PackerRunner`` is packerpy's ``PackerExecutable`` (whose argument building it reuses) with an
``execute_cmd`` that does not block until the end: Packer runs in its own process group, every output
line goes to a callback as it comes (the flow sends them to the Prefect log), a timeout or a
cancellation (KeyboardInterrupt, asyncio.CancelledError, an explicit cancel event) stops the whole
group (SIGTERM, then SIGKILL), and a failure raises an error carrying Packer's own error text.

The local image built with it is switchyard.images.local_image; what Packer prints and writes back
is read in switchyard.images.packer_output.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Literal, Protocol, TypeVar

from packerpy import PackerExecutable

from switchyard.images.packer_output import (
    OUTPUT_TAIL_LINES,
    LineCallback,
    PackerBuildError,
    PackerCancelledError,
    PackerFormatError,
    PackerLine,
    PackerManifestEntry,
    PackerNotFoundError,
    PackerRun,
    PackerTemplateError,
    PackerTimeoutError,
    last_run_uuid,
    parse_machine_readable,
    read_packer_manifest,
)
from switchyard.stack.processes import stop_process_group

T = TypeVar("T")

IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"
LOCAL_TEMPLATE = IMAGES_DIR / "local.pkr.hcl"
AZURE_TEMPLATE = IMAGES_DIR / "azure.pkr.hcl"

DEFAULT_BUILD_TIMEOUT_SECONDS = 600.0
# After Packer exits, how long its output pipes may stay open before we stop reading them.
_PIPE_DRAIN_SECONDS = 2.0


class CancelSignal(Protocol):
    """Anything with ``is_set()``: a threading.Event or an asyncio.Event."""

    def is_set(self) -> bool: ...


class _AnyOf:
    def __init__(self, *signals: CancelSignal | None) -> None:
        self._signals = [signal_ for signal_ in signals if signal_ is not None]

    def is_set(self) -> bool:
        return any(signal_.is_set() for signal_ in self._signals)


StreamName = Literal["stdout", "stderr"]


def _pump(stream: IO[bytes], name: StreamName, sink: queue.SimpleQueue[tuple[StreamName, str | None]]) -> None:
    # Only this thread touches the stream: closing a pipe another thread is reading would block on
    # the reader's lock for as long as some escaped process keeps the pipe open.
    try:
        for raw in iter(stream.readline, b""):
            sink.put((name, raw.decode("utf-8", errors="replace")))
    finally:
        stream.close()
        sink.put((name, None))


# --- the runner ---------------------------------------------------------------------------------


def find_packer() -> str:
    path = shutil.which("packer")
    if path is None:
        raise PackerNotFoundError(
            "packer is not on PATH: install it (Debian: apt-get install packer; `make setup` does) "
            "or pass executable_path"
        )
    return path


class PackerRunner(PackerExecutable):
    """packerpy's PackerExecutable with streaming, timeouts, cancellation and clear errors.

    Packer runs in its own process group, so a signal sent to this Python process does not reach it:
    cancellation arrives through this object (timeout, ``cancel_event``, or an exception such as
    KeyboardInterrupt or Prefect's TerminationSignal raised in the thread that waits for Packer). A
    caller that runs builds off the main thread must set ``cancel_event`` when it is cancelled.

    ``term_grace_seconds`` is how long Packer may clean up after SIGTERM before SIGKILL: a few seconds
    for the local template; for azure.pkr.hcl give it minutes, since Packer deletes the build VM's
    resources on the way out and a SIGKILL would leave them behind.
    """

    def __init__(
        self,
        executable_path: str | None = None,
        *,
        working_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        term_grace_seconds: float = 5.0,
    ) -> None:
        super().__init__(executable_path=executable_path or find_packer(), machine_readable=True)
        self.working_dir = working_dir
        # No update check against the network; callers may add or override variables.
        self.env = {**os.environ, "CHECKPOINT_DISABLE": "1", **(env or {})}
        self.term_grace_seconds = term_grace_seconds
        # execute_cmd() (packerpy's interface) uses these; run() takes them per call.
        self.on_line: LineCallback | None = None
        self.timeout: float | None = None
        self.cancel_event: CancelSignal | None = None

    def argv(
        self, packer_cmd: str, template: str | None = None, *, machine_readable: bool = True, **kwargs: Any
    ) -> list[str]:
        """The command line, built the way packerpy builds it (``var={...}`` -> ``-var k=v``)."""
        argv = [self.configuration[PackerExecutable.PATH], packer_cmd]
        if machine_readable:
            argv.append("-machine-readable")
        argv.extend(self._explode_args(**kwargs))
        if template:
            argv.append(template)
        return argv

    def execute_cmd(self, packer_cmd: str, template: str | None = None, **kwargs: Any) -> tuple[int, bytes, bytes]:
        """packerpy's interface (so its build/validate/inspect/version work), on the streaming core.

        JSON templates given inline (packerpy's stdin mode) are not supported: pass a file path.
        """
        if template and template.strip("\n\t ").startswith("{"):
            raise PackerTemplateError("inline JSON templates are not supported: pass the template's path")
        result = self.run(
            packer_cmd,
            template,
            on_line=self.on_line,
            timeout=self.timeout,
            cancel_event=self.cancel_event,
            **kwargs,
        )
        stdout = "".join(line.raw for line in result.lines if line.stream == "stdout").encode()
        stderr = "".join(line.raw for line in result.lines if line.stream == "stderr").encode()
        return result.exit_code, stdout, stderr

    def run(
        self,
        packer_cmd: str,
        template: str | None = None,
        *,
        on_line: LineCallback | None = None,
        timeout: float | None = None,
        cancel_event: CancelSignal | None = None,
        machine_readable: bool = True,
        **kwargs: Any,
    ) -> PackerRun:
        """Run one Packer command to its end, streaming lines to ``on_line``.

        Raises PackerTimeoutError after ``timeout`` seconds and PackerCancelledError once
        ``cancel_event`` is set; a KeyboardInterrupt (or any other exception, e.g. from ``on_line``)
        passes through. In every one of these cases the whole process group is stopped first.
        A non-zero exit is NOT raised here: callers decide what it means.
        """
        argv = self.argv(packer_cmd, template, machine_readable=machine_readable, **kwargs)
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.working_dir,
                env=self.env,
                start_new_session=True,  # its own process group, so we can stop all of it
            )
        except FileNotFoundError:
            raise PackerNotFoundError(f"packer executable {argv[0]!r} not found") from None
        assert process.stdout is not None and process.stderr is not None
        sink: queue.SimpleQueue[tuple[StreamName, str | None]] = queue.SimpleQueue()
        pumps = [
            threading.Thread(target=_pump, args=(process.stdout, "stdout", sink), daemon=True),
            threading.Thread(target=_pump, args=(process.stderr, "stderr", sink), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        deadline = time.monotonic() + timeout if timeout is not None else None
        lines: list[PackerLine] = []
        open_streams = 2
        exited_at: float | None = None
        try:
            while open_streams or process.poll() is None:
                if cancel_event is not None and cancel_event.is_set():
                    raise PackerCancelledError(
                        f"packer {packer_cmd} was cancelled",
                        output_tail=[line.text for line in lines[-OUTPUT_TAIL_LINES:]],
                    )
                if deadline is not None and time.monotonic() >= deadline:
                    raise PackerTimeoutError(
                        f"packer {packer_cmd} did not finish within {timeout:g} s; its process group was stopped",
                        output_tail=[line.text for line in lines[-OUTPUT_TAIL_LINES:]],
                    )
                if process.poll() is not None:
                    if exited_at is None:
                        exited_at = time.monotonic()
                        # Packer is gone: whatever it left running in its group goes too.
                        stop_process_group(process, self.term_grace_seconds)
                    elif time.monotonic() - exited_at > _PIPE_DRAIN_SECONDS:
                        break  # a process that left the group still holds the pipes: stop reading
                if not open_streams:
                    time.sleep(0.02)
                    continue
                try:
                    stream, raw = sink.get(timeout=0.1)
                except queue.Empty:
                    continue
                if raw is None:
                    open_streams -= 1
                    continue
                line = PackerLine(
                    stream=stream,
                    raw=raw,
                    machine=parse_machine_readable(raw) if machine_readable and stream == "stdout" else None,
                )
                lines.append(line)
                if on_line is not None:
                    on_line(line)
        except BaseException:
            stop_process_group(process, self.term_grace_seconds)
            raise
        finally:
            for pump in pumps:
                pump.join(timeout=1.0)
        # Leftovers of a finished run (a backgrounded child) must not outlive it either.
        stop_process_group(process, self.term_grace_seconds)
        return PackerRun(argv=tuple(argv), exit_code=process.returncode, lines=tuple(lines))

    # --- commands ----------------------------------------------------------------------------

    def validate_template(
        self,
        template: Path,
        *,
        variables: Mapping[str, str] | None = None,
        syntax_only: bool = False,
        timeout: float = 120.0,
    ) -> None:
        """``packer validate``; PackerTemplateError with Packer's messages when it is rejected."""
        kwargs: dict[str, Any] = {"var": dict(variables or {})}
        if syntax_only:
            kwargs["syntax_only"] = True
        result = self.run("validate", str(template), timeout=timeout, **kwargs)
        if result.exit_code != 0:
            raise PackerTemplateError(
                f"packer rejected {template}",
                exit_code=result.exit_code,
                packer_errors=result.errors,
                output_tail=result.tail,
            )

    def fmt_check(self, path: Path, *, timeout: float = 60.0) -> None:
        """``packer fmt -check``; PackerFormatError naming the files that need ``packer fmt``."""
        result = self.run("fmt", str(path), machine_readable=False, timeout=timeout, check=True)
        if result.exit_code == 0:
            return
        unformatted = [line.text.strip() for line in result.lines if line.stream == "stdout" and line.text.strip()]
        if unformatted:
            raise PackerFormatError(
                f"packer fmt -check: {len(unformatted)} file(s) need `packer fmt`",
                unformatted=unformatted,
                exit_code=result.exit_code,
            )
        raise PackerTemplateError(
            f"packer fmt could not read {path}",
            exit_code=result.exit_code,
            packer_errors=result.errors,
            output_tail=result.tail,
        )

    def build_template(
        self,
        template: Path,
        *,
        variables: Mapping[str, str],
        manifest_path: Path,
        on_line: LineCallback | None = None,
        timeout: float | None = DEFAULT_BUILD_TIMEOUT_SECONDS,
        cancel_event: CancelSignal | None = None,
    ) -> PackerManifestEntry:
        """``packer build``; returns this run's entry of the manifest post-processor's file."""
        # The file accumulates runs: remember the last one before, so an entry left by an earlier
        # build can never be taken for this one.
        previous_run = last_run_uuid(manifest_path)
        result = self.run(
            "build",
            str(template),
            on_line=on_line,
            timeout=timeout,
            cancel_event=cancel_event,
            color="false",
            var=dict(variables),
        )
        if result.exit_code != 0:
            raise PackerBuildError(
                f"packer build of {template.name} failed (exit code {result.exit_code})",
                exit_code=result.exit_code,
                packer_errors=result.errors,
                output_tail=result.tail,
            )
        entry = read_packer_manifest(manifest_path)
        if entry.packer_run_uuid == previous_run:
            raise PackerBuildError(f"Packer finished but did not record this run in {manifest_path}")
        return entry


async def call_cancellable(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a blocking Packer call (one that takes ``cancel_event``) for an async caller.

    The call runs in a worker thread. When the awaiting task is cancelled (asyncio.CancelledError)
    the thread is told to stop through ``cancel_event``; Packer's process group is stopped and
    reaped, and only then is the cancellation re-raised. A ``cancel_event`` given by the caller
    keeps working too.
    """
    stop = threading.Event()
    kwargs["cancel_event"] = _AnyOf(kwargs.get("cancel_event"), stop)
    work = asyncio.ensure_future(asyncio.to_thread(function, *args, **kwargs))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(PackerCancelledError):
            await work
        raise
