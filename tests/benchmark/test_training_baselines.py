"""The training benchmark's straightforward mode runs the straightforward FCOS targets and
losses wherever the model has an FCOS (CenterMask-PR's FCOS detector included), and the other
modes alone where it has none; the benchmark turns TF32 on by default only on GPUs that have it."""

import pytest
import torch
from detectron2.modeling import build_model

from centermask.benchmark import training
from centermask.cli.benchmark import use_tf32
from tests.support.helpers import ROOT, get_config

QUICKSTART = ROOT / "configs" / "quickstart"
# 160 px: FCOS's coarsest level (stride 128) keeps 2 x 2 cells for its GroupNorm.
SMALL = ["MODEL.FPN.OUT_CHANNELS", "32", "INPUT.MIN_SIZE_TRAIN", "(160,)"]
SMALL += ["INPUT.MAX_SIZE_TRAIN", "224", "MODEL.CHANNELS_LAST", "False"]


def _run(config, monkeypatch):
    calls = []
    original = training._straightforward_targets
    monkeypatch.setattr(
        training,
        "_straightforward_targets",
        lambda *args: calls.append(1) or original(*args),
    )
    cfg = get_config(config, *SMALL)
    results = training.benchmark_training(
        build_model(cfg), cfg, batch_size=1, iterations=1, warmup=0, num_objects=3, log=print
    )
    return results, calls


@pytest.mark.parametrize(
    "config",
    [
        "centermask_lite_V_19_slim_dw_eSE_synthetic.yaml",
        "centermask_pr_fcos_lite_V_19_slim_dw_eSE_synthetic.yaml",
    ],
)
def test_the_straightforward_mode_runs_the_straightforward_losses(config, monkeypatch):
    results, calls = _run(QUICKSTART / config, monkeypatch)
    assert results["baseline"] == "straightforward"
    assert set(results["modes"]) == {"straightforward", "default", "channels-last"}
    assert len(calls) == 1  # the straightforward model's one training step, and only it
    assert results["first_batch_max_rel_loss_diff"] < 1e-4


def test_a_model_without_fcos_is_compared_with_the_default_mode(monkeypatch):
    results, calls = _run(
        QUICKSTART / "centermask_pr_lite_V_19_slim_dw_eSE_synthetic.yaml", monkeypatch
    )
    assert results["baseline"] == "default" and not calls
    assert set(results["modes"]) == {"default", "channels-last"}
    assert results["speedup_vs_default"]["default"] == 1.0


def test_tf32_is_on_by_default_only_on_gpus_with_tf32(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert use_tf32(cuda) and not use_tf32(cuda, "off")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert not use_tf32(cuda) and use_tf32(cuda, "on")
    assert not use_tf32(torch.device("cpu"), "on")
