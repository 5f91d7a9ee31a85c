"""End-to-end training and evaluation on the synthetic data set, on CPU, with a tiny config."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

from centermask.checkpoint import AtomicCheckpointer
from centermask.engine import Trainer
from tests.support.helpers import QUICK_CONFIGS, ROOT, config_for_run, train_from_scratch
from tests.support.training import TrainingInputsRecorder, finite_losses

CONFIG = QUICK_CONFIGS / "centermask_lite_V_19_slim_dw_synthetic_instant_test.yaml"
TRAIN_NET = ROOT / "tools/train_net.py"
# Every candidate is kept at test time, so that a barely trained model has detections to score.
EVAL_OPTS = ["MODEL.FCOS.INFERENCE_TH_TEST", "0.0"]


def make_cfg(output_dir, *overrides):
    return config_for_run(CONFIG, output_dir, *overrides)


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _same_results(a, b) -> bool:
    """Equal metrics, NaN equal to NaN (e.g. AP of an absent size range)."""
    a, b = json.dumps(a, default=float, sort_keys=True), json.dumps(
        b, default=float, sort_keys=True
    )
    return a == b


@pytest.fixture(scope="module")
def trained(synthetic_datasets, tmp_path_factory):
    """30 iterations from scratch; returns the trainer (its EventStorage holds every loss)."""
    out = tmp_path_factory.mktemp("trained")
    cfg = make_cfg(out, "SOLVER.MAX_ITER", "30", "SOLVER.CHECKPOINT_PERIOD", "15",
                   "SOLVER.WARMUP_ITERS", "5")  # fmt: skip
    trainer = train_from_scratch(cfg)
    return trainer


def test_short_training_writes_checkpoints_logs_and_loss_curve(trained):
    out = Path(trained.cfg.OUTPUT_DIR)
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    for name in ("model_0000014.pth", "model_final.pth", "loss_curve.png"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [r for r in records if "total_loss" in r]
    assert losses[-1]["iteration"] == 29
    expected = {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask", "loss_maskiou"}
    assert expected <= set(losses[-1])
    assert list((out).glob("events.out.tfevents.*")), "no TensorBoard events"


def test_loss_decreases_over_a_fixed_seed_run(trained):
    losses = [v for v, _ in trained.storage.history("total_loss").values()]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.9 * first, (first, last)


@pytest.fixture(scope="module")
def one_process_eval(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval1")
    weights = os.path.join(trained.cfg.OUTPUT_DIR, "model_final.pth")
    cfg = make_cfg(out, "MODEL.WEIGHTS", weights, *EVAL_OPTS)
    return weights, out, Trainer.evaluate(cfg)


def test_eval_only_produces_coco_box_and_mask_ap(one_process_eval):
    _, out, results = one_process_eval
    for task in ("bbox", "segm"):
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            assert key in results[task]
        assert 0 <= results[task]["AP"] <= 100
    # Seeded 30 iterations from scratch: box AP50 8.9, mask AP50 0.27 when measured alone (0.14 /
    # 0.06 after other tests in the same process: the value of so short a run moves with float
    # rounding, which depends on the kernels oneDNN picked earlier in the process). A model that
    # detects nothing, or masks that miss every object, scores 0.
    assert results["bbox"]["AP50"] > 0 and results["segm"]["AP50"] > 0
    assert _same_results(json.loads((out / "inference" / "eval_results.json").read_text()), results)
    predictions = json.loads((out / "inference" / "coco_instances_results.json").read_text())
    assert predictions and {"bbox", "segmentation", "score", "mask_score"} <= set(predictions[0])


def _train_net(synthetic_datasets, output_dir, *args):
    env = {**os.environ, "DETECTRON2_DATASETS": str(synthetic_datasets), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(TRAIN_NET), "--config-file", str(CONFIG), *args,
           "OUTPUT_DIR", str(output_dir)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_process_eval_only_gives_exactly_the_one_process_ap(synthetic_datasets, one_process_eval,
                                                                 tmp_path):  # fmt: skip
    weights, _, results = one_process_eval
    _train_net(synthetic_datasets, tmp_path, "--num-gpus", "2", "--eval-only",
               "MODEL.WEIGHTS", weights, *EVAL_OPTS)  # fmt: skip
    two = json.loads((tmp_path / "inference" / "eval_results.json").read_text())
    assert _same_results(two, results)


def test_two_process_gloo_training_runs(synthetic_datasets, tmp_path):
    proc = _train_net(synthetic_datasets, tmp_path, "--num-gpus", "2", "SOLVER.MAX_ITER", "3")
    assert "World size: 2" in proc.stdout + proc.stderr
    assert (tmp_path / "model_final.pth").is_file()
    model = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in model["model"].values() if v.is_floating_point())


class _LockOwner(HookBase):
    """Reads the owner of the output folder's lock during training."""

    def after_step(self):
        lock = Path(self.trainer.cfg.OUTPUT_DIR) / ".centermask_train.lock"
        self.owner = json.loads(lock.read_text())["pid"] if lock.exists() else None


