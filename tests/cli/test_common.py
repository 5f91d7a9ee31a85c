"""centermask.cli.common: which errors are a user's mistakes, and the process start time."""

import subprocess
import sys

from centermask.checkpoint import CheckpointLoadError, UnsafeCheckpointError
from centermask.cli.common import USER_ERRORS, error_message
from centermask.data.coco_checks import CocoFormatError
from centermask.engine.output_lock import OutputFolderLocked
from centermask.model_zoo import DownloadError


def test_user_errors_cover_the_mistakes_and_not_the_bugs():
    for error in (FileNotFoundError("x"), KeyError("k"), ValueError("v"), DownloadError("d"),
                  CocoFormatError("c")):  # fmt: skip
        assert isinstance(error, USER_ERRORS)
    for error in (RuntimeError("r"), AssertionError("a"), TypeError("t"), IndexError("i")):
        assert not isinstance(error, USER_ERRORS)


def test_unsafe_or_damaged_checkpoints_and_locked_folders_are_user_errors():
    for error in (UnsafeCheckpointError("w.pkl", "builtins.exec"),
                  CheckpointLoadError("w.pth", "empty"), OutputFolderLocked("in use")):  # fmt: skip
        assert isinstance(error, USER_ERRORS)


def test_a_key_error_message_loses_the_quotes_str_adds():
    assert error_message(KeyError("Non-existent key: MODEL.X")) == "Non-existent key: MODEL.X"
    assert error_message(ValueError("bad value")) == "bad value"


def test_the_process_start_counts_the_time_before_the_imports():
    """What the quickstart's budget counts from: the interpreter's start, not the import."""
    code = (
        "import time; time.sleep(2.0)\n"
        "from centermask.cli.common import process_start_seconds_ago\n"
        "print(process_start_seconds_ago())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) >= 2.0
