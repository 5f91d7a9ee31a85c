"""What every command shares: ``--debug``, the one-line report of a user's mistake, the process
start time.

A user's mistake (:data:`USER_ERRORS`: a missing file, an offline download, a wrong config key or
value, a malformed data set, a damaged or unsafe checkpoint, an output folder in use) ends the
command with one line on stderr, ``<prog>: error: <message>``, and exit status
:data:`USER_ERROR_STATUS` (2, argparse's status for a bad command line): the message names the
file, key or value at fault and the fix.
``--debug``, or the environment variable ``CENTERMASK_DEBUG=1``, lets the exception through
with its traceback. Any other exception always keeps its traceback: it is a bug to report.
"""

import argparse
import os
import sys
import time
from typing import Any, Callable, List, Optional

from centermask.checkpoint import CheckpointLoadError
from centermask.data.coco_checks import CocoFormatError
from centermask.engine.output_lock import OutputFolderLocked
from centermask.model_zoo import ChecksumError, DownloadError

__all__ = [
    "DEBUG_ENV",
    "OMP_ENVIRONMENT",
    "USER_ERRORS",
    "USER_ERROR_STATUS",
    "UsageError",
    "add_debug_argument",
    "command_parser",
    "debug_enabled",
    "error_message",
    "parse_and_run",
    "process_start_seconds_ago",
    "run_command",
]

DEBUG_ENV = "CENTERMASK_DEBUG"
# The OpenMP settings the quickstart runs with: threads waiting for work sleep instead of spinning
# (read when torch loads the OpenMP runtime; see centermask.cli.quickstart).
OMP_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}
USER_ERROR_STATUS = 2


class UsageError(ValueError):
    """Options that do not go together (checked after parsing)."""


# yacs reports an unknown config key as a KeyError and a value of the wrong type as a
# ValueError; the package's own checks of config values, data sets and options raise
# ValueErrors naming the key or option (CocoFormatError, UsageError are ValueErrors); a
# checkpoint that cannot or must not be loaded, and an output folder in use by another run, are
# named by their own errors.
USER_ERRORS = (
    FileNotFoundError,
    PermissionError,
    DownloadError,
    ChecksumError,
    CocoFormatError,
    CheckpointLoadError,
    OutputFolderLocked,
    UsageError,
    KeyError,
    ValueError,
)


def command_parser(
    prog: Optional[str],
    description: str,
    epilog: str,
    config_file: Optional[str] = "",
) -> argparse.ArgumentParser:
    """A command's parser: ``description``, then ``epilog`` (the examples) as written, and
    ``--debug``; with ``config_file`` not None, ``--config-file`` too (required when
    ``config_file`` is "", else with that default)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if config_file is not None:
        parser.add_argument(
            "--config-file",
            required=not config_file,
            default=config_file or None,
            metavar="FILE",
            help="config file, or a model-zoo name (centermask://NAME: its config and, unless "
            "the weights are given, its published weights)"
            + (" (default: %(default)s)" if config_file else ""),
        )
    add_debug_argument(parser)
    return parser


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of an error (also: {DEBUG_ENV}=1)",
    )


def debug_enabled(args: argparse.Namespace) -> bool:
    """``--debug`` was given or ``$CENTERMASK_DEBUG`` is set to anything but 0 / empty."""
    return bool(getattr(args, "debug", False)) or os.getenv(DEBUG_ENV, "") not in ("", "0")


def error_message(error: BaseException) -> str:
    """The exception's message (a KeyError's without the quotes ``str`` adds)."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        return error.args[0]
    return str(error) or type(error).__name__


def run_command(
    prog: str, function: Callable[[argparse.Namespace], Any], args: argparse.Namespace
) -> int:
    """``function(args)`` as the command ``prog``: its result as exit status (None: 0), a user's
    mistake as one line on stderr and status 2 (unless :func:`debug_enabled`)."""
    try:
        status = function(args)
    except USER_ERRORS as e:
        if debug_enabled(args):
            raise
        print(f"{prog}: error: {error_message(e)}", file=sys.stderr, flush=True)
        return USER_ERROR_STATUS
    return int(status or 0)


def parse_and_run(
    parser: argparse.ArgumentParser,
    function: Callable[[argparse.Namespace], Any],
    argv: Optional[List[str]] = None,
) -> int:
    """Parse ``argv`` (default: the process's command line) with ``parser`` and
    :func:`run_command` ``function``."""
    return run_command(parser.prog, function, parser.parse_args(argv))


# The earliest time this module can observe without /proc: its own import.
_IMPORTED = time.time()


def process_start_seconds_ago() -> float:
    """Seconds since this process started (Linux: from ``/proc``, so the interpreter start-up and
    the imports count, and an ``exec`` keeps the original start), else since this module was
    imported."""
    try:
        with open("/proc/self/stat") as f:
            # The command name (field 2) may contain spaces; fields after it are space-separated.
            fields = f.read().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of proc(5): start time, clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED
