"""Reading what an image recorded about itself: compliance results and patch changes, and how the
image report shows the changes. A record that is missing or malformed never reads as "all well"."""

from __future__ import annotations

import json

from switchyard.core.image_records import ControlOutcome, PatchChange, PatchRecord
from switchyard.core.reports import patch_markdown
from switchyard.images.records import parse_compliance, parse_patch_record

LINE = {"id": "SWY-SSH-2", "title": "SSH password authentication is disabled", "result": "fail", "detail": "yes"}


def jsonl(*records: dict[str, str]) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def test_one_control_per_line() -> None:
    results = parse_compliance(jsonl({**LINE, "id": "SWY-FS-1", "result": "fixed"}, LINE) + b"\n")
    assert results.present and not results.problem
    assert [(c.id, c.result) for c in results.controls] == [
        ("SWY-FS-1", ControlOutcome.FIXED),
        ("SWY-SSH-2", ControlOutcome.FAIL),
    ]


def test_an_unknown_result_word_is_a_problem_not_a_pass() -> None:
    results = parse_compliance(jsonl({**LINE, "result": "skipped"}))
    assert not results.present
    assert "line 1 is not a control result: result" in results.problem


def test_a_control_recorded_twice_is_a_problem() -> None:
    results = parse_compliance(jsonl(LINE, {**LINE, "result": "pass"}))
    assert "line 2 repeats control SWY-SSH-2" in results.problem


def test_an_empty_file_is_a_problem() -> None:
    assert parse_compliance(b"\n").problem.endswith("holds no control results")


def test_patch_changes_read_with_from_and_to() -> None:
    data = {
        "patch_level": "2026.11",
        "snapshot": "20261110T235959Z",
        "changes": [{"package": "openssl", "from": "3.0.14-1~deb12u2", "to": "3.0.15-1~deb12u1"}],
        "reason": "",
    }
    record = parse_patch_record(json.dumps(data).encode(), "2026.11")
    assert record.changes == (PatchChange(package="openssl", before="3.0.14-1~deb12u2", after="3.0.15-1~deb12u1"),)
    markdown = patch_markdown(record)
    assert "## Patches (patch level 2026.11 from the package snapshot `20261110T235959Z`)" in markdown
    assert "| openssl | 3.0.14-1~deb12u2 | 3.0.15-1~deb12u1 |" in markdown


def test_an_unreadable_patch_record_says_so() -> None:
    record = parse_patch_record(b"{not json", "2026.11")
    assert record.changes == () and "is unreadable" in record.reason


def test_the_report_states_the_reason_when_there_is_nothing_to_show() -> None:
    local = PatchRecord(patch_level="2026.11", reason="local build: the staging root has no package manager")
    assert "No package changes to show: local build: the staging root has no package manager." in patch_markdown(local)
    assert "No package needed an update" in patch_markdown(PatchRecord(patch_level="2026.11"))
    added = PatchRecord(patch_level="2026.11", changes=(PatchChange(package="linux-image-6.1", after="6.1.115"),))
    assert "| linux-image-6.1 | (new) | 6.1.115 |" in patch_markdown(added)
