"""CenterNet's ctdet DLA-34 checkpoint layout converts onto CenterMask-PR: every tensor finds its
place, the heads compute CenterNet's head functions, the body timm's DLA-34, and the tool writes
a checkpoint detectron2 loads."""

import json

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from torch.nn import functional as F

from centermask.modeling.backbone.centernet_convert import check_converted, convert_centernet_dla
from tests.support.helpers import KEYS, ROOT, get_config, load_tool

CENTERNET_KEYS = KEYS / "centernet" / "ctdet_coco_dla_2x.tsv"
CONFIG = ROOT / "configs/centermask_pr/centermask_pr_DLA_34_512_from_centernet.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def _centernet_checkpoint(seed: int = 0) -> dict:
    """Random tensors in the key layout of ctdet_coco_dla_2x.pth (as saved through
    DataParallel: ``module.`` prefixes), inside CenterNet's ``{'epoch', 'state_dict'}``."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for line in CENTERNET_KEYS.read_text().splitlines():
        key, shape = line.split("\t")
        shape = json.loads(shape)
        if key.endswith("num_batches_tracked"):
            state["module." + key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state["module." + key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state["module." + key] = torch.randn(shape, generator=generator) * 0.1
    return {"epoch": 230, "state_dict": state}


def _model(*overrides):
    return build_model(get_config(CONFIG, *overrides)).eval()


@pytest.fixture(scope="module")
def converted_model():
    checkpoint = _centernet_checkpoint()
    converted = convert_centernet_dla(checkpoint)
    torch.manual_seed(0)
    model = _model()
    left = check_converted(model, converted)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    return model, checkpoint["state_dict"], converted, left, missing, unexpected


def test_every_tensor_has_its_place_and_only_the_mask_branches_stay_initialised(
    converted_model,
):
    model, centernet, converted, left, missing, unexpected = converted_model
    assert unexpected == []
    assert sorted(missing) == sorted(left)
    assert left and all(k.startswith(("detector.shape_tower.", "mask_head.")) for k in left)
    # All of CenterNet's tensors but the 12 of the two never-read tree projections.
    dropped = [k for k in centernet if k.startswith(("module.base.level3.project.",
                                                     "module.base.level4.project."))]  # fmt: skip
    assert len(dropped) == 12 and len(converted) == len(centernet) - 12


def _head(x, weights, name):
    """CenterNet's head ``name``: 3x3 conv, ReLU, 1x1 conv, with its weights."""
    w = {
        k[len(f"module.{name}.") :]: v
        for k, v in weights.items()
        if k.startswith(f"module.{name}.")
    }
    hidden = F.relu(F.conv2d(x, w["0.weight"], w["0.bias"], padding=1))
    return F.conv2d(hidden, w["2.weight"], w["2.bias"])


def test_heads_compute_centernets_hm_wh_reg(converted_model):
    model, centernet, *_ = converted_model
    with torch.no_grad():
        feature = model.backbone(torch.randn(1, 3, 64, 64))["up4"]
        torch.testing.assert_close(
            model.detector.heatmap_head(feature), _head(feature, centernet, "hm")
        )
        cells = torch.tensor([0, 3, 15]), torch.tensor([0, 7, 15])
        offsets, sizes, _ = model.detector.heads_at(feature, torch.zeros(3).long(), *cells)
        torch.testing.assert_close(
            offsets, _head(feature, centernet, "reg")[0, :, cells[0], cells[1]].T
        )
        torch.testing.assert_close(
            sizes, _head(feature, centernet, "wh")[0, :, cells[0], cells[1]].T
        )


def test_body_computes_timm_dla34_with_centernets_base_weights(converted_model):
    timm = pytest.importorskip("timm")
    model, centernet, *_ = converted_model
    reference = timm.create_model("dla34", pretrained=False).eval()
    base = {
        k[len("module.base.") :]: v for k, v in centernet.items() if k.startswith("module.base.")
    }
    reference.load_state_dict(base, strict=False)  # timm lacks the never-read projections
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.backbone.base(x)
        theirs = reference.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_other_centernet_models_and_mismatched_configs_are_refused():
    state = _centernet_checkpoint()["state_dict"]
    with pytest.raises(ValueError, match="hps.0.weight"):
        convert_centernet_dla({**state, "hps.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"lacks \['reg'\]"):
        convert_centernet_dla({k: v for k, v in state.items() if ".reg." not in f".{k}"})
    converted = convert_centernet_dla(state)
    with pytest.raises(ValueError, match="DEFORMABLE_UP"):
        check_converted(_model("MODEL.DLA.DEFORMABLE_UP", "False"), converted)
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        check_converted(
            _model("MODEL.FCOS.NUM_CLASSES", "6", "MODEL.ROI_HEADS.NUM_CLASSES", "6"), converted
        )


def test_tool_writes_a_checkpoint_detectron2_loads(tmp_path, converted_model):
    source = tmp_path / "ctdet_coco_dla_2x.pth"
    torch.save(_centernet_checkpoint(), source)
    tool = load_tool("convert/convert_centernet_dla")
    output = tmp_path / "out" / "converted.pth"
    assert tool.main(["--input", str(source), "--output", str(output)]) == 0

    model = _model()
    DetectionCheckpointer(model).load(str(output))
    expected = converted_model[2]
    for key in ("backbone.ida_up.node_2.conv.conv_offset_mask.weight", "detector.size_head.2.bias"):
        torch.testing.assert_close(model.state_dict()[key], expected[key])
