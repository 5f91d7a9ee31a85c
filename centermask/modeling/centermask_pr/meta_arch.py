"""The CenterMask-PR meta-architecture (registered as ``CenterMaskPR``)."""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances
from torch import nn

from centermask.config import check_class_counts
from centermask.modeling.preprocessing import ImageNormalizer

from .center_detector import CenterHeatmapDetector
from .fcos_detector import FCOSPointDetector
from .inference import maskness, masks_to_image
from .mask_head import ShapeSaliencyMaskHead

__all__ = ["CenterMaskPR", "DETECTORS"]

DETECTORS = {"heatmap": CenterHeatmapDetector, "fcos": FCOSPointDetector}


@META_ARCH_REGISTRY.register()
class CenterMaskPR(ImageNormalizer):
    """CenterMask with point representation (Wang et al., CVPR 2020), called CenterMask-PR here.

    backbone -> detector (centre heatmap or FCOS: boxes, classes, one shape feature per
    instance) -> :class:`ShapeSaliencyMaskHead` (local shape x global saliency in the box).
    Inputs and outputs follow detectron2's conventions; outputs have ``pred_boxes``, ``scores``,
    ``pred_classes`` and ``pred_masks`` (bool, in the original image).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        detector: nn.Module,
        mask_head: ShapeSaliencyMaskHead,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        mask_threshold: float = 0.4,
        maskness_scores: bool = False,
    ):
        """
        Args:
            backbone: detectron2 backbone (its ``size_divisibility`` pads the batch).
            detector: :class:`CenterHeatmapDetector` or :class:`FCOSPointDetector`.
            mask_head: the shape / saliency / assembly head.
            pixel_mean, pixel_std: input normalisation.
            mask_threshold: probability above which a mask pixel is on (paper: 0.4).
            maskness_scores: also output ``mask_scores``, the score times the mean probability
                of the mask's pixels above ``mask_threshold`` (mask AP ranks by them).
        """
        super().__init__()
        self.backbone = backbone
        self.detector = detector
        self.mask_head = mask_head
        self.mask_threshold = mask_threshold
        self.maskness_scores = maskness_scores
        self.register_pixel_normalization(pixel_mean, pixel_std, backbone.size_divisibility)

    @classmethod
    def from_config(cls, cfg):
        check_class_counts(cfg)
        name = cfg.MODEL.CENTERMASK_PR.DETECTOR
        if name not in DETECTORS:
            raise ValueError(
                f"MODEL.CENTERMASK_PR.DETECTOR must be one of {sorted(DETECTORS)}, got {name!r}"
            )
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        detector = DETECTORS[name](cfg, shapes)
        return {
            "backbone": backbone,
            "detector": detector,
            "mask_head": ShapeSaliencyMaskHead(cfg, shapes, detector.shape_channels),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "mask_threshold": cfg.MODEL.CENTERMASK_PR.MASK_THRESHOLD,
            "maskness_scores": cfg.MODEL.CENTERMASK_PR.MASKNESS_SCORES,
        }

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of losses. Inference: ``[{"instances": Instances}]`` per image."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("CenterMask-PR training needs 'instances' in every input dict")
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        queries, losses = self.detector(images, features, gt_instances)
        losses.update(self.mask_head.losses(features, queries, gt_instances))
        # Backbone outputs no head reads (e.g. P3-P5 of the FPN under the heatmap detector) join
        # with weight 0: DistributedDataParallel needs a gradient for every parameter.
        used = set(self.detector.in_features) | {self.mask_head.saliency_in_feature}
        unused = [f.sum() for name, f in features.items() if name not in used]
        if unused:
            losses["loss_mask"] = losses["loss_mask"] + 0 * sum(unused)
        return losses

    def inference(self, batched_inputs: List[Dict], do_postprocess: bool = True):
        """Detections with masks; in the original image size unless ``do_postprocess`` is False
        (then boxes stay in input pixels and masks are ``mask_probs`` on the mask grid)."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        detections = self.detector(images, features)
        saliency = self.mask_head.saliency_map(features)
        map_size = tuple(features[self.mask_head.saliency_in_feature].shape[-2:])
        return self.finish(detections, saliency, map_size, batched_inputs, do_postprocess)

    def finish(
        self,
        detections: List[Instances],
        saliency: Optional[torch.Tensor],
        map_size: Tuple[int, int],
        batched_inputs: List[Dict],
        do_postprocess: bool = True,
    ):
        """Masks for the detections of each image (see :meth:`inference`), from the saliency
        logits (N, C or 1, H, W) or None, on a saliency grid of ``map_size``; shared with the
        ONNX Runtime predictor."""
        detections = self.mask_head.predict_masks(saliency, map_size, detections)
        if not do_postprocess:
            return detections
        results = []
        for inst, x in zip(detections, batched_inputs):
            height, width = x.get("height", inst.image_size[0]), x.get("width", inst.image_size[1])
            results.append({"instances": self.postprocess(inst, height, width)})
        return results

    def postprocess(self, instances: Instances, height: int, width: int) -> Instances:
        """Boxes scaled and clipped to (height, width) (detectron2's ``detector_postprocess``,
        which also drops empty boxes), masks resampled there and binarised; ``mask_scores`` with
        ``maskness_scores``."""
        input_size = instances.image_size
        result = detector_postprocess(instances, height, width)
        result.pred_masks = masks_to_image(
            result.mask_probs,
            self.mask_head.mask_stride,
            input_size,
            (height, width),
            self.mask_threshold,
        )
        if self.maskness_scores:
            result.mask_scores = result.scores * maskness(result.mask_probs, self.mask_threshold)
        result.remove("mask_probs")
        if result.has("shape_features"):
            result.remove("shape_features")
        return result
