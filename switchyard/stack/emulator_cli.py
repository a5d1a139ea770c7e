"""`switchyard emulator ...`: the emulator's own command line, as a sub-app of switchyard's.

switchyard imports switchyard_emulator only in switchyard/stack (and tests): the emulator is a
distribution of its own that the local stack runs, and this is where the command line reaches it.
"""

from __future__ import annotations

from switchyard_emulator.cli import app

__all__ = ["app"]
