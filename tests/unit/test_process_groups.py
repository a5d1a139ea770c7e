"""live_group_members(): what stopping a hook's, a build's or a scan's process group waits for. A
running member counts; a zombie does not (it runs nothing, and nobody may ever reap it); a group
with nothing left in it is empty."""

from __future__ import annotations

import subprocess
import time

from switchyard.stack.processes import live_group_members, proc_stat, stop_process_group


def test_a_running_member_counts_and_a_stopped_group_is_empty() -> None:
    process = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert live_group_members(process.pid) == [process.pid]
    finally:
        stop_process_group(process, grace_s=5)
    assert live_group_members(process.pid) == []


def test_a_zombie_is_not_a_live_member() -> None:
    process = subprocess.Popen(["true"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while (stat := proc_stat(process.pid)) is not None and stat.state != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        # Not reaped yet: the group still answers killpg(pgid, 0), but nothing in it runs.
        assert live_group_members(process.pid) == []
    finally:
        process.wait()
