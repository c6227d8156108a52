"""One cycle of a project at a time, across processes: an advisory file lock.

The lock is ``<data_dir>/<project>.lock``, held with ``flock`` for the whole
cycle. The kernel drops it when its holder dies, even by SIGKILL, so a crash
never leaves a project locked; the next cycle takes it and resumes.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from orchestrator.domain.models import utcnow


class CycleLock:
    """The exclusive right to run a cycle of one project."""

    def __init__(self, data_dir: Path, project: str) -> None:
        self.path = data_dir / f"{project}.lock"
        self._fd: int | None = None

    def acquire(self, wait: bool = False) -> bool:
        """Take the lock; without ``wait``, False at once if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {utcnow()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """Who holds (or last held) the lock, as its holder wrote it."""
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
