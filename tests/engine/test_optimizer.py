"""SOLVER.OPTIMIZER: detectron2's SGD by default, Adam on request, a clear error otherwise."""

import pytest
import torch
from torch import nn

from centermask.config import get_cfg
from centermask.engine import Trainer


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_default_is_sgd_with_momentum():
    optimizer = Trainer.build_optimizer(get_cfg(), _model())
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == get_cfg().SOLVER.MOMENTUM


def test_adam_steps_like_torch_adam_with_the_configured_lr():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.OPTIMIZER", "ADAM", "SOLVER.BASE_LR", "0.0005",
                         "SOLVER.WEIGHT_DECAY", "0.0"])  # fmt: skip
    ours, reference = _model(), _model()
    optimizer = Trainer.build_optimizer(cfg, ours)
    assert isinstance(optimizer, torch.optim.Adam)
    expected = torch.optim.Adam(reference.parameters(), lr=5e-4)
    x = torch.randn(2, 3, 6, 6)
    for model, opt in ((ours, optimizer), (reference, expected)):
        for _ in range(2):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(ours.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)


def test_unknown_optimizer_names_the_key():
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER.*'LAMB'"):
        Trainer.build_optimizer(cfg, _model())
