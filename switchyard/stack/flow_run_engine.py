"""One flow run of the local work pool: Prefect's engine, leading a process group of its own.

The pool's `command` (switchyard/stack/up.py, flow_run_command). Prefect 3.9's process worker starts
a run in a session of its own only on its default path, through its workspace supervisor (a second
interpreter that imports Prefect before the engine does: over a CPU second per run). Given a command
instead, it starts the run in the worker's own process group. A run there cannot be stopped as a
whole, with what it started, without stopping the worker and every other run the worker holds, and
the pid Prefect records for it (`infrastructure_pid`) no longer names a group that is the run's alone
(the guard's end-to-end test kills that group, as a machine lost mid-release would).

So this starts a session, then becomes the engine: exec keeps the pid Prefect recorded. It costs an
interpreter start without imports, where the supervisor cost one with Prefect's.
"""

from __future__ import annotations

import contextlib
import os
import sys


def main() -> None:
    with contextlib.suppress(PermissionError):  # already a group leader: the group is its own already
        os.setsid()
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *sys.argv[1:]])


if __name__ == "__main__":
    main()
