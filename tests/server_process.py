"""A server started as a real subprocess, whose output lines the test can wait for."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
# Generous: a safety net so a broken server fails the test instead of hanging it.
PATIENCE = 20.0


class ServerProcess:
    """``python ARGS...`` run from the repository root with the given settings module.

    stdout and stderr are merged and read line by line by a thread, so the test can wait
    for a line without blocking on a pipe. Leaving the ``with`` block kills the process
    if it still runs.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        settings: str = "tests.serverproject.settings",
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own process group, so that a server's children (the autoreloader's
            # server process) are killed with it if the test fails.
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for_line(self, needle: str) -> str:
        """The first line from now on that contains ``needle``."""
        line = self.poll_for_line(needle, PATIENCE)
        if line is None:
            raise AssertionError(f"no line with {needle!r}; output: {self.output}")
        return line

    def poll_for_line(self, needle: str, timeout: float) -> str | None:
        """Like :meth:`wait_for_line`, but ``None`` if no such line comes in ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                raise AssertionError(
                    f"server exited ({self.process.wait()}) before printing {needle!r}; "
                    f"output: {self.output}"
                )
            self.lines.append(line)
            if needle in line:
                return line

    def send_signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self) -> int:
        """The exit code, once the process has ended and all its output is read."""
        code = self.process.wait(timeout=PATIENCE)
        self._reader.join(timeout=PATIENCE)
        while (line := self._new.get_nowait() if not self._new.empty() else None) is not None:
            self.lines.append(line)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
