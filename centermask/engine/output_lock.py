"""One training run per output folder: a lock file that names its owner.

A training run writes checkpoints, ``last_checkpoint``, ``metrics.json`` and TensorBoard events
into ``OUTPUT_DIR``; two runs in one folder overwrite each other's files. The run's main process
therefore creates ``<OUTPUT_DIR>/.centermask_train.lock`` (``O_CREAT | O_EXCL``: exactly one
creator wins) holding its host name and process id, and removes it when training ends or the
process exits. A second run fails at once with an error naming the folder and the owner.

A lock left behind by a run that died without removing it (killed with SIGKILL, a machine
crash) is taken over when its owner is known to be gone: same host and no process with its pid.
A lock of **another host** is never taken over, because whether that process still runs cannot
be told from here: the error says so and names the file to delete once that run is known to be
over. An unreadable lock file is treated the same way.
"""

import atexit
import errno
import json
import logging
import os
import socket
import time
from typing import Dict, Optional

__all__ = [
    "LOCK_FILE",
    "OutputFolderLocked",
    "OutputLock",
    "lock_output_dir",
    "release_output_locks",
    "unlock_output_dir",
]

logger = logging.getLogger(__name__)

LOCK_FILE = ".centermask_train.lock"


class OutputFolderLocked(RuntimeError):
    """Another live run holds the output folder's lock."""


def _start_ticks(pid: int) -> Optional[int]:
    """When process ``pid`` started (clock ticks since boot, Linux); None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _owner_alive(owner: Dict) -> bool:
    """Whether the process of ``owner`` (of this host) still runs: its pid exists and, where
    the start time is known, it started when the owner did (not a new process with its pid)."""
    pid = owner["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    recorded, now = owner.get("start_ticks"), _start_ticks(pid)
    return recorded is None or now is None or recorded == now


def _read_owner(path: str) -> Optional[Dict]:
    try:
        with open(path) as f:
            owner = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return None
    return owner


def _describe(owner: Optional[Dict]) -> str:
    if owner is None:
        return "an unknown owner (the lock file cannot be read)"
    started = owner.get("started")
    when = f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
    return f"process {owner['pid']} on host {owner.get('host')!r}" + (when if started else "")


class OutputLock:
    """The lock on one output folder; :meth:`acquire` takes it, :meth:`release` gives it back.

    Re-acquiring a lock this process already holds is a no-op (e.g. a training started twice in
    one Python session).
    """

    def __init__(self, folder: str):
        self.folder = os.path.abspath(folder)
        self.path = os.path.join(self.folder, LOCK_FILE)
        self.held = False
        self._me = {"host": socket.gethostname(), "pid": os.getpid()}

    def _is_mine(self, owner: Optional[Dict]) -> bool:
        return owner is not None and all(owner.get(k) == v for k, v in self._me.items())

    def _create(self) -> bool:
        """Create the lock file with our identity; False when it already exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as e:
            raise OSError(
                e.errno,
                f"Cannot create the output folder lock {self.path}: {e.strerror} "
                f"(errno {e.errno})",
            ) from e
        with os.fdopen(fd, "w") as f:
            json.dump(
                {**self._me, "start_ticks": _start_ticks(os.getpid()), "started": time.time()}, f
            )
        return True

    def _take_over(self, owner: Dict) -> bool:
        """Remove a stale lock of a dead process of this host (by renaming it first, so that of
        two processes taking it over at once only one removes it); then try to create ours."""
        stale = f"{self.path}.stale.{os.getpid()}"
        try:
            os.rename(self.path, stale)
        except FileNotFoundError:
            return self._create()  # another process removed it just now
        if _read_owner(stale) != owner:  # replaced by a new owner between our read and rename
            os.rename(stale, self.path)
            return False
        os.remove(stale)
        logger.warning(
            f"Took over the lock of {self.folder} from {_describe(owner)}, which no longer runs"
        )
        return self._create()

    def acquire(self) -> "OutputLock":
        """Take the lock, or raise :class:`OutputFolderLocked` naming the folder and owner."""
        os.makedirs(self.folder, exist_ok=True)
        for _ in range(3):  # a lock released or taken over by another process in between
            if self._create():
                self.held = True
                return self
            owner = _read_owner(self.path)
            if self._is_mine(owner):
                self.held = True
                return self
            same_host = owner is not None and owner.get("host") == self._me["host"]
            if same_host and not _owner_alive(owner):
                if self._take_over(owner):
                    self.held = True
                    return self
                continue
            break
        hint = (
            "Use another OUTPUT_DIR, or wait for that run to end."
            if same_host
            else f"If that run is over, delete {self.path} and start again (a lock of another "
            "host, or an unreadable one, is never taken over automatically)."
        )
        raise OutputFolderLocked(
            f"The output folder {self.folder} is in use by another training run: "
            f"{_describe(owner)} holds {self.path}. {hint}"
        )

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if not self.held:
            return
        self.held = False
        if self._is_mine(_read_owner(self.path)):
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno != errno.ENOENT:
                    logger.warning(f"Could not remove the lock {self.path}: {e}")

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# Locks taken by lock_output_dir, released at interpreter exit (and by release_output_locks).
_HELD: Dict[str, OutputLock] = {}


def lock_output_dir(folder: str) -> OutputLock:
    """Take the lock of ``folder`` for this process until it exits (or :func:`unlock_output_dir`,
    :func:`release_output_locks`); raises :class:`OutputFolderLocked` if another run holds it."""
    lock = _HELD.get(os.path.abspath(folder)) or OutputLock(folder)
    lock.acquire()
    _HELD[lock.folder] = lock
    return lock


def unlock_output_dir(folder: str) -> None:
    """Release the lock :func:`lock_output_dir` took on ``folder`` (no-op if it took none)."""
    lock = _HELD.pop(os.path.abspath(folder), None)
    if lock is not None:
        lock.release()


def release_output_locks() -> None:
    """Release every lock taken by :func:`lock_output_dir` in this process."""
    while _HELD:
        _HELD.popitem()[1].release()


atexit.register(release_output_locks)
