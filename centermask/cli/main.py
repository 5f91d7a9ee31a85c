"""The ``centermask`` command: ``centermask COMMAND [options]``.

Each command runs the same code, with the same options, as its script in ``tools/``:

=============  =================================  ============================================
command        script                             module
=============  =================================  ============================================
train          tools/train_net.py                 :mod:`centermask.cli.train_net`
eval           tools/train_net.py --eval-only     :mod:`centermask.cli.train_net`
demo           tools/demo.py                      :mod:`centermask.cli.demo`
export         tools/deploy/export_model.py       :mod:`centermask.cli.export_model`
benchmark      tools/analysis/benchmark.py        :mod:`centermask.cli.benchmark`
quickstart     tools/quickstart.py                :mod:`centermask.cli.quickstart`
zoo            -                                  :mod:`centermask.cli.zoo`
=============  =================================  ============================================

Errors: see :mod:`centermask.cli.common` (one line and exit status 2 for a user's mistake,
``--debug`` or ``CENTERMASK_DEBUG=1`` for the traceback).
"""

import argparse
import functools
import importlib
import importlib.metadata
import os
import sys
from typing import Callable, Dict, List, NamedTuple, Optional

from centermask.cli.common import OMP_ENVIRONMENT, run_command

__all__ = ["COMMANDS", "build_parser", "main"]


class Command(NamedTuple):
    module: str
    help: str
    parser_options: Dict[str, bool] = {}


COMMANDS: Dict[str, Command] = {
    "train": Command("centermask.cli.train_net", "train a model (tools/train_net.py)"),
    "eval": Command(
        "centermask.cli.train_net",
        "evaluate a model (tools/train_net.py --eval-only)",
        {"eval_only": True},
    ),
    "demo": Command("centermask.cli.demo", "draw a model's predictions on images or a video"),
    "export": Command(
        "centermask.cli.export_model", "export to ONNX (float32, int8) or TorchScript"
    ),
    "benchmark": Command("centermask.cli.benchmark", "time inference or training"),
    "quickstart": Command(
        "centermask.cli.quickstart", "train and evaluate a small model on CPU, in 15 minutes"
    ),
    "zoo": Command("centermask.cli.zoo", "list the published models, download one"),
}

EPILOG = """
Examples:

  centermask zoo list
  centermask demo --config-file centermask://centermask_lite_V_39_eSE_FPN_ms_4x \\
      --input photo.jpg --output out/
  centermask quickstart
  centermask train --config-file configs/centermask/centermask_lite_V_39_eSE_FPN_ms_4x.yaml \\
      --num-gpus 8
  centermask COMMAND --help

--config-file takes a path or a published model's name (centermask://NAME, centermask/NAME,
condinst/NAME), which also gives the published weights unless MODEL.WEIGHTS (export, benchmark:
--weights) is given. A mistake on the command line (a missing file, an offline download, a wrong
config key or value) prints one line and exits with status 2; --debug (or CENTERMASK_DEBUG=1)
shows its traceback. The published weights keep their authors' terms (non-commercial).
"""


def _module(name: str):
    return importlib.import_module(COMMANDS[name].module)


def _version() -> str:
    try:
        return importlib.metadata.version("centermask")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: one sub-parser per command, holding its script's options."""
    parser = argparse.ArgumentParser(
        prog="centermask",
        description="CenterMask, CondInst and CenterMask-PR on Detectron2.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"centermask {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        own = _module(name).build_parser(prog=f"centermask {name}", **command.parser_options)
        commands.add_parser(
            name,
            parents=[own],
            add_help=False,  # the script's parser brings -h
            help=command.help,
            description=own.description,
            epilog=own.epilog,
            formatter_class=own.formatter_class,
        )
    return parser


def _restart_with_omp_environment(argv: List[str]) -> None:
    """Restart this process (same command line) with :data:`OMP_ENVIRONMENT` where it is not
    set: the OpenMP runtime read the environment when ``import centermask`` loaded torch. The
    process keeps its start time, so the quickstart's budget still counts from the first start."""
    missing = {key: value for key, value in OMP_ENVIRONMENT.items() if key not in os.environ}
    if not missing:
        return
    os.environ.update(missing)
    if os.name == "posix":  # elsewhere the spawned training processes still inherit it
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "centermask.cli.main", *argv])


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``centermask ARGV`` (default: the process's command line); returns the exit status."""
    from_command_line = argv is None
    if from_command_line:
        argv = sys.argv[1:]
        if argv[:1] == ["quickstart"]:
            _restart_with_omp_environment(argv)
    args = build_parser().parse_args(argv)
    function: Callable[[argparse.Namespace], int] = _module(args.command).command
    if args.command == "quickstart" and from_command_line:
        function = functools.partial(function, started=_module("quickstart").process_start())
    return run_command(f"centermask {args.command}", function, args)


if __name__ == "__main__":
    sys.exit(main())
