"""``Trainer``: detectron2's ``DefaultTrainer`` wired for CenterMask.

What it adds to ``DefaultTrainer`` (whose hooks, writers, optimizer, LR schedule, checkpoint
period, periodic evaluation and ``resume_or_load`` it keeps):

* evaluators chosen by the data set's ``evaluator_type`` (:mod:`.evaluators`), test-time
  augmentation with ``TEST.AUG.ENABLED`` (after training, and with ``--eval-only``);
* :class:`~centermask.data.CheckedDatasetMapper` for training and testing (errors name the file);
* a check that ``MODEL.FCOS.NUM_CLASSES`` and ``MODEL.ROI_HEADS.NUM_CLASSES`` match the number of
  ``thing_classes`` of every train/test data set;
* :class:`.CheckedTrainLoop` (float32 losses, AMP on CUDA or CPU, a non-finite-loss stop) and
  atomic checkpoints (:class:`~centermask.checkpoint.AtomicCheckpointer`) that are never written
  after a failure;
* distributed data parallel on CPU (gloo) as well as CUDA;
* training for a wall-clock budget (``SOLVER.TIME_BUDGET_MINUTES``, :mod:`.time_budget`);
* Adam as well as SGD (``SOLVER.OPTIMIZER``, :mod:`.optimizer`);
* ``loss_curve.png`` in ``OUTPUT_DIR`` at the end of training;
* a lock on ``OUTPUT_DIR`` (:mod:`.output_lock`), so that a second training run into the same
  folder fails at once instead of overwriting this one's checkpoints and metrics;
* SIGTERM / SIGINT stop training after the current iteration with a checkpoint
  (:mod:`.preemption`); ``resume_or_load(resume=True)`` continues from the newest checkpoint
  that loads, with the data order of an uninterrupted run.
"""

import json
import logging
import os
import weakref
from collections import OrderedDict
from typing import Iterable

import torch
import torch.distributed as dist
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer, TrainerBase, default_writers, hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from centermask.checkpoint import AtomicCheckpointer
from centermask.config import check_class_counts
from centermask.data import CheckedDatasetMapper
from centermask.modeling import CenterMaskWithTTA, check_tta_support

from .evaluators import build_evaluator
from .hooks import CheckpointHook, EvalHook, LossCurveHook, NamedWriteErrors
from .optimizer import build_optimizer
from .output_lock import lock_output_dir, unlock_output_dir
from .preemption import PreemptionHook, skip_consumed_indices
from .time_budget import StoppableTrainLoop, TimeBudget, TimeBudgetLRScheduler
from .train_loop import CheckedTrainLoop

__all__ = ["Trainer", "check_dataset_classes", "create_ddp_model"]

logger = logging.getLogger(__name__)


def check_dataset_classes(cfg, dataset_names: Iterable[str]) -> None:
    """Raise a ValueError naming the keys to set when the class counts of the config and of the
    data sets (their ``thing_classes`` metadata, known once they are loaded) disagree."""
    check_class_counts(cfg)
    expected = cfg.MODEL.FCOS.NUM_CLASSES
    for name in dataset_names:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is None or len(classes) == expected:
            continue
        shown = ", ".join(map(str, classes[:8])) + (", ..." if len(classes) > 8 else "")
        raise ValueError(
            f"Data set {name!r} has {len(classes)} thing classes ({shown}), but the config has "
            f"MODEL.FCOS.NUM_CLASSES={expected} and "
            f"MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES}. Set both to "
            f"{len(classes)} (no background class), e.g. append 'MODEL.FCOS.NUM_CLASSES "
            f"{len(classes)} MODEL.ROI_HEADS.NUM_CLASSES {len(classes)}' to the command line."
        )


def create_ddp_model(model: torch.nn.Module) -> torch.nn.Module:
    """``DistributedDataParallel`` when there are several processes, on CUDA or on CPU (gloo)."""
    if comm.get_world_size() == 1:
        return model
    on_cuda = next(model.parameters()).is_cuda
    # With BatchNorm (e.g. VoVNet trained from scratch) broadcast rank 0's running statistics, so
    # every rank evaluates (periodic evaluation) and saves the same model.
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return DistributedDataParallel(
        model,
        device_ids=[comm.get_local_rank()] if on_cuda else None,
        broadcast_buffers=has_bn,
    )


