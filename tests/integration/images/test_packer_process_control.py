"""The Packer runner stops the whole process group on timeout and on every kind of cancellation,
and reports Packer's own error text."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from images_support import FIXTURES, REPO_ROOT

from switchyard.core.versions import ImageVersion
from switchyard.images.azure_image import AzureImageRequest
from switchyard.images.packer import AZURE_TEMPLATE, LOCAL_TEMPLATE, PackerRunner, call_cancellable
from switchyard.images.packer_output import (
    PackerBuildError,
    PackerCancelledError,
    PackerFormatError,
    PackerLine,
    PackerTemplateError,
    PackerTimeoutError,
)
from switchyard.stack.processes import live_group_members, proc_stat

SLEEP_TEMPLATE = FIXTURES / "templates" / "sleep.pkr.hcl"
MALFORMED_TEMPLATE = FIXTURES / "templates" / "malformed.pkr.hcl"
PACKER_COMPLAINT = 'An argument named "bogus_field" is not expected here.'


class SleepWatch:
    """Learns the sleeping step's pid and process group from the streamed output."""

    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file
        self.sleeping = threading.Event()
        self.pid = 0
        self.pgid = 0

    def __call__(self, line: PackerLine) -> None:
        if "sleeping now" in line.text and not self.sleeping.is_set():
            self.pid = int(self.pid_file.read_text())
            stat = proc_stat(self.pid)
            assert stat is not None, f"the sleeping step {self.pid} is gone already"
            self.pgid = stat.pgrp
            self.sleeping.set()

    def assert_all_gone(self) -> None:
        assert self.sleeping.is_set(), "the build never reached its sleeping step"
        assert live_group_members(self.pgid) == [], "processes of Packer's group are still running"
        assert self.pid not in live_group_members(self.pgid)