def test_training_holds_the_output_folder_lock_until_it_ends(synthetic_datasets, tmp_path):
    trainer = Trainer(make_cfg(tmp_path, "SOLVER.MAX_ITER", "2"))
    seen = _LockOwner()
    trainer.register_hooks([seen])
    trainer.train()
    assert seen.owner == os.getpid()
    assert not (tmp_path / ".centermask_train.lock").exists()


class _Crash(HookBase):
    def __init__(self, at):
        self.at = at

    def after_step(self):
        if self.trainer.iter == self.at:
            raise RuntimeError("simulated crash")


def test_resume_continues_from_the_last_good_checkpoint(synthetic_datasets, tmp_path):
    cfg = make_cfg(tmp_path, "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "2")
    trainer = Trainer(cfg)
    trainer.register_hooks([_Crash(at=4)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    assert not (tmp_path / "model_final.pth").exists()

    saved = torch.load(tmp_path / "model_0000003.pth", map_location="cpu", weights_only=True)
    resumed = Trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4
    state = resumed.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved["model"].items())
    resumed.train()
    assert resumed.iter == 6 and (tmp_path / "model_final.pth").is_file()


def test_nonfinite_loss_stops_training_and_keeps_the_last_checkpoint(synthetic_datasets, tmp_path):
    cfg = make_cfg(tmp_path, "SOLVER.MAX_ITER", "8", "SOLVER.CHECKPOINT_PERIOD", "2")
    trainer = Trainer(cfg)

    def poison(module, inputs, output):
        if module.training and trainer.iter == 7:  # the last one: no model_final, no final eval
            output[1]["loss_mask"] = output[1]["loss_mask"] * float("nan")
        return output

    trainer.model.roi_heads.register_forward_hook(poison)
    with pytest.raises(FloatingPointError, match=r"iteration 7: loss_mask=nan"):
        trainer.train()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000005.pth"
    saved = sorted(p.name for p in tmp_path.glob("*.pth"))
    assert saved == ["model_0000001.pth", "model_0000003.pth", "model_0000005.pth"]
    assert not (tmp_path / "inference").exists(), "evaluated after a failed last iteration"
    checkpoint = AtomicCheckpointer(Trainer.build_model(cfg), str(tmp_path))
    assert checkpoint.resume_or_load("", resume=True)["iteration"] == 5


def test_class_counts_that_disagree_with_the_data_name_the_keys(synthetic_datasets, tmp_path):
    cfg = make_cfg(tmp_path, "MODEL.FCOS.NUM_CLASSES", "5", "MODEL.ROI_HEADS.NUM_CLASSES", "5")
    with pytest.raises(ValueError, match=r"6 thing classes.*MODEL\.FCOS\.NUM_CLASSES.*ROI_HEADS"):
        Trainer(cfg)
    cfg = make_cfg(tmp_path, "MODEL.FCOS.NUM_CLASSES", "5")
    with pytest.raises(ValueError, match="MODEL.ROI_HEADS.NUM_CLASSES"):
        Trainer(cfg)


def test_cpu_amp_training_gives_finite_float32_losses(synthetic_datasets, tmp_path):
    cfg = make_cfg(tmp_path, "SOLVER.MAX_ITER", "2", "SOLVER.AMP.ENABLED", "True")
    trainer = Trainer(cfg)
    recorder = TrainingInputsRecorder(trainer.model)
    dtypes = []

    def record_dtypes(module, args, out):
        if module.training:
            dtypes.append({v.dtype for v in out.values()})

    trainer.model.backbone.register_forward_hook(record_dtypes)
    trainer.train()
    # The forward passes ran under bf16 autocast (the backbone's convs in bf16) ...
    assert [c["autocast"] for c in recorder.calls] == [True, True]
    assert {c["autocast_dtype"] for c in recorder.calls} == {torch.bfloat16}
    assert dtypes == [{torch.bfloat16}] * 2
    # ... and every logged loss is a finite float (inf and NaN fail).
    for name in ("total_loss", "loss_fcos_cls", "loss_mask", "loss_maskiou"):
        assert len(finite_losses(trainer.storage, name)) == 2


def test_test_time_augmentation_evaluates_with_tta_metrics(one_process_eval, tmp_path):
    weights, _, _ = one_process_eval
    cfg = make_cfg(tmp_path, "MODEL.WEIGHTS", weights, "TEST.AUG.ENABLED", "True",
                   "TEST.AUG.MIN_SIZES", "(64, 96)", "TEST.AUG.MAX_SIZE", "192", *EVAL_OPTS)  # fmt: skip
    results = Trainer.evaluate(cfg)
    assert {"bbox", "segm", "bbox_TTA", "segm_TTA"} <= set(results)
    # The same model with TTA: box AP50 7.3, mask AP50 3.7 when measured.
    assert results["bbox_TTA"]["AP50"] > 0 and results["segm_TTA"]["AP50"] > 0


def test_rle_variant_trains_with_bitmask_masks(synthetic_datasets, tmp_path):
    cfg = make_cfg(tmp_path, "SOLVER.MAX_ITER", "2", "DATASETS.TRAIN", '("synthetic_train_rle",)',
                   "INPUT.MASK_FORMAT", "bitmask", "DATASETS.TEST", "()")  # fmt: skip
    trainer = Trainer(cfg)
    recorder = TrainingInputsRecorder(trainer.model)
    trainer.train()
    # The model trained on bitmasks decoded from the RLE files, with pixels on.
    assert [c["mask_types"] for c in recorder.calls] == [{"BitMasks"}] * 2
    assert all(c["mask_pixels"] > 0 for c in recorder.calls)
    for name in ("loss_mask", "loss_maskiou"):
        assert len(finite_losses(trainer.storage, name)) == 2


def test_channels_last_training_gives_the_same_losses_and_gradients(synthetic_datasets, tmp_path):
    cfg = make_cfg(tmp_path, "MODEL.CHANNELS_LAST", "True")
    seed_all_rng(0)
    nhwc = Trainer.build_model(cfg)
    stem_weight = next(p for p in nhwc.backbone.parameters() if p.dim() == 4)
    assert stem_weight.is_contiguous(memory_format=torch.channels_last)
    nchw = copy.deepcopy(nhwc).to(memory_format=torch.contiguous_format)
    batch = next(iter(Trainer.build_train_loader(cfg)))
    results = []
    for model in (nchw, nhwc):
        torch.manual_seed(0)  # same RoI sampling
        with EventStorage(0):
            losses = model(batch)
        sum(losses.values()).backward()
        grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        results.append(({k: float(v) for k, v in losses.items()}, torch.cat(grads)))
    (losses_a, grads_a), (losses_b, grads_b) = results
    for name in losses_a:
        assert losses_b[name] == pytest.approx(losses_a[name], rel=1e-4, abs=1e-6), name
    # Not elementwise: float rounding can flip a thresholded mask pixel that the MaskIoU head sees.
    cosine = torch.nn.functional.cosine_similarity(grads_a, grads_b, dim=0)
    assert cosine > 0.9999, float(cosine)
