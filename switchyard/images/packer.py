"""Running Packer: streamed output, timeouts, cancellation, machine-readable parsing, the manifest.

``PackerRunner`` is packerpy's ``PackerExecutable`` (whose argument building it reuses) with an
``execute_cmd`` that does not block until the end: Packer runs in its own process group, every output
line goes to a callback as it comes (the flow sends them to the Prefect log), a timeout or a
cancellation (KeyboardInterrupt, asyncio.CancelledError, an explicit cancel event) stops the whole
group (SIGTERM, then SIGKILL), and a failure raises an error carrying Packer's own error text.

``build_local_image()`` is the entry point of the image pipeline: it builds images/local.pkr.hcl for
one app and image version and returns the checked artifact.
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
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, Protocol, TypeVar

from packerpy import PackerExecutable
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from switchyard.core.image_metadata import format_utc
from switchyard.core.topology import check_name
from switchyard.core.versions import ImageVersion
from switchyard.images.artifact import (
    ArtifactError,
    FaultProfile,
    ImageManifest,
    load_app_config,
    read_manifest,
    sha256_file,
)
from switchyard.stack.processes import stop_process_group

T = TypeVar("T")

IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"
LOCAL_TEMPLATE = IMAGES_DIR / "local.pkr.hcl"
AZURE_TEMPLATE = IMAGES_DIR / "azure.pkr.hcl"

DEFAULT_BUILD_TIMEOUT_SECONDS = 600.0
_OUTPUT_TAIL_LINES = 40
# After Packer exits, how long its output pipes may stay open before we stop reading them.
_PIPE_DRAIN_SECONDS = 2.0


# --- errors -------------------------------------------------------------------------------------


class PackerError(RuntimeError):
    """Packer did not do what was asked. ``packer_errors`` holds Packer's own error messages."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        packer_errors: Sequence[str] = (),
        output_tail: Sequence[str] = (),
    ) -> None:
        details = "\n".join(packer_errors)
        super().__init__(f"{message}\n{details}".rstrip() if details else message)
        self.exit_code = exit_code
        self.packer_errors = list(packer_errors)
        self.output_tail = list(output_tail)


class PackerNotFoundError(PackerError):
    pass


class PackerTemplateError(PackerError):
    """Packer rejected the template (syntax, unknown arguments, invalid builder settings, ...)."""


class PackerBuildError(PackerError):
    pass


class PackerFormatError(PackerError):
    """``packer fmt -check`` found files that are not in canonical format."""

    def __init__(self, message: str, *, unformatted: Sequence[str], exit_code: int | None) -> None:
        super().__init__(message, exit_code=exit_code, packer_errors=unformatted)
        self.unformatted = list(unformatted)


class PackerTimeoutError(PackerError):
    pass


class PackerCancelledError(PackerError):
    pass


# --- machine-readable output --------------------------------------------------------------------


class MachineReadableLine(BaseModel):
    """One ``-machine-readable`` line: ``timestamp,target,type,data...``."""

    model_config = ConfigDict(frozen=True)

    timestamp: int
    target: str
    type: str
    data: tuple[str, ...]

    @property
    def ui_kind(self) -> str | None:
        """say / message / error for ``ui`` lines."""
        return self.data[0] if self.type == "ui" and self.data else None

    @property
    def text(self) -> str:
        if self.type == "ui" and len(self.data) >= 2:
            return ",".join(self.data[1:])
        return ",".join(self.data)


def _unescape(field: str) -> str:
    # Packer escapes commas, newlines and carriage returns inside fields.
    return field.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")


def parse_machine_readable(line: str) -> MachineReadableLine | None:
    """Parse one line of ``packer -machine-readable`` output; None for any other line."""
    parts = line.rstrip("\r\n").split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    return MachineReadableLine(
        timestamp=int(parts[0]),
        target=_unescape(parts[1]),
        type=_unescape(parts[2]),
        data=tuple(_unescape(part) for part in parts[3:]),
    )


class PackerLine(BaseModel):
    """A line Packer printed, as it came, with its parsed form when it is machine-readable."""

    model_config = ConfigDict(frozen=True)

    stream: Literal["stdout", "stderr"]
    raw: str
    machine: MachineReadableLine | None = None

    @property
    def text(self) -> str:
        """What a human wants in a log: the message, unescaped, without the machine-readable frame."""
        return (self.machine.text if self.machine else self.raw).rstrip("\n")

    @property
    def is_error(self) -> bool:
        return self.machine is not None and self.machine.ui_kind == "error"


