"""Shared by the optimisation / export tests: parity inputs and outputs in instances.npz form."""

import json
from functools import lru_cache

import numpy as np
import torch
from detectron2.modeling.meta_arch.rcnn import GeneralizedRCNN
from detectron2.structures import Boxes, Instances

from tests.support.helpers import (
    build_synthetic_model,
    compare,
    load_npz,
    missing_mask_metrics,
    parity_dir,
    parity_meta,
)

# prefix -> (images, index of the GT boxes fed as detections or None)
RUNS = {
    "single__img0": ([0], None),
    "single__img1": ([1], None),
    "small__img0": (["small"], None),
    "given__img0": ([0], 0),
}


@lru_cache(maxsize=None)
def synthetic_model(name):
    return build_synthetic_model(name)[0]


def parity_inputs(name, images):
    arrays, sizes = load_npz(name, "inputs.npz"), parity_meta(name)["input_sizes"]
    inputs = []
    for i in images:
        if i == "small":
            image = arrays["small_bgr"]
            height, width = image.shape[:2]
        else:
            image = arrays[f"image_{i}_bgr_resized"]
            height, width = sizes[f"image_{i}"]["original_hw"]
        chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        inputs.append({"image": chw, "height": height, "width": width})
    return inputs


def given_detections(name, index):
    gt = json.loads((parity_dir(name) / "losses.json").read_text())["gt_as_fed_resized_coords"]
    gt = gt[index]
    return [
        Instances(
            tuple(gt["resized_hw"]),
            pred_boxes=Boxes(torch.tensor(gt["gt_boxes_xyxy"], dtype=torch.float32)),
            pred_classes=torch.tensor(gt["gt_classes"], dtype=torch.int64),
            scores=torch.ones(len(gt["gt_classes"])),
        )
    ]


def _numpy(x):
    return (x.tensor if isinstance(x, Boxes) else x).detach().cpu().numpy().copy()


def instances_arrays(prefix, raw, final):
    """One image's raw (before postprocess) and final Instances as instances.npz entries."""
    p = prefix + "__"
    out = {
        p + "raw_boxes": _numpy(raw.pred_boxes),
        p + "raw_scores": _numpy(raw.scores),
        p + "raw_classes": _numpy(raw.pred_classes),
        p + "raw_mask_scores": _numpy(raw.mask_scores),
        p + "raw_mask_probs": _numpy(raw.pred_masks)[:, 0],
        p + "boxes": _numpy(final.pred_boxes),
        p + "scores": _numpy(final.scores),
        p + "classes": _numpy(final.pred_classes),
        p + "mask_scores": _numpy(final.mask_scores),
    }
    masks = _numpy(final.pred_masks).astype(bool)
    out[p + "masks_packed"] = np.packbits(masks, axis=-1)
    out[p + "masks_shape"] = np.array(masks.shape)
    return out


def pipeline_arrays(pipeline, name, prefixes):
    """Run ``pipeline`` (model or CenterMaskInference-like) on the parity inputs of ``prefixes``."""
    out = {}
    for prefix in prefixes:
        images, given = RUNS[prefix]
        inputs = parity_inputs(name, images)
        detected = None if given is None else given_detections(name, given)
        with torch.inference_mode():
            raw = pipeline.inference(inputs, detected, do_postprocess=False)
            raw_copy = [
                Instances(r.image_size, **{k: _copy(v) for k, v in r.get_fields().items()})
                for r in raw
            ]
            postprocess = getattr(pipeline, "postprocess", GeneralizedRCNN._postprocess)
            final = postprocess(raw, inputs, [r.image_size for r in raw])
        out.update(instances_arrays(prefix, raw_copy[0], final[0]["instances"]))
    return out


def _copy(value):
    return Boxes(value.tensor.clone()) if isinstance(value, Boxes) else value.clone()


def failures(report):
    """Failed detection checks of a compare() report, and prefixes whose masks went uncompared."""
    return missing_mask_metrics(report) + [
        f"{prefix}/{kind}: {result}"
        for prefix, kinds in report["detections"].items()
        for kind, result in kinds.items()
        if not result.get("ok", True)
    ]


def compare_to(reference, outputs, prefixes):
    """compare() of ``outputs`` against a parity folder name or another arrays dict."""
    ref = str(parity_dir(reference)) if isinstance(reference, str) else {"instances": reference}
    report = compare(
        ref, {"instances": outputs}, prefixes=[p + "__" for p in prefixes], verbose=False
    )
    assert sorted(report["detections"]) == sorted(prefixes)
    return report


def check_qdq_int8_graph(path) -> None:
    """The ONNX graph at ``path`` is statically quantized as :mod:`centermask.export.int8` does it:
    int8 conv weights with one scale per output channel and zero points 0 (symmetric), uint8
    activations (QuantizeLinear)."""
    import onnx

    graph = onnx.load(str(path)).graph
    initializers = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    weight_dq = [
        node
        for node in graph.node
        if node.op_type == "DequantizeLinear" and initializers.get(node.input[0]) is not None
        and initializers[node.input[0]].dtype == np.int8 and initializers[node.input[0]].ndim == 4
    ]  # fmt: skip
    assert weight_dq, f"{path} has no int8 conv weights"
    for node in weight_dq:
        weight, scale = initializers[node.input[0]], initializers[node.input[1]]
        assert scale.shape == (weight.shape[0],), node.name  # one scale per output channel
        assert not initializers[node.input[2]].any(), node.name  # symmetric: zero points are 0
    activations_q = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert activations_q and all(initializers[n.input[2]].dtype == np.uint8 for n in activations_q)


def assert_detections_agree(
    expected: Instances,
    got: Instances,
    *,
    iou_threshold: float = 0.99,
    min_match_rate: float = 1.0,
    score_atol: float = 1e-4,
    max_empty_fraction: float = 0.1,
    min_masks_agreeing: float = 1.0,
):
    """One image's detections agree: matched one-to-one by class and box IoU (at least
    ``min_match_rate`` of them), matched scores within ``score_atol``, every matched mask agreeing
    per instance (IoU >= 0.98 or <= 2 pixels differ), and the compared reference masks non-empty
    (at most ``max_empty_fraction`` empty), so that returning no mask at all fails."""
    from centermask.export.agreement import detection_agreement

    agreement = detection_agreement(expected, got, iou_threshold=iou_threshold)
    summary = f"{agreement} of {len(expected)} reference detections"
    assert agreement.matched > 0, summary
    assert agreement.match_rate >= min_match_rate, summary
    assert got.pred_masks.shape[1:] == expected.pred_masks.shape[1:], summary
    assert agreement.masks_agreeing >= min_masks_agreeing * agreement.matched, summary
    assert agreement.empty_reference_masks <= max_empty_fraction * agreement.matched, summary
    ref, cand = (torch.tensor(index) for index in zip(*agreement.pairs))
    scores = (expected.scores[ref] - got.scores[cand]).abs().max()
    assert scores <= score_atol, f"score difference {float(scores)}; {summary}"
    return agreement
