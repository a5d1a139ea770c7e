"""What Packer says back, and what switchyard makes of it.

Packer's ``-machine-readable`` lines (parsed, unescaped), a finished command's lines and its own
error messages, the file the manifest post-processor writes, and the errors raised when Packer did
not do what was asked. The runner that produces them is switchyard.images.packer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

OUTPUT_TAIL_LINES = 40


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
        return [line.text for line in self.lines[-OUTPUT_TAIL_LINES:]]


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


def last_run_uuid(path: Path) -> str | None:
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