def sleep_build(runner: PackerRunner, tmp_path: Path, watch: SleepWatch, **kwargs: object) -> None:
    runner.build_template(
        SLEEP_TEMPLATE,
        variables={"pid_file": str(watch.pid_file)},
        manifest_path=tmp_path / "never-written.json",
        on_line=watch,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_timeout_stops_the_whole_process_group(tmp_path: Path) -> None:
    watch = SleepWatch(tmp_path / "pid")
    with pytest.raises(PackerTimeoutError, match="did not finish within 3 s") as raised:
        sleep_build(PackerRunner(term_grace_seconds=2), tmp_path, watch, timeout=3)
    watch.assert_all_gone()
    assert any("sleeping now" in line for line in raised.value.output_tail)


def test_a_cancel_event_stops_the_whole_process_group(tmp_path: Path) -> None:
    watch = SleepWatch(tmp_path / "pid")
    cancel = threading.Event()

    def cancel_once_sleeping() -> None:
        if watch.sleeping.wait(60):
            cancel.set()

    threading.Thread(target=cancel_once_sleeping, daemon=True).start()
    with pytest.raises(PackerCancelledError, match="was cancelled"):
        sleep_build(PackerRunner(), tmp_path, watch, timeout=120, cancel_event=cancel)
    watch.assert_all_gone()


def test_keyboard_interrupt_stops_the_group_and_propagates(tmp_path: Path) -> None:
    watch = SleepWatch(tmp_path / "pid")

    def interrupt_once_sleeping(line: PackerLine) -> None:
        watch(line)
        if watch.sleeping.is_set():
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        PackerRunner().build_template(
            SLEEP_TEMPLATE,
            variables={"pid_file": str(watch.pid_file)},
            manifest_path=tmp_path / "never-written.json",
            on_line=interrupt_once_sleeping,
            timeout=120,
        )
    watch.assert_all_gone()


def test_asyncio_cancellation_stops_the_group_before_it_propagates(tmp_path: Path) -> None:
    watch = SleepWatch(tmp_path / "pid")

    async def scenario() -> None:
        build = asyncio.ensure_future(
            call_cancellable(
                PackerRunner().build_template,
                SLEEP_TEMPLATE,
                variables={"pid_file": str(watch.pid_file)},
                manifest_path=tmp_path / "never-written.json",
                on_line=watch,
                timeout=120,
            )
        )
        while not watch.sleeping.is_set():
            await asyncio.sleep(0.05)
        build.cancel()
        with pytest.raises(asyncio.CancelledError):
            await build
        # By the time the cancellation arrives, the group is already gone.
        watch.assert_all_gone()

    asyncio.run(scenario())


def test_a_malformed_template_fails_with_packers_message(tmp_path: Path) -> None:
    runner = PackerRunner()
    with pytest.raises(PackerTemplateError) as rejected:
        runner.validate_template(MALFORMED_TEMPLATE)
    assert any(PACKER_COMPLAINT in message for message in rejected.value.packer_errors)
    assert PACKER_COMPLAINT in str(rejected.value)

    with pytest.raises(PackerBuildError) as failed:
        runner.build_template(MALFORMED_TEMPLATE, variables={}, manifest_path=tmp_path / "m.json")
    assert PACKER_COMPLAINT in str(failed.value)
    assert failed.value.exit_code == 1


def azure_variables(tmp_path: Path) -> dict[str, str]:
    """What the image pipeline passes for an Azure build (test_azure_build_variables.py checks it is
    every variable the template declares)."""
    return AzureImageRequest(
        service="sample",
        app_dir=REPO_ROOT / "apps" / "sample",
        version=ImageVersion.of("debian-12", "2026.11", "1.4.2"),
        git_commit="0123abcd",
        output_dir=tmp_path,
        build_resource_group="rg-switchyard-build",
    ).packer_variables()


def test_the_azure_builder_rejects_an_incomplete_configuration(tmp_path: Path) -> None:
    variables = azure_variables(tmp_path)
    variables["build_resource_group"] = ""
    with pytest.raises(PackerTemplateError, match="location"):
        PackerRunner().validate_template(AZURE_TEMPLATE, variables=variables)


def test_the_local_template_validates(tmp_path: Path) -> None:
    PackerRunner().validate_template(
        LOCAL_TEMPLATE,
        variables={
            "service": "sample",
            "app_dir": str(REPO_ROOT / "apps" / "sample"),
            "base": "debian-12",
            "patch_level": "2026.11",
            "app_version": "1.4.2",
            "gallery_version": "1004002.20261100.1",
            "git_commit": "0123abcd",
            "built_at": "2026-11-26T10:00:00Z",
            "output_dir": str(tmp_path),
            "packer_manifest_path": str(tmp_path / "m.json"),
        },
    )


def test_the_images_directory_is_packer_fmt_clean() -> None:
    PackerRunner().fmt_check(REPO_ROOT / "images")


def test_fmt_check_names_unformatted_files(tmp_path: Path) -> None:
    (tmp_path / "messy.pkr.hcl").write_text('source "null" "x" {\ncommunicator="none"\n}\n')
    with pytest.raises(PackerFormatError) as raised:
        PackerRunner().fmt_check(tmp_path)
    assert raised.value.unformatted == [str(tmp_path / "messy.pkr.hcl")]


def test_packerpy_interface_still_works() -> None:
    exit_code, stdout, _ = PackerRunner().version()
    assert exit_code == 0
    assert b"1.6.6" in stdout or b"Packer v" in stdout


def test_an_earlier_runs_manifest_entry_is_never_taken_for_this_run(tmp_path: Path) -> None:
    template = FIXTURES / "templates" / "no-manifest.pkr.hcl"
    runner = PackerRunner()
    with pytest.raises(PackerBuildError, match="wrote no manifest"):
        runner.build_template(template, variables={}, manifest_path=tmp_path / "m.json")
    earlier = {
        "builds": [
            {
                "name": "local",
                "builder_type": "null",
                "build_time": 1,
                "files": [],
                "artifact_id": "",
                "packer_run_uuid": "earlier-run",
                "custom_data": {},
            }
        ],
        "last_run_uuid": "earlier-run",
    }
    (tmp_path / "m.json").write_text(json.dumps(earlier))
    with pytest.raises(PackerBuildError, match="did not record this run"):
        runner.build_template(template, variables={}, manifest_path=tmp_path / "m.json")
