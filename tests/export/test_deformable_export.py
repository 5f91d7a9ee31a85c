"""A CenterMask with deformable VoVNet stages is refused by the ONNX export before tracing, with
the config key and the deployments that keep them; TorchScript traces it."""

import pytest
import torch
from detectron2.modeling import build_model

from centermask.export.centermask_onnx import export_centermask_onnx, export_torchscript
from tests.support.helpers import ROOT, get_config

CONFIG = ROOT / "configs" / "quickstart" / "centermask_lite_V_19_slim_dw_eSE_synthetic.yaml"


def _deformable_model():
    cfg = get_config(
        CONFIG,
        *["MODEL.VOVNET.CONV_BODY", "V-19-slim-eSE", "MODEL.CHANNELS_LAST", "False"],
        *["MODEL.VOVNET.STAGE_WITH_DCN", "[False, False, True, True]"],
        *["MODEL.FPN.OUT_CHANNELS", "32"],
    )
    return build_model(cfg).eval()


def test_onnx_export_of_deformable_convs_fails_up_front_naming_key_and_alternatives(tmp_path):
    with pytest.raises(ValueError) as error:
        export_centermask_onnx(_deformable_model(), tmp_path, height=64, width=64)
    message = str(error.value)
    assert "MODEL.VOVNET.STAGE_WITH_DCN all False" in message
    assert "optimize_for_inference" in message and "torchscript" in message
    assert not list(tmp_path.iterdir())  # refused before anything was traced or written


def test_torchscript_traces_deformable_convs(tmp_path):
    model = _deformable_model()
    path = export_torchscript(model, tmp_path, height=256, width=256)
    dense = torch.jit.load(str(path))
    outputs = dense(torch.rand(1, 3, 256, 256) * 255)
    assert outputs
