"""Suite-wide guards for the end of a run.

A CI run once printed its summary and then did not exit until CI's time limit. Two things can keep a
finished pytest alive: a child process that outlived its test (a server, a browser) holding CI's pipes
or its container, and a thread the interpreter waits for at exit. So, after the summary, leftover
descendants are listed and ended, and if the interpreter has still not exited after a grace period,
every thread's stack is printed and the process exits with status 1: the run fails with the reason on
screen instead of hanging.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import time
from pathlib import Path

import pytest

EXIT_GRACE_S = 120
TERM_GRACE_S = 5.0


def _descendants(root: int) -> list[int]:
    """Every live descendant of ``root``, read from /proc (parents before children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the fields after it are fixed.
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:200] or "?"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2] != "Z"  # a zombie has exited; only its parent's wait is missing


def _end_leftover_processes() -> None:
    if not Path("/proc").is_dir():
        return
    leftovers = [pid for pid in _descendants(os.getpid()) if _alive(pid)]
    if not leftovers:
        return
    print(f"\nprocesses left running by the suite ({len(leftovers)}), ending them:", file=sys.stderr)
    for pid in leftovers:
        print(f"  {pid}: {_command(pid)}", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + TERM_GRACE_S
    while time.monotonic() < deadline and any(_alive(pid) for pid in leftovers):
        time.sleep(0.1)
    for pid in leftovers:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    _end_leftover_processes()
    # From here on only interpreter shutdown is left; if it does not finish, say where it hangs.
    faulthandler.dump_traceback_later(EXIT_GRACE_S, exit=True, file=sys.stderr)
