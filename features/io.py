"""Write outputs so that a reader never sees half a file: temp name, then rename.

:class:`AtomicPath` is the one implementation; :func:`atomic_output` wraps it for a block that
writes a file or a directory in one go, and the batch job's file sinks stream chunks into it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


class AtomicPath:
    """A temporary path beside ``target`` (``.<name>.tmp-<pid>``, same directory, so the final
    ``os.replace`` is atomic on POSIX) that takes ``target``'s place only on :meth:`replace`.

    Until then ``target`` (new or previous) is untouched; :meth:`abort` removes the temporary.
    """

    def __init__(self, target: Path) -> None:
        self.target = Path(target)
        self.tmp = self.target.with_name(f".{self.target.name}.tmp-{os.getpid()}")

    def prepare(self) -> Path:
        """Create the parent directory, remove temporaries of runs that were killed (their pid
        is gone) and any of our own; returns the temporary path to write."""
        self.target.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.target.parent.glob(f".{self.target.name}.tmp-*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                _remove(stale)
        _remove(self.tmp)
        return self.tmp

    def sync(self) -> None:
        """Flush the written temporary file to disk (directories are left to the rename)."""
        if self.tmp.is_file():
            with open(self.tmp, "rb") as fh:
                os.fsync(fh.fileno())

    def replace(self) -> None:
        """Move the temporary onto ``target``; a directory replaces a directory through a
        side name, as one cannot replace a non-empty one atomically."""
        if not self.tmp.exists():
            raise FileNotFoundError(f"nothing was written to {self.tmp}")
        if self.tmp.is_dir() and self.target.is_dir():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, old)
            os.replace(self.tmp, self.target)
            _remove(old)
        else:
            os.replace(self.tmp, self.target)
        _fsync_dir(self.target.parent)

    def abort(self) -> None:
        _remove(self.tmp)


@contextlib.contextmanager
def atomic_output(out: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``out``; rename it onto ``out`` only if the block succeeds.

    On any error the temporary is removed and ``out`` (new or previous) is left untouched.
    """
    atomic = AtomicPath(out)
    tmp = atomic.prepare()
    try:
        yield tmp
        atomic.sync()
        atomic.replace()
    except BaseException:
        atomic.abort()
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
