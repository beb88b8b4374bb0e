"""One trainer per run directory: an exclusive lock on `<out_dir>/.lock`, held for the process's life.

`RunLock(out_dir).acquire()` takes `fcntl.flock(LOCK_EX | LOCK_NB)` on the lock file and writes
{"pid", "host", "since" (UTC, ISO 8601), "process"} into it; the kernel drops the lock when the
process exits or crashes, so a stale file never blocks a new run. A second trainer on the same
directory gets `RunLockedError` at once, naming the holder (pid, host, since).

Where the filesystem cannot lock (`flock` fails with ENOLCK / EOPNOTSUPP, some network mounts),
the file's own contents decide: a holder on this host whose pid is gone is stale and replaced; a
live pid on this host, or any holder on another host, refuses (the message says which file to
delete if that trainer is gone).

Multi-host: every process locks its own file — process 0 `<out_dir>/.lock`, process i > 0
`<out_dir>/.lock.<i>` — so on a shared filesystem the processes of one job never contend with
each other, and every process of a second job on the same directory refuses at once (nothing
waits in a collective for a peer that exited).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_FILE = ".lock"
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


class RunLockedError(RuntimeError):
    """Another trainer holds the run directory; the message names it (pid, host, since)."""


def lock_path(out_dir, process_index: int = 0) -> Path:
    return Path(out_dir) / (LOCK_FILE if process_index == 0 else f"{LOCK_FILE}.{process_index}")


def _holder_text(info: dict, path: Path) -> str:
    if not info:
        return f"another process (lock {path})"
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')} "
            f"(lock {path})")


def _read(fd) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        return json.loads(raw.decode()) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # exists (another user's), or unreadable: assume alive
    return True


class RunLock:
    """The run directory's lock. acquire() -> self (raises RunLockedError or OSError); release()
    (also on process exit: the kernel releases a flock with the descriptor)."""

    def __init__(self, out_dir, process_index: int = 0):
        self.path = lock_path(out_dir, process_index)
        self.process_index = process_index
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # OSError (read-only, permission) propagates
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLockedError(f"{self.path.parent} is in use by another trainer: "
                                     f"{_holder_text(_read(fd), self.path)}") from None
            except OSError as e:
                if e.errno not in _NO_LOCKING:
                    raise
                self._check_contents(fd)  # no locking here: decide by pid / host
            me = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "process": self.process_index}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(me) + "\n").encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def _check_contents(self, fd) -> None:
        info = _read(fd)
        if not info or info.get("pid") == os.getpid():
            return
        if info.get("host") == socket.gethostname():
            if _pid_alive(info.get("pid")):
                raise RunLockedError(f"{self.path.parent} is in use by another trainer: "
                                     f"{_holder_text(info, self.path)}")
            return  # stale: its process is gone
        raise RunLockedError(f"{self.path.parent} may be in use by another trainer: {_holder_text(info, self.path)}; "
                             f"this filesystem cannot lock files, so if that trainer is gone delete {self.path}")

    def release(self) -> None:
        """Empty the file (no holder) and drop the lock."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
