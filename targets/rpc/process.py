"""A background process group with a log file: started, waited on, always stopped as a whole."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from collections.abc import Callable

from tvm_mpq.errors import MpqError


class ManagedProcess:
    """``argv`` in its own session (process group), stdout+stderr to ``log_path``.

    ``stop()`` signals the whole group (TVM's RPC server forks a worker and one process per
    session; under QEMU each of them is a ``qemu-aarch64`` process), so nothing outlives it.
    """

    def __init__(self, argv: list[str], name: str, env: dict[str, str] | None = None,
                 log_path: Path | None = None, cwd: Path | None = None) -> None:
        self.name = name
        if log_path is None:
            fd, tmp = tempfile.mkstemp(prefix=f"tvm-mpq-{name.replace(' ', '-')}-", suffix=".log")
            os.close(fd)
            log_path = Path(tmp)
        self.log_path = log_path
        self._log = log_path.open("ab")
        try:
            self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=cwd, start_new_session=True)
        except OSError as err:
            self._log.close()
            raise MpqError(f"cannot start {name}: {argv[0]}: {err.strerror or err}") from None

    @property
    def pid(self) -> int:
        """The leader's process id (also the process group id)."""
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the leader process is still running."""
        return self.proc.poll() is None

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def last_line(self) -> str:
        """The last non-empty line of the log (for one-line error messages)."""
        lines = [ln.strip() for ln in self.log_text().splitlines() if ln.strip()]
        return lines[-1] if lines else "no output"

    def wait_for(self, check: Callable[[], object], timeout: float, what: str, period: float = 0.2) -> object:
        """Poll ``check()`` until it returns a truthy value; MpqError if the process exits or
        ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if not self.alive():
                raise MpqError(f"{self.name} exited (code {self.proc.returncode}) before {what}: "
                               f"{self.last_line()}")
            if time.monotonic() > deadline:
                raise MpqError(f"{self.name} not {what} after {timeout:g} s: {self.last_line()}")
            time.sleep(period)

    def wait_for_log(self, pattern: str, timeout: float, what: str) -> re.Match:
        """The first match of ``pattern`` in the log, waiting for it like :meth:`wait_for`."""
        regex = re.compile(pattern)
        return self.wait_for(lambda: regex.search(self.log_text()), timeout, what)  # type: ignore[return-value]

    def stop(self, grace: float = 3.0, remove_log: bool = True) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``grace`` seconds; idempotent.
        The log file is removed unless ``remove_log`` is False (kept for an error message)."""
        pgid = self.proc.pid
        if group_alive(pgid):
            _killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.proc.poll() is None or group_alive(pgid):
                if time.monotonic() > deadline:
                    _killpg(pgid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        if remove_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies waiting to be reaped by
    init do not count: they hold no port and no memory)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False
