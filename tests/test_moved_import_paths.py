"""The package split (acceleration / export / benchmark) keeps every old public import path: each
old name resolves to the very object at its new home, so there is one copy of everything."""

import importlib

import pytest

import centermask

MOVED_MODULES = {
    "centermask.export.fold_batchnorm": "centermask.acceleration.fold_batchnorm",
    "centermask.export.fused_modules": "centermask.acceleration.fused_modules",
    "centermask.export.inference_model": "centermask.acceleration.inference_model",
    "centermask.export.optimize": "centermask.acceleration.optimize",
    "centermask.utils.benchmark": "centermask.benchmark.inference",
    "centermask.utils.benchmark_train": "centermask.benchmark.training",
    "centermask.utils.stage_timer": "centermask.benchmark.stage_timer",
    "centermask.utils.memory": "centermask.benchmark.memory",
}


@pytest.mark.parametrize("old, new", sorted(MOVED_MODULES.items()))
def test_old_module_path_is_the_moved_module(old, new):
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    assert old_module is new_module
    assert new_module.__all__ and all(hasattr(old_module, name) for name in new_module.__all__)


def test_old_from_imports_give_the_same_objects():
    from centermask.acceleration import optimize as optimize_module
    from centermask.acceleration.fused_modules import ClassSelectedMaskPredictor
    from centermask.benchmark.inference import parse_modes
    from centermask.export import (
        CenterMaskInference,
        DenseCenterMask,
        fold_frozen_batchnorm,
        optimize_for_inference,
    )
    from centermask.export.fused_modules import ClassSelectedMaskPredictor as old_predictor
    from centermask.export.optimize import parse_dtype
    from centermask.utils.benchmark import parse_modes as old_parse_modes

    acceleration = importlib.import_module("centermask.acceleration")
    assert optimize_for_inference is centermask.optimize_for_inference
    assert optimize_for_inference is acceleration.optimize_for_inference
    assert CenterMaskInference is acceleration.CenterMaskInference
    assert DenseCenterMask is acceleration.DenseCenterMask
    assert fold_frozen_batchnorm is acceleration.fold_frozen_batchnorm
    assert parse_dtype is optimize_module.parse_dtype
    assert old_predictor is ClassSelectedMaskPredictor
    assert old_parse_modes is parse_modes
