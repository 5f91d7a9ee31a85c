"""Writing files so that a reader (or a run killed half-way) never sees a partial one."""

import errno as errno_codes
import os
import tempfile
from typing import IO, Any, Callable, Optional

__all__ = ["atomic_write", "named_write_error"]


def named_write_error(error: OSError, path: str, detail: str = "") -> OSError:
    """An ``OSError`` with ``error``'s errno whose message names ``path`` and the reason, plus
    ``detail``: ``[Errno 28] Cannot write PATH: No space left on device. DETAIL``."""
    code = error.errno if error.errno is not None else errno_codes.EIO
    reason = error.strerror or str(error) or type(error).__name__
    message = f"Cannot write {path}: {reason}"
    return OSError(code, message + (f". {detail}" if detail else ""))


class _RecordingFile:
    """A file whose first write error is kept: libraries that write through it (torch.save)
    may re-raise it as another exception type, without its errno."""

    def __init__(self, file: IO):
        self._file = file
        self.error: Optional[OSError] = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


_KEPT = "The file it would replace (if any) is unchanged."


def atomic_write(
    path: str, write: Callable[[IO], None], mode: str = "wb", failure_note: str = _KEPT
) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, flush it to disk, then rename it to
    ``path``; on any error the temporary file is removed and ``path`` is left as it was.

    A failing write (a full disk, a read-only folder, ...) raises an ``OSError`` that names
    ``path`` and the errno, also when the writer (e.g. ``torch.save``) turned it into another
    exception type; its message ends with ``failure_note``."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise named_write_error(e, path, failure_note) from e
    recording = None
    try:
        with os.fdopen(fd, mode) as f:
            recording = _RecordingFile(f)
            write(recording)
            recording.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass  # already renamed, or the folder refuses even that
        cause = recording.error if recording is not None else None
        if cause is None and isinstance(e, OSError):
            cause = e
        if cause is not None:
            raise named_write_error(cause, path, failure_note) from e
        raise
