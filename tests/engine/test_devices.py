"""The config meets the machine: a CPU config on a CUDA machine is reported, multi-GPU training
uses SyncBN for trainable BatchNorm, and the CPU thread choice leaves a CUDA run alone."""

import argparse
import logging
import types

import pytest
import torch
from torch import nn

from centermask.engine.defaults import build_config
from centermask.engine.devices import batchnorm_keys, fit_config_to_devices
from centermask.engine.threads import ThreadChoice
from tests.support.helpers import ROOT, get_config

QUICKSTART = ROOT / "configs" / "quickstart" / "centermask_lite_V_19_slim_dw_eSE_synthetic.yaml"
CONDINST = ROOT / "configs" / "quickstart" / "condinst_lite_V_19_slim_dw_eSE_synthetic.yaml"


@pytest.fixture
def cuda_machine(monkeypatch):
    """torch reports 8 GPUs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)


def test_a_cpu_config_on_a_cuda_machine_warns_about_cpu_processes(cuda_machine, caplog):
    cfg = get_config(QUICKSTART)
    with caplog.at_level(logging.WARNING, logger="centermask.engine.devices"):
        fit_config_to_devices(cfg, num_gpus=8)
    assert "MODEL.DEVICE is 'cpu'" in caplog.text and "8 CPU processes" in caplog.text
    assert cfg.MODEL.VOVNET.NORM == "BN"  # CPU processes keep their BatchNorm


def test_no_warning_without_cuda(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="centermask.engine.devices"):
        fit_config_to_devices(get_config(QUICKSTART), num_gpus=2)
    assert not caplog.records


def test_multi_gpu_training_turns_every_trainable_bn_into_syncbn(cuda_machine, caplog):
    cfg = get_config(CONDINST, "MODEL.DEVICE", "cuda")
    keys = batchnorm_keys(cfg)
    assert {"MODEL.CONDINST.MASK_BRANCH.NORM", "MODEL.VOVNET.NORM"} <= set(keys)
    frozen = cfg.MODEL.RESNETS.NORM
    with caplog.at_level(logging.INFO, logger="centermask.engine.devices"):
        fit_config_to_devices(cfg, num_gpus=4)
    assert cfg.MODEL.VOVNET.NORM == cfg.MODEL.CONDINST.MASK_BRANCH.NORM == "SyncBN"
    assert not batchnorm_keys(cfg)
    assert cfg.MODEL.RESNETS.NORM == frozen and cfg.MODEL.FCOS.NORM == "GN"
    assert "MODEL.VOVNET.NORM" in caplog.text and "SyncBN" in caplog.text


def test_one_gpu_keeps_bn(cuda_machine):
    cfg = get_config(QUICKSTART, "MODEL.DEVICE", "cuda")
    fit_config_to_devices(cfg, num_gpus=1)
    assert cfg.MODEL.VOVNET.NORM == "BN"


def test_the_command_line_config_gets_syncbn_for_several_gpus(cuda_machine):
    args = argparse.Namespace(
        config_file=str(QUICKSTART), opts=["MODEL.DEVICE", "cuda"], num_gpus=2, num_machines=1
    )
    cfg = build_config(args)
    assert cfg.MODEL.DEVICE == "cuda" and cfg.MODEL.VOVNET.NORM == "SyncBN"


class _ModelOnCuda(nn.Module):
    def parameters(self, recurse=True):
        yield types.SimpleNamespace(is_cuda=True)


def test_thread_choice_does_nothing_for_a_model_on_cuda():
    threads = []
    hook = ThreadChoice([2, 1], set_threads=threads.append)
    hook.trainer = types.SimpleNamespace(iter=0, start_iter=0, model=_ModelOnCuda())
    hook.before_train()
    for hook.trainer.iter in range(10):
        hook.before_step()
        hook.after_step()
    assert hook.idle and threads == [] and hook.choices == []
