"""The training step reads its losses on the host once, whatever the number of loss terms;
under AMP a non-finite loss skips the step (the scaler backs off) and stops training only when
it persists, naming the loss."""

import pytest
import torch
from detectron2.utils.events import EventStorage
from torch import nn

from centermask.engine import CheckedTrainLoop


class _Losses(nn.Module):
    """``terms`` loss terms; ``loss_1`` is NaN on the calls listed in ``nan_at``."""

    def __init__(self, terms=2, nan_at=()):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.terms = terms
        self.nan_at = set(nan_at)
        self.calls = 0

    def forward(self, batch):
        out = self.linear(batch).float().mean()
        losses = {f"loss_{i}": (out - 2 * i - 1) ** 2 for i in range(self.terms)}
        if self.calls in self.nan_at:
            losses["loss_1"] = losses["loss_1"] * float("nan")
        self.calls += 1
        return losses


def _loader():
    while True:
        yield torch.ones(2, 4)


def _loop(model, **kwargs):
    return CheckedTrainLoop(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


def _step(loop, storage, iteration):
    loop.iter = storage.iter = iteration
    loop.run_step()


def test_a_step_reads_its_losses_on_the_host_once(count_syncs):
    counts = {}
    for terms in (2, 8):
        loop = _loop(_Losses(terms))
        with EventStorage(0) as storage:
            _step(loop, storage, 0)  # warm-up
            with count_syncs() as syncs:
                _step(loop, storage, 1)
            counts[terms] = len(syncs)
            latest = storage.latest()
        assert latest["total_loss"][0] == pytest.approx(
            sum(latest[f"loss_{i}"][0] for i in range(terms))
        )
    # One copy of the stacked losses (``cpu``) and its conversion to floats (``tolist``).
    assert counts == {2: 2, 8: 2}


def test_amp_skips_a_step_with_a_nonfinite_loss_and_goes_on():
    model = _Losses(nan_at={1})
    loop = _loop(model, amp=True)
    with EventStorage(0) as storage:
        _step(loop, storage, 0)
        before = [p.detach().clone() for p in model.parameters()]
        _step(loop, storage, 1)  # NaN: skipped
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
        assert loop.nonfinite_steps == 1
        _step(loop, storage, 2)  # finite again: a real step
    assert loop.nonfinite_steps == 0
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_amp_stops_when_the_nonfinite_loss_persists_naming_it():
    model = _Losses(nan_at={1, 2, 3})
    loop = _loop(model, amp=True, max_nonfinite_steps=3)
    with EventStorage(0) as storage:
        for iteration in range(3):
            _step(loop, storage, iteration)
        with pytest.raises(FloatingPointError, match=r"iteration 3: loss_1=nan.*3 consecutive"):
            _step(loop, storage, 3)


def test_without_amp_the_first_nonfinite_loss_stops():
    loop = _loop(_Losses(nan_at={0}))
    with EventStorage(0) as storage, pytest.raises(FloatingPointError, match="loss_1=nan"):
        _step(loop, storage, 0)


def test_the_grad_scaler_backs_off_on_a_skipped_step():
    model = _Losses(nan_at={1})
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    loop = _loop(model, amp=True, grad_scaler=scaler)
    with EventStorage(0) as storage:
        _step(loop, storage, 0)
        scale = scaler.get_scale()
        _step(loop, storage, 1)
    assert scaler.get_scale() == scale * scaler.get_backoff_factor()
