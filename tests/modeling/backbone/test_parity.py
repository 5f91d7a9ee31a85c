"""Numerical parity of the backbones (bottom-up + FPN + P6/P7) with the original implementation."""

import numpy as np
import pytest
import torch
from detectron2.modeling import build_backbone

from tests.support.helpers import (
    PARITY_DIRS,
    get_config,
    load_npz,
    parity_config_file,
    parity_keys,
    parity_meta,
    synth_state_dict,
)

PREFIX = "backbone."


def rel_to_max(ours: np.ndarray, reference: np.ndarray) -> float:
    """compare.py's tensor metric: max|ours - ref| / max|ref|."""
    reference = reference.astype(np.float64)
    return float(np.abs(ours.astype(np.float64) - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("name", PARITY_DIRS)
def test_backbone_features_match_reference_on_synthetic_weights(name):
    cfg = get_config(parity_config_file(name))
    backbone = build_backbone(cfg).eval()
    shapes = {k: s for k, s in parity_keys(name).items() if k.startswith(PREFIX)}
    weights = synth_state_dict(shapes)
    backbone.load_state_dict({k[len(PREFIX) :]: v for k, v in weights.items()}, strict=True)

    reference = load_npz(name, "features_small.npz")
    image = torch.from_numpy(reference.pop("input_normalized"))
    with torch.no_grad():
        outputs = dict(backbone(image))
        bottom_up = backbone.bottom_up(image)
    outputs.update({f"bottom_up_{k}": v for k, v in bottom_up.items()})

    tolerance = parity_meta(name)["tolerances"]["compare_thresholds"]["tensor_rel_to_max"]
    assert set(reference) <= set(outputs), f"missing outputs {set(reference) - set(outputs)}"
    failures = []
    for key, ref in sorted(reference.items()):
        ours = outputs[key].numpy()
        if ours.shape != ref.shape:
            failures.append(f"{key}: shape {ours.shape} != reference {ref.shape}")
            continue
        error = rel_to_max(ours, ref)
        if not error <= tolerance:
            failures.append(f"{key}: rel_to_max {error:.3e} > {tolerance:.0e}")
    assert not failures, f"{name}: " + "; ".join(failures)
