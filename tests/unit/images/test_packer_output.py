"""Packer's -machine-readable lines and the manifest post-processor's file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchyard.images.packer_output import PackerBuildError, PackerLine, parse_machine_readable, read_packer_manifest


def test_ui_lines_unescape_commas_and_newlines() -> None:
    line = parse_machine_readable(
        "1795701767,,ui,error,Error: Unsupported argument\\n\\n  on bad.pkr.hcl line 3:\\nAn argument named"
        ' "bogus"%!(PACKER_COMMA) here.\\n\n'
    )
    assert line is not None
    assert (line.timestamp, line.target, line.type, line.ui_kind) == (1795701767, "", "ui", "error")
    assert line.text == 'Error: Unsupported argument\n\n  on bad.pkr.hcl line 3:\nAn argument named "bogus", here.\n'


def test_artifact_lines_keep_their_fields() -> None:
    line = parse_machine_readable("1795701767,null.local,artifact,1,file,0,/tmp/out/a%!(PACKER_COMMA)b.tar.gz")
    assert line is not None
    assert line.target == "null.local"
    assert line.type == "artifact"
    assert line.data == ("1", "file", "0", "/tmp/out/a,b.tar.gz")


def test_a_message_with_commas_is_rejoined() -> None:
    # Packer escapes commas inside data, but a raw comma (an older Packer, a plugin) must not lose text.
    line = parse_machine_readable("1,,ui,say,a,b")
    assert line is not None and line.text == "a,b"


@pytest.mark.parametrize("raw", ["==> null.local: Running", "", "panic: runtime error", "abc,def,ghi"])
def test_other_lines_are_not_machine_readable(raw: str) -> None:
    assert parse_machine_readable(raw) is None


def test_packer_line_text_is_what_a_log_shows() -> None:
    raw = "1,null.local,ui,message,    null.local: installed app: 2 files%!(PACKER_COMMA) 2 pins\n"
    line = PackerLine(stream="stdout", raw=raw, machine=parse_machine_readable(raw))
    assert line.text == "    null.local: installed app: 2 files, 2 pins"
    assert not line.is_error
    assert PackerLine(stream="stderr", raw="plain\n").text == "plain"


def manifest_entry(run_uuid: str, artifact: str) -> dict[str, object]:
    return {
        "name": "local",
        "builder_type": "null",
        "build_time": 1795701767,
        "files": [{"name": artifact, "size": 10}, {"name": f"{artifact}.sha256", "size": 90}],
        "artifact_id": "",
        "packer_run_uuid": run_uuid,
        "custom_data": {"gallery_version": "1004002.20261100.1"},
    }


def test_the_manifest_entry_of_the_last_run_is_returned(tmp_path: Path) -> None:
    path = tmp_path / "packer-manifest.json"
    path.write_text(
        json.dumps(
            {
                "builds": [manifest_entry("run-1", "old.tar.gz"), manifest_entry("run-2", "new.tar.gz")],
                "last_run_uuid": "run-2",
            }
        )
    )
    entry = read_packer_manifest(path)
    assert entry.packer_run_uuid == "run-2"
    assert entry.files[0].name == "new.tar.gz"


def test_a_manifest_without_the_last_run_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "packer-manifest.json"
    path.write_text(json.dumps({"builds": [manifest_entry("run-1", "old.tar.gz")], "last_run_uuid": "run-9"}))
    with pytest.raises(PackerBuildError, match="has no build for its last run run-9"):
        read_packer_manifest(path)


def test_a_missing_manifest_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PackerBuildError, match="wrote no manifest"):
        read_packer_manifest(tmp_path / "absent.json")
