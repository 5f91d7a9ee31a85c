"""Training for a time budget (SOLVER.TIME_BUDGET_MINUTES), with a fake clock: the LR follows the
fraction of the time used, training ends when the time is used and writes model_final, a resumed
run continues with the time that is left, and time is reserved for the final evaluation."""

import types

import pytest
import torch
from detectron2.data import DatasetCatalog
from torch import nn

from centermask.config import get_cfg
from centermask.engine import Trainer
from centermask.engine.time_budget import TimeBudget

BASE_LR = 0.1


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class ClockedModel(nn.Module):
    """A one-parameter "detector" whose training step takes ``seconds(i)`` on the fake clock for
    its i-th call, and raises on call ``fail_at``."""

    def __init__(self, clock, seconds=lambda i: 1.0, fail_at=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.clock, self.seconds, self.fail_at = clock, seconds, fail_at
        self.calls = 0

    def forward(self, batch):
        if self.calls == self.fail_at:
            raise RuntimeError("the machine went down")
        self.clock.now += self.seconds(self.calls)
        self.calls += 1
        return {"loss_x": (self.weight * batch).pow(2).mean()}


def _batches():
    while True:
        yield torch.ones(2)


def _trainer(tmp_path, clock, model, **solver):
    """The real Trainer on ClockedModel: a 100 s budget and a schedule shaped by
    WARMUP_ITERS / STEPS / MAX_ITER = 10 / (50, 80) / 100, i.e. warm-up over the first 10% of
    the time, LR x0.1 at 50% and x0.01 at 80%."""

    class _Trainer(Trainer):
        @classmethod
        def build_model(cls, cfg):
            return model

        @classmethod
        def build_train_loader(cls, cfg):
            return _batches()

        @classmethod
        def build_time_budget(cls, cfg):
            return TimeBudget(cfg, clock=clock)

    cfg = get_cfg()
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path), "DATASETS.TRAIN", "()",
                         "DATASETS.TEST", "()", "MODEL.DEVICE", "cpu",
                         "SOLVER.TIME_BUDGET_MINUTES", str(100 / 60), "SOLVER.BASE_LR", str(BASE_LR),
                         "SOLVER.WARMUP_ITERS", "10", "SOLVER.STEPS", "(50, 80)",
                         "SOLVER.MAX_ITER", "100", "SOLVER.CHECKPOINT_PERIOD", "25"])  # fmt: skip
    for key, value in solver.items():
        cfg.SOLVER[key] = value
    return _Trainer(cfg)


def _lr_by_iteration(trainer) -> dict:
    return {int(it): lr for lr, it in trainer.storage.history("lr").values()}


def _expected_lr(fraction: float) -> float:
    """The schedule written out by hand: linear warm-up from 0.001 over the first 10% of the
    time, then x1 / x0.1 / x0.01 with steps at 50% and 80%."""
    if fraction < 0.1:
        return BASE_LR * (0.001 + 0.999 * fraction / 0.1)
    return BASE_LR * (1.0 if fraction < 0.5 else 0.1 if fraction < 0.8 else 0.01)


def _final_iteration(tmp_path) -> int:
    return torch.load(tmp_path / "model_final.pth", weights_only=True)["iteration"]


def test_lr_follows_the_fraction_of_time_used_and_training_stops_on_time(tmp_path):
    clock = FakeClock()
    trainer = _trainer(tmp_path, clock, ClockedModel(clock))  # 1 s per iteration
    trainer.resume_or_load(resume=False)
    trainer.train()

    assert trainer.iter == 100  # 100 iterations of 1 s fill the 100 s budget
    assert clock.now - 1000.0 == 100.0
    lr = _lr_by_iteration(trainer)
    assert sorted(lr) == list(range(100))
    # Iteration k runs with the LR set after k iterations, i.e. k seconds = k% of the budget.
    for k in range(100):
        assert lr[k] == pytest.approx(_expected_lr(k / 100), rel=1e-9), k
    assert lr[49] == pytest.approx(BASE_LR) and lr[50] == pytest.approx(BASE_LR * 0.1)
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert _final_iteration(tmp_path) == 99


