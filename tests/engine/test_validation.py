"""Config values that cannot work are refused before any data loads, naming key and value."""

import argparse
import types

import pytest

from centermask.config import get_cfg
from centermask.engine import build_config
from centermask.engine.time_budget import TimeBudget
from centermask.engine.validation import ConfigValueError, validate_config
from tests.support.helpers import QUICK_CONFIGS

QUICK = QUICK_CONFIGS
CENTERMASK = QUICK / "centermask_lite_V_19_slim_dw_synthetic_instant_test.yaml"
CENTERMASK_PR = QUICK / "centermask_pr_lite_V_19_slim_dw_synthetic_instant_test.yaml"


def _cfg(config=CENTERMASK, *opts):
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.mark.parametrize(
    "config", [CENTERMASK, CENTERMASK_PR, QUICK.parent / "condinst/MS_R_50_1x.yaml"]
)
def test_shipped_configs_pass(config):
    validate_config(_cfg(config), world_size=2 if config != CENTERMASK_PR else 1)


@pytest.mark.parametrize(
    "opts, expected",
    [
        (["SOLVER.BASE_LR", "-0.01"], "SOLVER.BASE_LR=-0.01"),
        (["SOLVER.BASE_LR", "0.0"], "SOLVER.BASE_LR=0.0"),
        (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH=0"),
        (["INPUT.MIN_SIZE_TRAIN", "()"], "INPUT.MIN_SIZE_TRAIN=()"),
        (["MODEL.VOVNET.NORM", "BatchNorm"], "MODEL.VOVNET.NORM='BatchNorm'"),
        (["MODEL.FCOS.NORM", "BN"], "MODEL.FCOS.NORM='BN'"),
        (["MODEL.BACKBONE.NAME", "build_resnet50"], "MODEL.BACKBONE.NAME='build_resnet50'"),
        (["MODEL.VOVNET.CONV_BODY", "V-42-eSE"], "MODEL.VOVNET.CONV_BODY='V-42-eSE'"),
        (["MODEL.META_ARCHITECTURE", "CenterMsak"], "MODEL.META_ARCHITECTURE='CenterMsak'"),
        (
            ["MODEL.FCOS.NUM_CLASSES", "0", "MODEL.ROI_HEADS.NUM_CLASSES", "0"],
            "MODEL.FCOS.NUM_CLASSES=0",
        ),
        (["SOLVER.TIME_BUDGET_MINUTES", "-5.0"], "SOLVER.TIME_BUDGET_MINUTES=-5.0"),
        (["INPUT.MAX_IMAGE_PIXELS", "-1"], "INPUT.MAX_IMAGE_PIXELS=-1"),
        (["SOLVER.OPTIMIZER", "LAMB"], "SOLVER.OPTIMIZER='LAMB'"),
        (["INPUT.AUGMENTATION", "mosaic"], "INPUT.AUGMENTATION='mosaic'"),
    ],
)
def test_values_that_cannot_work_are_named(opts, expected):
    with pytest.raises(ConfigValueError) as info:
        validate_config(_cfg(CENTERMASK, *opts))
    assert expected in str(info.value)


def test_centermask_pr_detector_and_mask_stride_are_checked():
    cfg = _cfg(CENTERMASK_PR, "MODEL.CENTERMASK_PR.DETECTOR", "corners",
               "MODEL.CENTERMASK_PR.MASK_STRIDE", "3")  # fmt: skip
    with pytest.raises(ConfigValueError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert "MODEL.CENTERMASK_PR.DETECTOR='corners'" in message
    assert (
        "MODEL.CENTERMASK_PR.MASK_STRIDE must be 0 or a divisor" in message and "got 3" in message
    )


def test_batch_not_divisible_by_the_processes_is_refused():
    with pytest.raises(ConfigValueError, match=r"SOLVER.IMS_PER_BATCH=2: .*processes \(3\)"):
        validate_config(_cfg(CENTERMASK), world_size=3)


def test_inference_skips_the_solver_checks():
    validate_config(_cfg(CENTERMASK, "SOLVER.BASE_LR", "0.0"), training=False)


def test_every_problem_is_listed_at_once():
    cfg = _cfg(CENTERMASK, "SOLVER.BASE_LR", "-1.0", "SOLVER.IMS_PER_BATCH", "0")
    with pytest.raises(ConfigValueError) as info:
        validate_config(cfg)
    assert len(info.value.problems) == 2


def test_build_config_refuses_before_reading_any_data_set(tmp_path):
    missing = tmp_path / "absent.json"
    args = argparse.Namespace(
        config_file=str(CENTERMASK), opts=["SOLVER.BASE_LR", "-0.01", "DATASETS.TRAIN", "('x',)"],
        dataset=[f"x={missing}:{tmp_path}"], eval_only=False, num_gpus=1, num_machines=1,
    )  # fmt: skip
    with pytest.raises(ConfigValueError, match="SOLVER.BASE_LR=-0.01"):
        build_config(args)


def test_a_time_budget_shorter_than_one_evaluation_is_refused():
    clock = types.SimpleNamespace(now=0.0)
    # 100 test images at 2x the cost of a training image, 2 images per 1 s iteration: 100 s.
    budget = TimeBudget(seconds=60.0, eval_images=100, eval_cost=2.0, images_per_batch=2,
                        clock=lambda: clock.now)  # fmt: skip
    budget.trainer = types.SimpleNamespace(iter=0, max_iter=10**12)
    budget.before_train()
    with pytest.raises(ValueError, match=r"SOLVER.TIME_BUDGET_MINUTES=1 is shorter than one eval"):
        for iteration in range(3):
            budget.trainer.iter = iteration
            clock.now += 1.0
            budget.after_step()