LineCallback = Callable[[PackerLine], None]


class CancelSignal(Protocol):
    """Anything with ``is_set()``: a threading.Event or an asyncio.Event."""

    def is_set(self) -> bool: ...


class _AnyOf:
    def __init__(self, *signals: CancelSignal | None) -> None:
        self._signals = [signal_ for signal_ in signals if signal_ is not None]

    def is_set(self) -> bool:
        return any(signal_.is_set() for signal_ in self._signals)


class PackerRun(BaseModel):
    """A finished Packer command."""

    model_config = ConfigDict(frozen=True)

    argv: tuple[str, ...]
    exit_code: int
    lines: tuple[PackerLine, ...]

    @property
    def errors(self) -> list[str]:
        """Packer's own error messages (``ui,error`` lines); stderr when there are none."""
        errors = [line.text.strip() for line in self.lines if line.is_error]
        if not errors:
            errors = [line.text.strip() for line in self.lines if line.stream == "stderr" and line.text.strip()]
        return errors

    @property
    def tail(self) -> list[str]:
        return [line.text for line in self.lines[-_OUTPUT_TAIL_LINES:]]


# --- the manifest post-processor ----------------------------------------------------------------


class PackerManifestFile(BaseModel):
    name: str
    size: int


class PackerManifestEntry(BaseModel):
    """One build recorded by Packer's manifest post-processor."""

    name: str
    builder_type: str
    build_time: int
    files: list[PackerManifestFile] = Field(default_factory=list)
    artifact_id: str = ""
    packer_run_uuid: str
    custom_data: dict[str, str] = Field(default_factory=dict)


class PackerManifest(BaseModel):
    builds: list[PackerManifestEntry]
    last_run_uuid: str


def _last_run_uuid(path: Path) -> str | None:
    try:
        return PackerManifest.model_validate_json(path.read_bytes()).last_run_uuid
    except (OSError, ValidationError):
        return None


