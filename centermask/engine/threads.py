"""Choosing the number of intra-op CPU threads for training by timing it, again and again.

On a small machine shared with other processes, one thread per core can be slower than fewer
threads (the threads wait for descheduled siblings), and which is faster changes when the other
processes come and go. A choice made once at start-up, in a busy moment, can halve a whole run;
:class:`ThreadChoice` makes it during training and revisits it when the speed drifts.
"""

import logging
import os
import statistics
import time
from collections import deque
from typing import Callable, Dict, List, Optional, Sequence

import torch
from detectron2.engine import HookBase

__all__ = ["ThreadChoice", "default_thread_candidates"]

logger = logging.getLogger(__name__)


def default_thread_candidates(cores: Optional[int] = None) -> List[int]:
    """One thread per core and half as many (1 and 2 on a 2-core machine)."""
    cores = cores or os.cpu_count() or 1
    return sorted({cores, max(1, cores // 2)}, reverse=True)


def _model_on_cuda(model) -> bool:
    if not isinstance(model, torch.nn.Module):
        return False
    return any(p.is_cuda for p in model.parameters())


class ThreadChoice(HookBase):
    """Trains with the thread count whose iterations are fastest, measured during training.

    A *trial* runs ``trial_iterations`` iterations with each candidate, interleaved (a, b, a, b,
    ...) so that a change of load during the trial affects them alike, and keeps the candidate
    with the lowest median iteration time. A trial starts at the beginning of training (its
    first iteration, slow while memory is allocated, is not timed), again when the median of the
    last ``window`` iterations differs from the chosen candidate's trial median by more than the
    factor ``1 + drift`` either way (slower: another process may have started; faster: one may
    have ended, and more threads may now pay), and at the latest every ``recheck_every``
    iterations. ``choices`` records every decision as (iteration, threads, {threads: median s}).
    """

    def __init__(
        self,
        candidates: Optional[Sequence[int]] = None,
        *,
        trial_iterations: int = 4,
        window: int = 10,
        drift: float = 0.2,
        recheck_every: int = 300,
        clock: Callable[[], float] = time.perf_counter,
        set_threads: Callable[[int], None] = torch.set_num_threads,
    ):
        self.candidates = list(candidates or default_thread_candidates())
        if not self.candidates or min(self.candidates) < 1:
            raise ValueError(f"thread candidates must be positive counts, got {self.candidates}")
        self.trial_iterations = trial_iterations
        self.drift = drift
        self.recheck_every = recheck_every
        self._clock = clock
        self._set_threads = set_threads
        self._recent = deque(maxlen=window)
        self._plan: deque = deque()  # thread counts of the trial iterations still to run
        self._trial: Dict[int, List[float]] = {}
        self.threads = self.candidates[0]
        self._reference: Optional[float] = None
        self._since_choice = 0
        self._running: Optional[int] = None  # the count last set
        self.choices: list = []
        self.idle = False  # True for a model on CUDA (set before training)

    def _start_trial(self) -> None:
        self._plan = deque(self.candidates * self.trial_iterations)
        self._trial = {n: [] for n in self.candidates}

    def before_train(self):
        self.idle = _model_on_cuda(getattr(self.trainer, "model", None))
        if self.idle:
            # CPU threads do not set the speed of a model on the GPU: timing them would only
            # switch thread counts back and forth on noise.
            logger.info("The model is on CUDA: the CPU thread count is left as it is")
            return
        if len(self.candidates) > 1:
            self._start_trial()

    def before_step(self):
        if self.idle:
            return
        threads = self._plan[0] if self._plan else self.threads
        if threads != self._running:
            self._set_threads(threads)
            self._running = threads
        self._tic = self._clock()

    def after_step(self):
        if self.idle:
            return
        seconds = self._clock() - self._tic
        if self.trainer.iter == self.trainer.start_iter:
            return  # allocations and lazy initialisation: not representative
        if self._plan:
            self._plan.popleft()
            self._trial[self._running].append(seconds)
            if not self._plan:
                self._choose()
            return
        self._recent.append(seconds)
        self._since_choice += 1
        if self._drifted() or (
            len(self.candidates) > 1 and self._since_choice >= self.recheck_every
        ):
            self._start_trial()

    def _drifted(self) -> bool:
        if self._reference is None or len(self._recent) < self._recent.maxlen:
            return False
        ratio = statistics.median(self._recent) / self._reference
        return len(self.candidates) > 1 and not 1 / (1 + self.drift) <= ratio <= 1 + self.drift

    def _choose(self) -> None:
        medians = {n: statistics.median(times) for n, times in self._trial.items()}
        self.threads = min(medians, key=medians.get)
        self._reference = medians[self.threads]
        self._recent.clear()
        self._since_choice = 0
        self.choices.append((self.trainer.iter, self.threads, medians))
        logger.info(
            "Seconds per iteration by thread count: "
            + ", ".join(f"{n}: {t:.2f}" for n, t in medians.items())
            + f"; training with {self.threads} (iteration {self.trainer.iter})"
        )
