"""Training for a wall-clock budget (``SOLVER.TIME_BUDGET_MINUTES``) instead of an iteration count.

With a budget, the config's iteration schedule (``SOLVER.WARMUP_ITERS``, ``STEPS``, ``MAX_ITER``)
only gives the *shape* of the learning-rate schedule: warm-up ends when ``WARMUP_ITERS / MAX_ITER``
of the training time is used, the LR steps at ``STEPS / MAX_ITER`` of it (a cosine follows the
same fraction), and training ends when the time is used, however many iterations that is. A
machine that is slower, or that slows down as the detector starts to fire, trains fewer
iterations but still ends on time, with its whole schedule.

The pieces are detectron2 machinery:

* :class:`TimeBudget`, a hook that measures the time spent (earlier runs included: it is saved in
  the checkpoints), reserves time for the final evaluation from the measured iteration speed,
  publishes the fraction of the training time used (``progress``), and ends training after the
  last iteration that fits;
* :class:`TimeBudgetLRScheduler`, detectron2's ``LRMultiplier`` driven by that fraction;
* :class:`StoppableTrainLoop`, the training loop that ends cleanly when the hook says so: the
  final checkpoint, evaluation and writers run as after the last iteration of a fixed schedule.

A budget shorter than the final evaluation it must hold (the reserve computed from the speed of
the first 3 iterations is at least the whole budget) is refused then, with an error naming
``SOLVER.TIME_BUDGET_MINUTES`` and the estimated evaluation time: it could train nothing.
"""

import logging
import math
import statistics
import time
from collections import deque
from typing import Callable, Optional

import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog
from detectron2.engine import HookBase, TrainerBase
from detectron2.solver import LRMultiplier
from detectron2.utils import comm

__all__ = ["StoppableTrainLoop", "TimeBudget", "TimeBudgetLRScheduler", "TimeBudgetSpent"]

logger = logging.getLogger(__name__)

# A budget shorter than the evaluation it must hold is refused once this many iterations are
# timed (the first one, which warms up, alone would overestimate the reserve).
_TIMED_BEFORE_CHECK = 3
# fvcore's ParamSchedulers take the position in [0, 1); some reject 1.0 itself.
_LAST_POSITION = math.nextafter(1.0, 0.0)


class TimeBudgetSpent(BaseException):
    """Raised by :class:`TimeBudget` before the first iteration past the budget.

    A ``BaseException``, like ``KeyboardInterrupt``: detectron2's loop logs every ``Exception`` as
    a training failure, and this is the normal end of a time-budgeted run.
    """


class StoppableTrainLoop(TrainerBase):
    """The training loop of ``TrainerBase`` that ends quietly on :class:`TimeBudgetSpent`.

    Mixed in after a trainer class (``class Trainer(DefaultTrainer, StoppableTrainLoop)``) so that
    the trainer's own ``train()`` (result verification included) runs unchanged around it.
    """

    def train(self, start_iter: int, max_iter: int):
        try:
            super().train(start_iter, max_iter)
        except TimeBudgetSpent:
            pass  # after_train has run: final checkpoint, evaluation and writers


