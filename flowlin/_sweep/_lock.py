"""One writer per store: an OS-level lock on a file in the store folder. Internal API.

The lock is `fcntl.flock` (POSIX; `msvcrt.locking` on Windows) on `<store>/writer.lock`: the
operating system releases it when its holder exits, however it exits (Ctrl-C, SIGKILL, a
crash), so a stale lock never blocks a later sweep. The holder writes its pid, host and start
time into the file, for the message a second writer gets. Reading a store takes no lock.
"""

import datetime
import errno
import json
import os
import pathlib
import socket


#: The lock file inside a store folder.
LOCK_FILE = "writer.lock"


class StoreLockedError(RuntimeError):
    """Another process is writing to this store (it holds the store's lock file)."""


def this_process() -> dict:
    """Who holds a lock (or owns a temporary file): pid and host."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


#: The errors of a non-blocking lock that mean "another holder has it"; any other error is the
#: filesystem refusing locks (ENOLCK on NFS without lockd, ENOSYS on Lustre without flock).
_HELD = {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)}


def _try_lock(fd: int) -> bool:
    """True if the lock was taken, False if another holder has it; `OSError` if the
    filesystem cannot lock."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as e:
            if e.errno in _HELD:
                return False
            raise
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in _HELD:  # held by another open file (process)
            return False
        raise
    return True


class WriterLock:
    """The exclusive write lock of the store folder `folder` (see the module docstring)."""

    def __init__(self, folder):
        self.path = pathlib.Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, call: str) -> None:
        """Take the lock at once, or raise `StoreLockedError` naming its holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            taken = _try_lock(fd)
        except OSError as e:
            os.close(fd)
            raise StoreLockedError(
                f"`{call}`: cannot lock this store: its filesystem refused a file lock on "
                f"{str(self.path)!r} ({e.strerror or e}). flowlin locks a store so that two "
                "sweeps never write it at once; put the store on a filesystem with locks (a "
                "local disk; NFS with its lock service; Lustre mounted with flock)."
            ) from None
        if not taken:
            os.close(fd)
            raise StoreLockedError(
                f"`{call}`: another sweep is writing to this store ({self._holder()}; lock "
                f"file {str(self.path)!r}). Wait for it to finish, or use another store path; "
                "reading its results (flowlin.open_sweep) needs no lock."
            )
        self._fd = fd
        since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        info = json.dumps(dict(this_process(), since=since)).encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, info)
        os.fsync(fd)

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "its holder did not record itself yet"

    def release(self) -> None:
        """Release the lock (the file stays: deleting it would race with a new holder)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases flock/locking
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