def test_slower_iterations_move_the_lr_steps_and_the_end_by_time_not_by_count(tmp_path):
    clock = FakeClock()
    # The detector "starts to fire" at iteration 40: iterations take 2 s from then on.
    model = ClockedModel(clock, seconds=lambda i: 1.0 if i < 40 else 2.0)
    trainer = _trainer(tmp_path, clock, model)
    trainer.resume_or_load(resume=False)
    trainer.train()

    # 40 iterations of 1 s, then 30 of 2 s: 100 s.
    assert trainer.iter == 70 and clock.now - 1000.0 == 100.0
    lr = _lr_by_iteration(trainer)
    # 50 s are used after iteration 44 (40 + 2 x 5): the first step is at iteration 45, not 50.
    assert lr[44] == pytest.approx(BASE_LR) and lr[45] == pytest.approx(BASE_LR * 0.1)
    # 80 s after iteration 59 (40 + 2 x 20).
    assert lr[59] == pytest.approx(BASE_LR * 0.1) and lr[60] == pytest.approx(BASE_LR * 0.01)
    assert _final_iteration(tmp_path) == 69


def test_resume_continues_with_the_time_that_is_left(tmp_path):
    clock = FakeClock()
    crashing = _trainer(tmp_path, clock, ClockedModel(clock, fail_at=30))
    crashing.resume_or_load(resume=False)
    with pytest.raises(RuntimeError, match="went down"):
        crashing.train()
    # The last checkpoint is the periodic one after iteration 24 (25 s used); no model_final.
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000024.pth"

    clock = FakeClock(5000.0)  # another process: its clock has nothing to do with the first
    resumed = _trainer(tmp_path, clock, ClockedModel(clock))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 25
    resumed.train()

    assert resumed.iter == 100 and clock.now - 5000.0 == 75.0  # the 75 s that were left
    lr = _lr_by_iteration(resumed)
    assert min(lr) == 25
    for k in (25, 49, 50, 79, 80, 99):
        assert lr[k] == pytest.approx(_expected_lr(k / 100), rel=1e-9), k
    assert _final_iteration(tmp_path) == 99

    # Resuming once more finds the budget used: no iteration, model_final stays the same.
    clock = FakeClock(9000.0)
    again = _trainer(tmp_path, clock, ClockedModel(clock))
    again.resume_or_load(resume=True)
    again.train()
    assert clock.now == 9000.0 and again.iter == 100 and _final_iteration(tmp_path) == 99


def _drive(budget: TimeBudget, clock: FakeClock, seconds_per_iteration: float) -> int:
    """Run the hook alone over a stand-in trainer; returns the number of iterations done."""
    budget.trainer = types.SimpleNamespace(iter=0, max_iter=10**9)
    budget.before_train()
    while budget.trainer.iter < budget.trainer.max_iter:
        budget.before_step()
        clock.now += seconds_per_iteration
        budget.after_step()
        budget.trainer.iter += 1
    return budget.trainer.iter


def test_evaluation_time_is_reserved_from_the_measured_speed():
    clock = FakeClock()
    # 40 test images at 0.5 x the training time of an image (2 s / 4 images): 10 s reserved.
    budget = TimeBudget(seconds=100, eval_images=40, eval_cost=0.5, images_per_batch=4, clock=clock)
    assert _drive(budget, clock, 2.0) == 45  # 90 s of training
    assert budget.eval_reserve(2.0) == 10.0
    assert budget.progress == pytest.approx(90 / 90, abs=1e-9)

    clock = FakeClock()
    budget = TimeBudget(seconds=100, eval_images=40, eval_cost=0.5, images_per_batch=4, clock=clock)
    assert _drive(budget, clock, 1.0) == 95  # twice as fast: 5 s reserved, 95 s of training


def test_eval_images_count_every_test_set_and_test_time_augmentation_pass():
    DatasetCatalog.register("time_budget_three_images", lambda: [{"image_id": i} for i in range(3)])
    try:
        cfg = get_cfg()
        cfg.merge_from_list(["DATASETS.TEST", "('time_budget_three_images',)",
                             "SOLVER.TIME_BUDGET_MINUTES", "2.0", "SOLVER.IMS_PER_BATCH", "8",
                             "TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(100, 200)",
                             "TEST.AUG.FLIP", "True"])  # fmt: skip
        budget = TimeBudget(cfg)
    finally:
        DatasetCatalog.remove("time_budget_three_images")
    # One plain pass plus 2 sizes x 2 flips with test-time augmentation, 3 images each.
    assert budget.eval_images == 15
    assert budget.seconds == 120.0 and budget.images_per_batch == 8


def test_a_negative_budget_names_the_key(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.TIME_BUDGET_MINUTES", "-1.0"])
    with pytest.raises(ValueError, match="SOLVER.TIME_BUDGET_MINUTES"):
        Trainer.build_time_budget(cfg)
