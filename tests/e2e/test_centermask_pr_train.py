"""CenterMask-PR through the everyday tools: train_net (gloo, RLE masks), --eval-only, demo and
BatchPredictor, on a tiny synthetic data set."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from centermask.checkpoint import AtomicCheckpointer
from centermask.cli import demo
from centermask.config import get_cfg
from centermask.engine import BatchPredictor, Trainer
from tests.support.helpers import QUICK_CONFIGS, ROOT, run_cli

CONFIG = QUICK_CONFIGS / "centermask_pr_lite_V_19_slim_dw_synthetic_instant_test.yaml"
EVAL_OPTS = ["MODEL.CENTERMASK_PR.SCORE_THRESH_TEST", "0.0"]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _train_net(synthetic_datasets, output_dir, *args):
    env = {**os.environ, "DETECTRON2_DATASETS": str(synthetic_datasets), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file", str(CONFIG), *args,
           "OUTPUT_DIR", str(output_dir)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_gloo_training_on_rle_masks_then_evaluation_gives_coco_ap(synthetic_datasets, tmp_path):
    train = tmp_path / "train"
    proc = _train_net(synthetic_datasets, train, "--num-gpus", "2", "SOLVER.MAX_ITER", "2",
                      "DATASETS.TRAIN", '("synthetic_train_rle",)', "INPUT.MASK_FORMAT", "bitmask",
                      "DATASETS.TEST", "()")  # fmt: skip
    assert "World size: 2" in proc.stdout + proc.stderr
    weights = train / "model_final.pth"
    state = torch.load(weights, map_location="cpu", weights_only=True)["model"]
    assert any(k.startswith("mask_head.saliency_head") for k in state)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())

    # What --eval-only runs (in this process: one interpreter start less).
    evaluate = tmp_path / "eval"
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(["OUTPUT_DIR", str(evaluate), "MODEL.WEIGHTS", str(weights), *EVAL_OPTS])
    results = Trainer.evaluate(cfg)
    assert {"bbox", "segm"} <= set(
        json.loads((evaluate / "inference" / "eval_results.json").read_text())
    )
    for task in ("bbox", "segm"):
        assert 0 <= results[task]["AP"] <= 100
    predictions = json.loads((evaluate / "inference" / "coco_instances_results.json").read_text())
    assert predictions and {"bbox", "segmentation", "score"} <= set(predictions[0])


@pytest.fixture(scope="module")
def random_weights(synthetic_datasets, tmp_path_factory):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    # Untrained sizes sit near 0 (empty boxes, dropped at post-processing): ~4 cells instead.
    torch.nn.init.constant_(model.detector.size_head[-1].bias, 4.0)
    out = tmp_path_factory.mktemp("weights")
    AtomicCheckpointer(model, str(out)).save("random")
    return str(out / "random.pth")


def _images(count, height=72, width=100):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for _ in range(count)]


def test_batch_predictor_and_demo_run_centermask_pr(random_weights, tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(["MODEL.WEIGHTS", random_weights, *EVAL_OPTS])
    predictor = BatchPredictor(cfg, batch_size=2)
    batched = predictor(_images(3))
    single = predictor.predict_one(_images(1)[0])
    assert len(batched) == 3 and len(batched[0]) == len(single) > 0
    torch.testing.assert_close(batched[0].scores, single.scores, atol=1e-4, rtol=1e-4)
    assert batched[0].pred_masks.shape[1:] == (72, 100)

    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "img0.png"), _images(1, 64, 90)[0])
    written = run_cli(demo, 
        ["--config-file", str(CONFIG), "--input", str(folder), "--output", str(tmp_path / "out"),
         "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS", random_weights, *EVAL_OPTS]
    ).written  # fmt: skip
    assert len(written) == 1 and cv2.imread(written[0]).shape == (64, 90, 3)