def read_packer_manifest(path: Path) -> PackerManifestEntry:
    """The entry of the last run (``last_run_uuid``) in a manifest post-processor's file.

    The file accumulates every run that wrote to it; older entries belong to earlier builds.
    """
    try:
        manifest = PackerManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise PackerBuildError(f"Packer finished but wrote no manifest at {path}") from None
    except ValidationError as error:
        raise PackerBuildError(
            f"Packer's manifest {path} is not what the manifest post-processor writes: {error}"
        ) from None
    for entry in reversed(manifest.builds):
        if entry.packer_run_uuid == manifest.last_run_uuid:
            return entry
    raise PackerBuildError(f"Packer's manifest {path} has no build for its last run {manifest.last_run_uuid}")


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
                        output_tail=[line.text for line in lines[-_OUTPUT_TAIL_LINES:]],
                    )
                if deadline is not None and time.monotonic() >= deadline:
                    raise PackerTimeoutError(
                        f"packer {packer_cmd} did not finish within {timeout:g} s; its process group was stopped",
                        output_tail=[line.text for line in lines[-_OUTPUT_TAIL_LINES:]],
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
        previous_run = _last_run_uuid(manifest_path)
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


# --- the local image --------------------------------------------------------------------------


class LocalImageRequest(BaseModel):
    """What to build: one service's app folder as one image version."""

    model_config = ConfigDict(frozen=True)

    service: str
    app_dir: Path
    version: ImageVersion
    git_commit: str = Field(pattern=r"^[0-9a-f]{7,64}$")
    fault_profile: FaultProfile = Field(default_factory=lambda: FaultProfile.model_validate({}))
    output_dir: Path
    # Part of the manifest and every tar entry's mtime: the same request gives the same digest.
    built_at: datetime = Field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    @field_validator("service")
    @classmethod
    def _service_name(cls, service: str) -> str:
        return check_name("service", service)

    @property
    def artifact_name(self) -> str:
        return f"{self.service}-{self.version.gallery_version}.tar.gz"

    @property
    def packer_manifest_path(self) -> Path:
        return self.output_dir.resolve() / f"{self.service}-{self.version.gallery_version}.packer-manifest.json"

    def packer_variables(self) -> dict[str, str]:
        return {
            "service": self.service,
            "app_dir": str(self.app_dir.resolve()),
            "base": str(self.version.base),
            "patch_level": str(self.version.patch_level),
            "app_version": str(self.version.app_version),
            "gallery_version": self.version.gallery_version,
            "git_commit": self.git_commit,
            "fault_profile": self.fault_profile.model_dump_json(exclude_none=True),  # unset faults stay out
            "built_at": format_utc(self.built_at),
            "output_dir": str(self.output_dir.resolve()),
            "packer_manifest_path": str(self.packer_manifest_path),
        }


class LocalImage(BaseModel):
    """A built and checked local image artifact."""

    model_config = ConfigDict(frozen=True)

    artifact_path: Path
    sha256: str
    size_bytes: int
    manifest: ImageManifest
    packer_run_uuid: str

    @property
    def source_uri(self) -> str:
        """The gallery image version's ``storageProfile.osDiskImage.source.uri`` for the emulator."""
        return self.artifact_path.resolve().as_uri()


def build_local_image(
    request: LocalImageRequest,
    *,
    runner: PackerRunner | None = None,
    template: Path = LOCAL_TEMPLATE,
    on_line: LineCallback | None = None,
    timeout: float | None = DEFAULT_BUILD_TIMEOUT_SECONDS,
    cancel_event: CancelSignal | None = None,
) -> LocalImage:
    """Build images/local.pkr.hcl for ``request`` and check what came out.

    Checks: the checksum post-processor's sha256 matches the file, and the manifest inside the
    artifact states exactly the requested service, versions, commit and fault profile.
    """
    load_app_config(request.app_dir)  # a clear error before Packer's, when the folder is wrong
    if not template.is_file():
        raise PackerTemplateError(f"the local template {template} does not exist")
    request.output_dir.mkdir(parents=True, exist_ok=True)
    runner = runner or PackerRunner()
    entry = runner.build_template(
        template.resolve(),
        variables=request.packer_variables(),
        manifest_path=request.packer_manifest_path,
        on_line=on_line,
        timeout=timeout,
        cancel_event=cancel_event,
    )
    artifact = request.output_dir.resolve() / request.artifact_name
    if request.artifact_name not in {file.name for file in entry.files} or not artifact.is_file():
        raise PackerBuildError(f"Packer reported success but {artifact} was not produced")
    digest = sha256_file(artifact)
    recorded = _recorded_checksum(Path(f"{artifact}.sha256"), artifact.name)
    if recorded != digest:
        raise PackerBuildError(f"{artifact.name}: sha256 {digest} does not match the checksum file's {recorded}")
    manifest = read_manifest(artifact)
    expected = {
        "name": request.service,
        "base": str(request.version.base),
        "patch_level": str(request.version.patch_level),
        "app_version": str(request.version.app_version),
        "gallery_version": request.version.gallery_version,
        "git_commit": request.git_commit,
        "fault_profile": request.fault_profile,
    }
    differing = [key for key, value in expected.items() if getattr(manifest, key) != value]
    if differing:
        raise ArtifactError(f"{artifact.name}: manifest.json differs from the request in {', '.join(differing)}")
    return LocalImage(
        artifact_path=artifact,
        sha256=digest,
        size_bytes=artifact.stat().st_size,
        manifest=manifest,
        packer_run_uuid=entry.packer_run_uuid,
    )


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


async def build_local_image_async(request: LocalImageRequest, **kwargs: Any) -> LocalImage:
    """``build_local_image`` for async callers: cancelling the awaiting task stops Packer's group."""
    return await call_cancellable(build_local_image, request, **kwargs)


def _recorded_checksum(checksum_file: Path, artifact_name: str) -> str:
    """The sha256 the checksum post-processor wrote (``<hex>\\t<name>`` lines)."""
    try:
        lines = checksum_file.read_text().splitlines()
    except FileNotFoundError:
        raise PackerBuildError(f"the checksum post-processor wrote no {checksum_file.name}") from None
    for line in lines:
        digest, _, name = line.partition("\t")
        if name.strip() == artifact_name:
            return digest.strip()
    raise PackerBuildError(f"{checksum_file.name} has no line for {artifact_name}")
