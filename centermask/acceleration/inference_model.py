"""The CenterMask inference pipeline, split into a dense part and the per-detection part.

``model(inputs)`` of detectron2's GeneralizedRCNN runs: preprocess -> backbone + FPN -> FCOS head
-> FCOS decoding + NMS -> RoI pooling + SAG-Mask -> MaskIoU -> ``detector_postprocess``.
:class:`CenterMaskInference` runs the same steps on the same modules and returns the same outputs,
but

* the tensor-in/tensor-out part (backbone, FPN, FCOS head) is one module, :class:`DenseCenterMask`,
  which can be swapped for an optimised, compiled or ONNX Runtime version;
* it runs under ``torch.inference_mode`` (no autograd bookkeeping), so the returned tensors are
  inference tensors: clone them before modifying them in place outside inference mode;
* FCOS's class-aware NMS stops once the top-k survivors are known
  (:func:`centermask.layers.nms.batched_nms_topk`, same detections);
* mask pasting is batched (:func:`centermask.layers.mask_paste.paste_masks_batched`, bit-identical
  to detectron2's);
* decoding and post-processing can run with fewer CPU threads than the convolutions.

Build it with :func:`centermask.optimize_for_inference` or
:class:`centermask.export.centermask_onnx.OnnxCenterMaskPredictor`.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.modeling.meta_arch.rcnn import GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances
from torch import nn

from centermask.layers.mask_paste import paste_masks_batched
from centermask.modeling.fcos import FCOS
from centermask.modeling.fcos.inference import fcos_detections
from centermask.modeling.fcos.targets import compute_locations
from centermask.modeling.preprocessing import ImageNormalizer
from centermask.modeling.roi_heads import CenterROIHeads
from centermask.modeling.roi_heads.maskiou_head import maskiou_inference

from .dtypes import autocast_to

__all__ = [
    "DenseCenterMask",
    "CenterMaskInference",
    "FCOSDecoding",
    "split_dense_outputs",
    "check_centermask_model",
    "postprocess_instances",
    "limited_threads",
]


def check_centermask_model(model: nn.Module) -> None:
    """Raise a clear error unless ``model`` is a GeneralizedRCNN with FCOS and CenterROIHeads."""
    if not isinstance(model, GeneralizedRCNN):
        raise TypeError(
            f"expected a detectron2 GeneralizedRCNN (MODEL.META_ARCHITECTURE), got "
            f"{type(model).__name__}"
        )
    if not isinstance(model.proposal_generator, FCOS):
        raise TypeError(
            "expected MODEL.PROPOSAL_GENERATOR.NAME 'FCOS', got "
            f"{type(model.proposal_generator).__name__}"
        )
    if not isinstance(model.roi_heads, CenterROIHeads):
        raise TypeError(
            f"expected MODEL.ROI_HEADS.NAME 'CenterROIHeads', got {type(model.roi_heads).__name__}"
        )


class DenseCenterMask(nn.Module):
    """Backbone + FPN + FCOS head with tensor outputs: the part that goes into the ONNX graph.

    Input: (N, 3, H, W) normalised, padded images (H, W multiples of the backbone's
    ``size_divisibility``). Output: a flat tuple, in this order, of

    * the RoI features ``roi_features`` (e.g. p3, p4, p5), each (N, C, H_l, W_l);
    * per FCOS level the class logits (N, K, H_l, W_l);
    * per FCOS level the box regression (N, 4, H_l, W_l), in stride units;
    * per FCOS level the centerness logits (N, 1, H_l, W_l).

    :meth:`output_names` names them and :meth:`split_outputs` regroups them.
    """

    def __init__(
        self,
        backbone: nn.Module,
        fcos_head: nn.Module,
        fcos_features: Sequence[str],
        roi_features: Sequence[str],
    ):
        super().__init__()
        self.backbone = backbone
        self.fcos_head = fcos_head
        self.fcos_features = list(fcos_features)
        self.roi_features = list(roi_features)

    @classmethod
    def from_model(cls, model: GeneralizedRCNN) -> "DenseCenterMask":
        """The dense part of a CenterMask model (sharing its modules)."""
        check_centermask_model(model)
        roi_heads = model.roi_heads
        roi_features = list(roi_heads.mask_in_features) if roi_heads.mask_on else []
        if roi_heads.keypoint_on:
            roi_features += [f for f in roi_heads.keypoint_in_features if f not in roi_features]
        return cls(
            model.backbone,
            model.proposal_generator.fcos_head,
            model.proposal_generator.in_features,
            roi_features,
        )

    def output_names(self) -> List[str]:
        """Names of the flat outputs, e.g. ["p3", ..., "logits_p3", ..., "ctrness_p7"]."""
        names = list(self.roi_features)
        for kind in ("logits", "bbox_reg", "ctrness"):
            names += [f"{kind}_{f}" for f in self.fcos_features]
        return names

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = self.backbone(images)
        logits, bbox_reg, ctrness = self.fcos_head([features[f] for f in self.fcos_features])[:3]
        return (*[features[f] for f in self.roi_features], *logits, *bbox_reg, *ctrness)


def split_dense_outputs(
    outputs: Sequence[torch.Tensor], roi_features: Sequence[str], num_levels: int
) -> Tuple[Dict[str, torch.Tensor], List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
    """Flat :class:`DenseCenterMask` outputs -> (RoI features by name, then logits, bbox_reg and
    ctrness per FCOS level)."""
    num_roi = len(roi_features)
    if len(outputs) != num_roi + 3 * num_levels:
        raise ValueError(
            f"expected {num_roi + 3 * num_levels} dense outputs ({num_roi} RoI features and 3 x "
            f"{num_levels} FCOS levels), got {len(outputs)}"
        )
    heads = [
        list(outputs[num_roi + i * num_levels : num_roi + (i + 1) * num_levels]) for i in range(3)
    ]
    return dict(zip(roi_features, outputs[:num_roi])), heads[0], heads[1], heads[2]


@dataclass(frozen=True)
class FCOSDecoding:
    """The test-time decoding settings of an FCOS module."""

    strides: Tuple[int, ...]
    score_thresh: float
    pre_nms_topk: int
    nms_thresh: float
    post_nms_topk: int
    thresh_with_ctr: bool

    @classmethod
    def from_fcos(cls, fcos: FCOS) -> "FCOSDecoding":
        return cls(
            strides=tuple(fcos.strides),
            score_thresh=fcos.score_thresh[1],
            pre_nms_topk=fcos.pre_nms_topk[1],
            nms_thresh=fcos.nms_thresh,
            post_nms_topk=fcos.post_nms_topk[1],
            thresh_with_ctr=fcos.thresh_with_ctr,
        )

    def __call__(self, logits, bbox_reg, ctrness, image_sizes, top_feats=None) -> List[Instances]:
        """Per-level head outputs -> per-image detections (:func:`fcos_detections`; with
        ``top_feats``, CondInst's controller outputs, the detections carry theirs)."""
        return fcos_detections(
            compute_locations(logits, self.strides),
            logits,
            bbox_reg,
            ctrness,
            self.strides,
            image_sizes,
            score_thresh=self.score_thresh,
            pre_nms_topk=self.pre_nms_topk,
            nms_thresh=self.nms_thresh,
            post_nms_topk=self.post_nms_topk,
            thresh_with_ctr=self.thresh_with_ctr,
            early_stop_nms=True,
            top_feats=top_feats,
        )


def postprocess_instances(
    instances: Instances, height: int, width: int, mask_threshold: float = 0.5
) -> Instances:
    """detectron2's ``detector_postprocess`` (rescale, clip, drop empty boxes, paste masks) with
    batched mask pasting on the CPU. Same fields in the same order, same values."""
    if not instances.has("pred_masks") or isinstance(height, torch.Tensor):
        return detector_postprocess(instances, height, width, mask_threshold)
    fields = instances.get_fields()
    kept = Instances(instances.image_size)
    for name, value in fields.items():
        if name != "pred_masks":
            kept.set(name, value)
    kept.set("postprocess_index", torch.arange(len(instances), device=instances.scores.device))
    kept = detector_postprocess(kept, height, width, mask_threshold)
    index = kept.postprocess_index
    masks = fields["pred_masks"][index, 0]
    pasted = paste_masks_batched(masks, kept.pred_boxes.tensor, (height, width), mask_threshold)
    result = Instances(kept.image_size)
    for name in fields:
        result.set(name, pasted if name == "pred_masks" else kept.get(name))
    return result


@contextmanager
def limited_threads(device: torch.device, threads: Optional[int]):
    """At most ``threads`` CPU intra-op threads inside the block (no-op off the CPU or for None);
    the global setting is restored after it."""
    previous = torch.get_num_threads()
    if device.type != "cpu" or not threads or threads >= previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class CenterMaskInference(ImageNormalizer):
    """CenterMask inference with the outputs of ``model(inputs)`` (see the module docstring).

    Children: ``dense`` (:class:`DenseCenterMask` or a drop-in with the same outputs) and
    ``roi_heads`` (the model's CenterROIHeads). Call it like the detectron2 model::

        outputs = pipeline([{"image": chw_bgr_float, "height": h, "width": w}, ...])
        outputs[0]["instances"]  # pred_boxes, scores, pred_classes, locations, pred_masks, ...
    """

    def __init__(
        self,
        model: GeneralizedRCNN,
        dense: Optional[nn.Module] = None,
        *,
        mask_predictor: Optional[nn.Module] = None,
        channels_last: bool = False,
        dtype: Optional[torch.dtype] = None,
        postprocess_threads: Optional[int] = None,
    ):
        """
        Args:
            model: the CenterMask model; its modules are shared, not copied.
            dense: replaces :class:`DenseCenterMask` ``.from_model(model)``; must take and return
                the same tensors.
            mask_predictor: a :class:`~centermask.acceleration.fused_modules.ClassSelectedMaskPredictor`
                standing for the mask head's predictor, which the caller has replaced by an
                Identity (so ``mask_head.layers`` returns the features before the predictor).
            channels_last: feed the dense part NHWC-strided images.
            dtype: run the dense part under autocast to this dtype; decoding, the RoI heads and
                post-processing stay in float32.
            postprocess_threads: CPU intra-op threads for FCOS decoding and post-processing
                (None: the global setting). The global setting is restored after each step.
        """
        super().__init__()
        check_centermask_model(model)
        layout = DenseCenterMask.from_model(model)
        self.dense = dense if dense is not None else layout
        self.roi_feature_names = layout.roi_features
        self.num_levels = len(layout.fcos_features)
        self.roi_heads = model.roi_heads
        self.mask_predictor = mask_predictor
        self.register_pixel_normalization(
            model.pixel_mean, model.pixel_std, model.backbone.size_divisibility
        )
        self.decoding = FCOSDecoding.from_fcos(model.proposal_generator)
        self.channels_last = channels_last
        self.dtype = dtype
        self.postprocess_threads = postprocess_threads
        self.train(False)

    def run_dense(
        self, images: torch.Tensor
    ) -> Tuple[Dict[str, torch.Tensor], List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """(N, 3, H, W) padded images -> (RoI features, logits, bbox_reg, ctrness), float32."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_to(self.device, self.dtype):
            outputs = self.dense(images)
        outputs = [x.float() for x in outputs]
        return split_dense_outputs(outputs, self.roi_feature_names, self.num_levels)

    def run_roi_heads(
        self, features: Dict[str, torch.Tensor], detections: List[Instances]
    ) -> List[Instances]:
        """Mask, MaskIoU (and keypoint) heads on the detections: ``pred_masks`` (M, 1, S, S)
        probabilities of the predicted class and ``mask_scores``, as CenterROIHeads does."""
        heads = self.roi_heads
        if self.mask_predictor is None or not heads.mask_on or heads.keypoint_on:
            return heads.forward_with_given_boxes(features, detections)
        roi_features = heads.mask_pooler(
            [features[f] for f in heads.mask_in_features],
            [x.pred_boxes for x in detections],
            [x.image_size for x in detections],
        )
        classes = torch.cat([x.pred_classes for x in detections])
        mask_logits = self.mask_predictor(heads.mask_head.layers(roi_features), classes)
        mask_probs = mask_logits.sigmoid()
        for instances, probs in zip(detections, mask_probs.split([len(x) for x in detections])):
            instances.pred_masks = probs
        if heads.maskiou_on:
            maskiou_inference(heads.maskiou_head(roi_features, mask_probs), detections)
        return detections

    def inference(
        self,
        batched_inputs: List[Dict[str, torch.Tensor]],
        detected_instances: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
    ):
        """Same contract as :meth:`GeneralizedRCNN.inference`."""
        with torch.inference_mode():
            images = self.preprocess_image(batched_inputs)
            features, logits, bbox_reg, ctrness = self.run_dense(images.tensor)
            if detected_instances is None:
                with self._small_op_threads():
                    detections = self.decoding(logits, bbox_reg, ctrness, images.image_sizes)
            else:
                detections = [x.to(self.device) for x in detected_instances]
            results = self.run_roi_heads(features, detections)
            if not do_postprocess:
                return results
            with self._small_op_threads():
                return self.postprocess(results, batched_inputs, images.image_sizes)

    @contextmanager
    def _small_op_threads(self):
        """Limit CPU intra-op threads for FCOS decoding and post-processing.

        Their tensors are a few MB at most; on a CPU shared with other work, each multi-threaded
        op waits for a descheduled worker thread. Measured on the shared 2-core machine: FCOS
        decoding 17 ms with 1 thread, 300 ms with 2.
        """
        with limited_threads(self.device, self.postprocess_threads):
            yield

    @staticmethod
    def postprocess(
        instances: List[Instances], batched_inputs: List[Dict], image_sizes: List[Tuple[int, int]]
    ) -> List[Dict[str, Instances]]:
        """Per image ``{"instances": ...}`` rescaled to the requested output size."""
        outputs = []
        for results, inputs, size in zip(instances, batched_inputs, image_sizes):
            height = inputs.get("height", size[0])
            width = inputs.get("width", size[1])
            outputs.append({"instances": postprocess_instances(results, height, width)})
        return outputs

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> List[Dict[str, Instances]]:
        """Inference only: same inputs and outputs as the detectron2 model in eval mode."""
        if self.training:
            raise RuntimeError("CenterMaskInference is for inference; train the original model")
        return self.inference(batched_inputs)
