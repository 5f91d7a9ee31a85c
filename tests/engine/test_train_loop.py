"""The training step: a non-finite loss stops training, names iteration and loss, and never
reaches the optimizer; losses are float32; AMP runs on CPU."""

import pytest
import torch
from detectron2.utils.events import EventStorage
from torch import nn

from centermask.engine import CheckedTrainLoop, check_losses_finite


class _TwoLosses(nn.Module):
    """Loss ``loss_b`` becomes NaN on the call number ``nan_at``."""

    def __init__(self, nan_at=None):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.calls = 0
        self.nan_at = nan_at

    def forward(self, batch):
        out = self.linear(batch).mean()
        loss_b = out * 0 + (float("nan") if self.calls == self.nan_at else 1.0)
        self.calls += 1
        return {"loss_a": out.abs(), "loss_b": loss_b}


def _loader():
    while True:
        yield torch.ones(2, 4)


def _run(loop, iterations):
    with EventStorage(0) as storage:
        for loop.iter in range(iterations):
            storage.iter = loop.iter
            loop.run_step()
        return storage


def test_nonfinite_loss_stops_before_the_optimizer_step():
    model = _TwoLosses(nan_at=3)
    loop = CheckedTrainLoop(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1),
                            nonfinite_hint="Last checkpoint intact.")  # fmt: skip
    with EventStorage(0) as storage:
        for it in range(3):
            loop.iter = storage.iter = it
            loop.run_step()
        before = [p.detach().clone() for p in model.parameters()]
        loop.iter = storage.iter = 3
        with pytest.raises(FloatingPointError, match=r"iteration 3: loss_b=nan.*intact"):
            loop.run_step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_check_losses_finite_passes_finite_values():
    check_losses_finite({"loss_x": torch.tensor(1.0)}, 0)
    with pytest.raises(FloatingPointError, match="loss_x=inf"):
        check_losses_finite({"loss_x": torch.tensor(float("inf"))}, 7)


def test_cpu_amp_runs_under_bf16_autocast_and_logs_float32_losses():
    class _Recorder(_TwoLosses):
        def forward(self, batch):
            self.dtype = self.linear(batch).dtype
            return super().forward(batch)

    model = _Recorder()
    loop = CheckedTrainLoop(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1), amp=True)
    storage = _run(loop, 2)
    assert model.dtype == torch.bfloat16
    assert loop.grad_scaler is None  # bf16 needs no loss scaling
    assert isinstance(storage.history("total_loss").latest(), float)