# The loop's end when a time budget decides it (TimeBudget lowers trainer.max_iter to end it).
_UNBOUNDED_ITERATIONS = 10**12


class Trainer(DefaultTrainer, StoppableTrainLoop):
    """CenterMask's trainer; use it like detectron2's ``DefaultTrainer``.

    With ``SOLVER.TIME_BUDGET_MINUTES > 0`` training and the final evaluation fit that many
    minutes: ``self.time_budget`` (a :class:`TimeBudget` hook) drives the LR schedule and ends
    training, and ``SOLVER.MAX_ITER`` only gives the shape of the schedule.
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            lock_output_dir(cfg.OUTPUT_DIR)  # one training run per output folder
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model)
        hint = (
            f"The last checkpoint in {cfg.OUTPUT_DIR} (if any) is intact; lower SOLVER.BASE_LR, "
            "raise SOLVER.WARMUP_ITERS or enable SOLVER.CLIP_GRADIENTS, then --resume."
        )
        self._trainer = CheckedTrainLoop(
            model, data_loader, optimizer, amp=cfg.SOLVER.AMP.ENABLED, nonfinite_hint=hint
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.time_budget = self.build_time_budget(cfg)
        if self.time_budget is not None:
            self.scheduler = TimeBudgetLRScheduler.replacing(self.scheduler, self.time_budget)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER if self.time_budget is None else _UNBOUNDED_ITERATIONS
        self.cfg = cfg
        self.failed = False
        self.register_hooks(self.build_hooks())

    def train(self):
        """detectron2's ``DefaultTrainer.train``; the lock on ``OUTPUT_DIR`` is released when it
        ends, so that a later run (e.g. from another process) can use the folder while this
        Python session goes on."""
        try:
            return super().train()
        finally:
            unlock_output_dir(self.cfg.OUTPUT_DIR)

    def run_step(self):
        try:
            super().run_step()
        except BaseException:
            self.failed = True  # read by CheckpointHook: save nothing after a failure
            raise

    def build_hooks(self):
        ret = []
        for hook in super().build_hooks():
            if isinstance(hook, hooks.PeriodicCheckpointer):
                hook = CheckpointHook(self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD)
            elif isinstance(hook, hooks.EvalHook):
                hook = EvalHook(self.cfg.TEST.EVAL_PERIOD, self._test_and_save_results)
            ret.append(hook)
        if self.cfg.TEST.AUG.ENABLED:
            check_tta_support(self.model)  # before training, not after it
            # Before the PeriodicWriter (last on the main process) so its results are written.
            ret.insert(-1, EvalHook(0, lambda: self.test_with_TTA(self.cfg, self.model)))
        ret.append(LossCurveHook(self.cfg.OUTPUT_DIR))
        # Last: it stops after the iteration's other hooks (checkpoint, LR, writers) have run.
        ret.append(PreemptionHook(self.checkpointer))
        if self.time_budget is not None:
            # Before the LRScheduler and the checkpointer: they read what it sets.
            first = next(i for i, h in enumerate(ret) if isinstance(h, hooks.LRScheduler))
            ret.insert(first, self.time_budget)
        return ret

    def resume_or_load(self, resume: bool = True):
        """detectron2's ``resume_or_load``, resuming from the newest checkpoint of ``OUTPUT_DIR``
        that loads (a damaged newest one is skipped with a warning, see
        :meth:`~centermask.checkpoint.CenterMaskCheckpointer.resume_or_load`)."""
        resuming = resume and self.checkpointer.has_resume_candidate()
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resuming:
            # The checkpoint holds the iteration that had finished: continue after it.
            self.start_iter = self.iter + 1
            self._continue_data_order(self.start_iter)
        if self.time_budget is not None:
            self.scheduler.refresh()  # the LR for the time already used, from the first iteration

    def _continue_data_order(self, iteration: int) -> None:
        """Have the data loader continue its index stream after the images of ``iteration``
        iterations, as the uninterrupted run would have (see :func:`skip_consumed_indices`)."""
        loop = self._trainer
        if not skip_consumed_indices(loop.data_loader, iteration * self.cfg.SOLVER.IMS_PER_BATCH):
            return
        if hasattr(loop, "_data_loader_iter_obj"):  # detectron2 main: created on first use
            loop._data_loader_iter_obj = None
        else:  # detectron2 v0.6: created by the constructor
            loop._data_loader_iter = iter(loop.data_loader)

    def build_writers(self):
        if self.time_budget is None:
            writers = super().build_writers()
        else:  # no iteration count to compute an ETA from; the TimeBudget hook logs the time left
            writers = default_writers(self.cfg.OUTPUT_DIR, max_iter=None)
        return [NamedWriteErrors(w, self.cfg.OUTPUT_DIR) for w in writers]

    @classmethod
    def build_time_budget(cls, cfg):
        """The :class:`TimeBudget` hook for ``SOLVER.TIME_BUDGET_MINUTES``, None when it is 0."""
        minutes = cfg.SOLVER.TIME_BUDGET_MINUTES
        if minutes < 0:
            raise ValueError(f"SOLVER.TIME_BUDGET_MINUTES must be >= 0 (0: off), got {minutes}")
        return TimeBudget(cfg) if minutes > 0 else None

    def _test_and_save_results(self):
        self._last_eval_results = self.test(self.cfg, self.model)
        return self._last_eval_results

    @classmethod
    def build_model(cls, cfg):
        """detectron2's ``build_model``, in NHWC memory order when ``MODEL.CHANNELS_LAST``."""
        model = super().build_model(cfg)
        if cfg.MODEL.CHANNELS_LAST:
            model.to(memory_format=torch.channels_last)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        """SGD or Adam, as ``SOLVER.OPTIMIZER`` says (:func:`.optimizer.build_optimizer`)."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        loader = build_detection_train_loader(cfg, mapper=CheckedDatasetMapper(cfg, True))
        check_dataset_classes(cfg, cfg.DATASETS.TRAIN)  # metadata is complete once loaded
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        loader = build_detection_test_loader(
            cfg, dataset_name, mapper=CheckedDatasetMapper(cfg, False)
        )
        check_dataset_classes(cfg, [dataset_name])
        return loader

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's ``DefaultTrainer.test``; in multi-process runs, rank 0's buffers (BN
        statistics) are broadcast first so that every rank evaluates the same model."""
        if comm.get_world_size() > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer.data, src=0)
        return super().test(cfg, model, evaluators)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluate ``model`` with test-time augmentation (``TEST.AUG``); metrics get "_TTA"."""
        logger.info("Running inference with test-time augmentation ...")
        if isinstance(model, DistributedDataParallel):
            model = model.module
        tta_model = CenterMaskWithTTA(cfg, model)
        evaluators = [
            cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference_TTA"))
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, tta_model, evaluators)
        return OrderedDict((k + "_TTA", v) for k, v in results.items())

    @classmethod
    def evaluate(cls, cfg, weights: str = None, resume: bool = False):
        """``--eval-only``: build the model, load ``weights`` (default ``MODEL.WEIGHTS``; the last
        checkpoint of ``OUTPUT_DIR`` with ``resume``) and evaluate on ``DATASETS.TEST``.

        The main process also writes the results to ``<OUTPUT_DIR>/inference/eval_results.json``.
        """
        model = cls.build_model(cfg)
        if cfg.TEST.AUG.ENABLED:
            check_tta_support(model)
        AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS if weights is None else weights, resume=resume
        )
        results = cls.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(cls.test_with_TTA(cfg, model))
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            path = os.path.join(cfg.OUTPUT_DIR, "inference", "eval_results.json")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump(results, f, indent=2, default=float)
            logger.info(f"Evaluation results written to {path}")
        return results