class TimeBudget(HookBase):
    """Ends training when its wall-clock budget is used; ``progress`` is the fraction used.

    The budget covers training and the final evaluation. The evaluation time is reserved from the
    measured speed: ``eval_images * eval_cost * seconds_per_iteration / images_per_batch``, i.e.
    ``eval_cost`` is the evaluation time of one test image relative to the training time of one
    training image. Seconds per iteration is the median of the last ``window`` iterations, so a
    slow iteration (a checkpoint, a periodic evaluation) does not move it, but a lasting change
    does. Training ends after the last iteration that is expected to end within the training time
    (budget minus reserve), by setting ``trainer.max_iter`` so that the checkpointer, evaluation
    and writers see the last iteration as such.

    Register it before the ``LRScheduler`` and checkpointer hooks: their ``after_step`` reads
    ``progress`` and ``trainer.max_iter`` of the same iteration. With several processes all
    follow the slowest one, so that they use the same LR and stop at the same iteration.
    """

    @configurable
    def __init__(
        self,
        *,
        seconds: float,
        eval_images: int = 0,
        eval_cost: float = 1.0,
        images_per_batch: int = 1,
        clock: Callable[[], float] = time.monotonic,
        window: int = 20,
        log_every: float = 0.1,
    ):
        """
        Args:
            seconds: the budget for training and the final evaluation.
            eval_images: test images evaluated after training (per test pass, times the passes).
            eval_cost: evaluation seconds per test image / training seconds per training image.
            images_per_batch: training images per iteration (all processes together).
            clock: returns seconds; injected by tests.
            window: iterations over which the median iteration time is taken.
            log_every: log the progress every this fraction of the training time.
        """
        if not seconds > 0:
            raise ValueError(f"TimeBudget needs a positive number of seconds, got {seconds}")
        self.seconds = float(seconds)
        self.eval_images = eval_images
        self.eval_cost = eval_cost
        self.images_per_batch = images_per_batch
        self._clock = clock
        self._durations = deque(maxlen=window)
        self._log_every = log_every
        # Saved in checkpoints: time used by the iterations done so far (this run and earlier).
        self.seconds_spent = 0.0
        self.seconds_per_iteration: Optional[float] = None
        self.progress = 0.0

    @classmethod
    def from_config(cls, cfg, clock: Callable[[], float] = time.monotonic):
        minutes = cfg.SOLVER.TIME_BUDGET_MINUTES
        if minutes <= 0:
            raise ValueError(f"SOLVER.TIME_BUDGET_MINUTES must be > 0 here, got {minutes}")
        passes = 1  # the evaluation after training, plus test-time augmentation if enabled
        if cfg.TEST.AUG.ENABLED:
            passes += len(cfg.TEST.AUG.MIN_SIZES) * (2 if cfg.TEST.AUG.FLIP else 1)
        return {
            "seconds": 60.0 * minutes,
            "eval_images": passes * sum(len(DatasetCatalog.get(n)) for n in cfg.DATASETS.TEST),
            "eval_cost": cfg.SOLVER.TIME_BUDGET_EVAL_COST,
            "images_per_batch": cfg.SOLVER.IMS_PER_BATCH,
            "clock": clock,
        }

    def eval_reserve(self, seconds_per_iteration: float) -> float:
        """Seconds kept for the final evaluation at this training speed."""
        per_training_image = seconds_per_iteration / self.images_per_batch
        return self.eval_images * self.eval_cost * per_training_image

    def training_seconds(self, seconds_per_iteration: float) -> float:
        return max(0.0, self.seconds - self.eval_reserve(seconds_per_iteration))

    def _fits_another_iteration(self) -> bool:
        if self.seconds_per_iteration is None:
            return self.seconds_spent < self.seconds
        end = self.seconds_spent + self.seconds_per_iteration
        return end <= self.training_seconds(self.seconds_per_iteration)

    def before_train(self):
        self._start = self._last = self._clock()
        self._spent_before = self.seconds_spent
        self._next_log = (math.floor(self.progress / self._log_every) + 1) * self._log_every
        if not self._fits_another_iteration():  # resumed after the budget was used
            logger.info(
                f"Time budget of {self.seconds / 60:g} min already used "
                f"({self.seconds_spent:.0f} s): no further training iterations"
            )
            self.trainer.max_iter = self.trainer.iter

    def before_step(self):
        if self.trainer.iter >= self.trainer.max_iter:
            raise TimeBudgetSpent()

    def after_step(self):
        now = self._clock()
        self._durations.append(now - self._last)
        self._last = now
        spent = self._spent_before + now - self._start
        per_iteration = statistics.median(self._durations)
        if comm.get_world_size() > 1:
            spent, per_iteration = map(max, zip(*comm.all_gather((spent, per_iteration))))
        self.seconds_spent, self.seconds_per_iteration = spent, per_iteration
        if len(self._durations) == _TIMED_BEFORE_CHECK:
            self._check_budget_fits_an_evaluation(per_iteration)
        training = self.training_seconds(per_iteration)
        fraction = spent / training if training > 0 else 1.0
        self.progress = max(self.progress, min(fraction, _LAST_POSITION))
        last = not self._fits_another_iteration()
        if last:
            self.trainer.max_iter = self.trainer.iter + 1
        if last or self.progress >= self._next_log:
            self._log(training, last)
            self._next_log = (math.floor(self.progress / self._log_every) + 1) * self._log_every

    def _check_budget_fits_an_evaluation(self, seconds_per_iteration: float) -> None:
        reserve = self.eval_reserve(seconds_per_iteration)
        if reserve >= self.seconds:
            raise ValueError(
                f"SOLVER.TIME_BUDGET_MINUTES={self.seconds / 60:g} is shorter than one "
                f"evaluation: the {self.eval_images} test image(s) are expected to take "
                f"{reserve / 60:.2f} min at the measured {seconds_per_iteration:.2f} s per "
                "training iteration (SOLVER.TIME_BUDGET_EVAL_COST="
                f"{self.eval_cost:g}), which leaves no time to train. Raise the budget or use "
                "smaller DATASETS.TEST."
            )

    def _log(self, training: float, last: bool):
        reserve = self.seconds - training
        if last:
            logger.info(
                f"Time budget: training ends after iteration {self.trainer.iter} "
                f"({self.seconds_spent:.0f} s, {self.seconds_per_iteration:.2f} s/it); "
                f"{reserve:.0f} s reserved for the evaluation"
            )
        else:
            logger.info(
                f"Time budget: {100 * self.progress:.0f}% of the training time used at "
                f"iteration {self.trainer.iter} ({self.seconds_per_iteration:.2f} s/it); training "
                f"ends in ~{training - self.seconds_spent:.0f} s, then {reserve:.0f} s evaluation"
            )

    def state_dict(self) -> dict:
        return {
            "seconds_spent": self.seconds_spent,
            "seconds_per_iteration": self.seconds_per_iteration,
            "progress": self.progress,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.seconds_spent = float(state_dict["seconds_spent"])
        self.seconds_per_iteration = state_dict["seconds_per_iteration"]
        self.progress = float(state_dict["progress"])
        logger.info(f"Time budget: {self.seconds_spent:.0f} s already spent in earlier runs")


class TimeBudgetLRScheduler(LRMultiplier):
    """detectron2's ``LRMultiplier`` whose position in the schedule is ``budget.progress`` (the
    fraction of the training time used) instead of ``iteration / max_iter``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        multiplier,
        budget: TimeBudget,
        last_iter: int = -1,
    ):
        self._budget = budget  # before the parent's __init__, which computes the first LR
        super().__init__(optimizer, multiplier, max_iter=1, last_iter=last_iter)

    @classmethod
    def replacing(cls, scheduler, budget: TimeBudget) -> "TimeBudgetLRScheduler":
        """The same schedule as ``scheduler`` (built by detectron2's ``build_lr_scheduler``, whose
        fractions ``WARMUP_ITERS / MAX_ITER`` and ``STEPS / MAX_ITER`` it keeps), driven by time."""
        if not isinstance(scheduler, LRMultiplier):
            raise ValueError(
                "SOLVER.TIME_BUDGET_MINUTES needs one of detectron2's ParamScheduler-based LR "
                "schedules (SOLVER.LR_SCHEDULER_NAME WarmupMultiStepLR or WarmupCosineLR); got "
                f"{type(scheduler).__name__}"
            )
        return cls(scheduler.optimizer, scheduler._multiplier, budget)

    def get_lr(self):
        multiplier = self._multiplier(self._budget.progress)
        return [base_lr * multiplier for base_lr in self.base_lrs]

    def refresh(self) -> None:
        """Set the optimizer's LRs for the budget's current progress, e.g. after loading a
        checkpoint (detectron2 v0.6 does not save the optimizer, so its LRs are the initial ones).
        """
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
