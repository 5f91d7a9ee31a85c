"""Stopping training on SIGTERM / SIGINT without losing work, and resuming where it stopped.

Cluster schedulers preempt jobs with SIGTERM (a grace period, then SIGKILL); Ctrl-C sends
SIGINT. During training, :class:`PreemptionHook` turns the first of these signals into a clean
stop:

1. the current iteration finishes (the handler only records the signal);
2. after it, every process agrees to stop at that same iteration (an all-reduce of the stop flag,
   one number, every iteration), the main process writes ``model_<iteration>.pth`` atomically
   and points ``last_checkpoint`` at it;
3. training ends with :class:`TrainingPreempted`, whose message says where the checkpoint is;
   ``tools/train_net.py`` exits with :data:`PREEMPTED_EXIT_CODE` (75, ``EX_TEMPFAIL``: "try
   again later").

A second signal exits at once (exit status 128 + the signal number): the checkpoint being
written, if any, is a temporary file that never replaces a complete one, so the last complete
checkpoint and its pointer are untouched. ``--resume`` continues from the checkpoint with the
time budget's remaining time (its state is in the checkpoint) and the same data order
(:func:`skip_consumed_indices`).
"""

import functools
import itertools
import logging
import os
import signal
import threading
from typing import Any, Dict, Optional, Sequence

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "PreemptionHook",
    "TrainingPreempted",
    "skip_consumed_indices",
    "stop_signals",
]

logger = logging.getLogger(__name__)

# sysexits.h EX_TEMPFAIL: a temporary failure, the user is invited to retry (with --resume).
PREEMPTED_EXIT_CODE = 75
# Set by the CPU launcher in its workers: it forwards SIGINT / SIGTERM to them as SIGTERM, so a
# worker ignores the SIGINT a terminal's Ctrl-C also sends it directly (that would count twice).
SIGNALS_FORWARDED_ENV = "CENTERMASK_SIGNALS_FORWARDED"


class TrainingPreempted(BaseException):
    """Training stopped on a signal after writing a checkpoint; ``--resume`` continues it.

    A ``BaseException`` (like ``KeyboardInterrupt``), so that no ``except Exception`` of the
    training loop treats the requested stop as a failure.
    """

    def __init__(self, message: str, checkpoint: Optional[str] = None):
        super().__init__(message)
        self.checkpoint = checkpoint


def stop_signals() -> Sequence[int]:
    """The signals that stop training in this process: SIGTERM and SIGINT, or SIGTERM alone in
    a worker of the CPU launcher (which forwards both as SIGTERM)."""
    if os.environ.get(SIGNALS_FORWARDED_ENV) == "1":
        return (signal.SIGTERM,)
    return (signal.SIGTERM, signal.SIGINT)


class PreemptionHook(HookBase):
    """Stop after the current iteration on SIGTERM / SIGINT, with a checkpoint.

    Register it last, so that the iteration's other hooks (LR schedule, time budget, periodic
    checkpoint, writers) have run when it stops. Signal handlers can only be installed from the
    main thread; elsewhere the hook does nothing.

    Args:
        checkpointer: writes the checkpoint (an :class:`~.AtomicCheckpointer`).
        signals: the signals handled (default :func:`stop_signals`).
    """

    def __init__(self, checkpointer, signals: Optional[Sequence[int]] = None):
        self.checkpointer = checkpointer
        self.signals = tuple(stop_signals() if signals is None else signals)
        self.received: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            os.write(2, f"\nSecond {signal.Signals(signum).name}: exiting now.\n".encode())
            os._exit(128 + signum)
        self.received = signum
        # Logging from a signal handler can deadlock on the handler's lock: write directly.
        os.write(
            2,
            f"\n{signal.Signals(signum).name} received: stopping after this iteration with a "
            "checkpoint (send it again to exit at once).\n".encode(),
        )

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        if os.environ.get(SIGNALS_FORWARDED_ENV) == "1":
            self._previous.setdefault(signal.SIGINT, signal.signal(signal.SIGINT, signal.SIG_IGN))

    def _restore(self) -> None:
        while self._previous:
            signum, handler = self._previous.popitem()
            signal.signal(signum, handler)

    def before_train(self):
        self.received = None
        self._install()

    def _stop_requested(self) -> bool:
        if comm.get_world_size() == 1:
            return self.received is not None
        on_cuda = dist.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if on_cuda else "cpu"
        flag = torch.tensor([0 if self.received is None else self.received], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if self.received is None and flag.item():
            self.received = int(flag.item())  # another process got the signal
        return bool(flag.item())

    def after_step(self):
        iteration = self.trainer.iter
        if self._stop_requested():
            self._stop(iteration)
        if iteration + 1 >= self.trainer.max_iter:
            # Training is over: the final checkpoint is written (by the checkpoint hook, before
            # this one); a signal during the final evaluation acts as it does without the hook.
            self._restore()

    def _stop(self, iteration: int) -> None:
        name = f"model_{iteration:07d}"
        self.checkpointer.save(name, iteration=iteration)
        comm.synchronize()  # no process exits before the checkpoint is complete
        self._restore()
        self.trainer.failed = True  # no final checkpoint or evaluation of an unfinished run
        path = os.path.join(self.checkpointer.save_dir, f"{name}.pth")
        signame = signal.Signals(self.received).name
        message = (
            f"Training stopped by {signame} after iteration {iteration}; checkpoint written to "
            f"{path}. Start the same command with --resume to continue from it."
        )
        logger.warning(message)
        raise TrainingPreempted(message, checkpoint=path)

    def after_train(self):
        self._restore()


def _skipped(infinite_indices, sampler, count: int):
    return itertools.islice(infinite_indices(sampler), count, None)


def _find_sampler(data_loader) -> Optional[Any]:
    """The index sampler (detectron2's ``TrainingSampler`` or ``RepeatFactorTrainingSampler``)
    under detectron2's train loader: AspectRatioGroupedDataset -> DataLoader -> ToIterableDataset.
    """
    node = data_loader
    for _ in range(6):
        sampler = getattr(node, "sampler", None)
        if sampler is not None and hasattr(type(sampler), "_infinite_indices"):
            return sampler
        node = getattr(node, "dataset", None)
        if node is None:
            return None
    return None


def skip_consumed_indices(data_loader, count: int) -> bool:
    """Make the sampler of detectron2's train ``data_loader`` start ``count`` indices into its
    (seeded, infinite) index stream: the images a resumed run has already trained on.

    Call it before the loader's iterator is (re)created. Returns False, with a warning, when the
    loader has no such sampler. Without aspect-ratio grouping the resumed batches are those the
    uninterrupted run would have drawn; with it, the images waiting in its buckets at the stop
    are skipped and the batches that follow may group differently.
    """
    sampler = _find_sampler(data_loader)
    if sampler is None:
        logger.warning("Resuming without the data order: the train loader has no known sampler")
        return False
    sampler._infinite_indices = functools.partial(
        _skipped, type(sampler)._infinite_indices, sampler, count
    )
    return True
