"""CenterMask-PR on DLA-34 (the paper's config, shrunk) trains through tools/train_net.py on the
synthetic data set: Adam, the fixed-size augmentation and the deformable up-path together."""

import os
import re
import subprocess
import sys

import pytest
import torch

from tests.support.helpers import QUICK_CONFIGS, ROOT

CONFIG = QUICK_CONFIGS / "centermask_pr_DLA_34_synthetic_instant_test.yaml"

pytestmark = pytest.mark.slow


def test_dla_config_trains_a_few_iterations_through_train_net(synthetic_datasets, tmp_path):
    datasets = synthetic_datasets
    output = tmp_path / "train"
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "DETECTRON2_DATASETS": str(datasets), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": path}  # fmt: skip
    cmd = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file", str(CONFIG),
           "DATASETS.TEST", "()", "OUTPUT_DIR", str(output)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # the config dump is coloured
    assert "OPTIMIZER: ADAM" in log and "FixedSizeCrop(crop_size=(64, 64))" in log
    state = torch.load(output / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    assert any(k.endswith("conv_offset_mask.weight") for k in state)
    assert state["detector.heatmap_head.0.weight"].shape[0] == 16
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
