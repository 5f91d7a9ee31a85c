"""CondInst (Tian, Shen, Chen, ECCV 2020) as a detectron2 meta-architecture (``CondInst``).

FCOS detects instances; at every location a ``controller`` conv on the FCOS box tower predicts
the parameters of a tiny per-instance FCN (:class:`DynamicMaskHead`) that runs on shared mask
features (:class:`MaskBranch`) and predicts the instance's mask over the whole image. The
state_dict layout is AdelaiDet's (``backbone``, ``proposal_generator``, ``mask_head`` buffers,
``mask_branch``, ``controller``), so its checkpoints load strictly.
"""

from typing import Dict, List, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import Instances
from torch import nn

from centermask.modeling.fcos import FCOS
from centermask.modeling.preprocessing import ImageNormalizer

from .dynamic_mask_head import DynamicMaskHead, predict_global_masks
from .losses import dice_loss
from .mask_branch import MaskBranch
from .postprocess import postprocess_detections
from .targets import add_bitmasks

__all__ = ["CondInst"]

_POSITIVE_FIELDS = ("locations", "fpn_levels", "top_feats", "logits_pred", "ctrness_pred")


@META_ARCH_REGISTRY.register()
class CondInst(ImageNormalizer):
    """CondInst: FCOS + controller + mask branch + dynamic mask head.

    Differences from AdelaiDet's implementation, none visible on its supported inputs: batches of
    images of different sizes are post-processed per image (the reference asserted), images
    without annotations train as background (it crashed), zero detections give an empty
    ``pred_masks`` (it had none), ``pred_masks`` is bool (it was float) and the outputs leave out
    the raw stride-4 probabilities and dynamic parameters (``inference(...,
    do_postprocess=False)`` returns them as ``pred_global_masks`` and ``top_feat``).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: FCOS,
        mask_head: DynamicMaskHead,
        mask_branch: MaskBranch,
        controller: nn.Module,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
        max_proposals: int = -1,
        topk_proposals_per_image: int = -1,
        mask_threshold: float = 0.5,
    ):
        """
        Args:
            backbone: FPN backbone.
            proposal_generator: FCOS built with ``positives_in_training=True``.
            mask_head: the dynamic mask head.
            mask_branch: the mask-feature branch.
            controller: per-location module on the FCOS box tower giving ``mask_head.num_params``
                channels.
            pixel_mean, pixel_std: input normalisation (not checkpoint entries).
            max_proposals: at most this many random positives get the mask loss (-1: all).
            topk_proposals_per_image: alternatively, per image and GT keep the best positives
                (-1: off).
            mask_threshold: threshold of the final mask probabilities.
        """
        super().__init__()
        if max_proposals > 0 and topk_proposals_per_image > 0:
            raise ValueError(
                "MODEL.CONDINST.MAX_PROPOSALS and MODEL.CONDINST.TOPK_PROPOSALS_PER_IM cannot both "
                f"be set (got {max_proposals} and {topk_proposals_per_image}); set one to -1"
            )
        if not proposal_generator.positives_in_training:
            raise ValueError("CondInst needs an FCOS built with positives_in_training=True")
        # Registration order = state_dict order of AdelaiDet's checkpoints.
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.mask_head = mask_head
        self.mask_branch = mask_branch
        self.controller = controller
        self.max_proposals = max_proposals
        self.topk_proposals_per_image = topk_proposals_per_image
        self.mask_threshold = mask_threshold
        self.register_pixel_normalization(pixel_mean, pixel_std, backbone.size_divisibility)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        if cfg.MODEL.PROPOSAL_GENERATOR.NAME != "FCOS":
            raise ValueError(
                "CondInst runs on FCOS: MODEL.PROPOSAL_GENERATOR.NAME must be 'FCOS', got "
                f"{cfg.MODEL.PROPOSAL_GENERATOR.NAME!r}"
            )
        fcos = FCOS(cfg, shapes, proposals_in_training=False, positives_in_training=True)
        mask_branch = MaskBranch(cfg, shapes)
        mask_head = DynamicMaskHead(cfg, mask_feat_stride=mask_branch.out_stride)
        tower_channels = shapes[cfg.MODEL.FCOS.IN_FEATURES[0]].channels
        controller = nn.Conv2d(tower_channels, mask_head.num_params, kernel_size=3, padding=1)
        nn.init.normal_(controller.weight, std=0.01)
        nn.init.constant_(controller.bias, 0.0)
        condinst = cfg.MODEL.CONDINST
        return {
            "backbone": backbone,
            "proposal_generator": fcos,
            "mask_head": mask_head,
            "mask_branch": mask_branch,
            "controller": controller,
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
            "max_proposals": condinst.MAX_PROPOSALS,
            "topk_proposals_per_image": condinst.TOPK_PROPOSALS_PER_IM,
        }

    def forward(self, batched_inputs: List[Dict]):
        """detectron2's model interface: losses in training, per-image ``{"instances": ...}``
        (``pred_boxes``, ``scores``, ``pred_classes``, ``pred_masks`` bool (n, H, W),
        ``locations``, ``fpn_levels``) in inference."""
        if not self.training:
            return self.inference(batched_inputs)
        missing = [i for i, x in enumerate(batched_inputs) if "instances" not in x]
        if missing:
            raise ValueError(
                f"CondInst training needs 'instances' in every input; missing in {missing}"
            )
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        add_bitmasks(gt_instances, tuple(images.tensor.shape[-2:]), self.mask_head.mask_out_stride)
        mask_feats, losses = self.mask_branch(features, gt_instances)
        positives, fcos_losses = self.proposal_generator(
            images, features, gt_instances, top_module=self.controller
        )
        losses.update(fcos_losses)
        losses["loss_mask"] = self._mask_loss(mask_feats, positives, gt_instances)
        self.mask_head._iter += 1
        return losses

    def _gather_positives(
        self, positives: List[Instances], gt_instances: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """The batch's positives in CondInst's order (level, then image, then location), with
        ``im_inds`` and batch-wide ``gt_inds``."""
        fields = {name: torch.cat([p.get(name) for p in positives]) for name in _POSITIVE_FIELDS}
        device = fields["locations"].device
        fields["im_inds"] = torch.cat(
            [
                torch.full((len(p),), i, dtype=torch.int64, device=device)
                for i, p in enumerate(positives)
            ]
        )
        offsets = torch.tensor([0] + [len(g) for g in gt_instances[:-1]], device=device).cumsum(0)
        fields["gt_inds"] = torch.cat([p.gt_inds for p in positives]) + offsets[fields["im_inds"]]
        order = torch.argsort(
            fields["fpn_levels"] * len(positives) + fields["im_inds"], stable=True
        )
        return {name: value[order] for name, value in fields.items()}

    def _select_for_mask_loss(self, fields: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The MAX_PROPOSALS random subset or the TOPK_PROPOSALS_PER_IM best per image and GT."""
        num = len(fields["im_inds"])
        if 0 < self.max_proposals < num:
            keep = torch.randperm(num, device=fields["im_inds"].device)[: self.max_proposals]
            return {name: value[keep] for name, value in fields.items()}
        if self.topk_proposals_per_image <= 0:
            return fields
        quality = (
            fields["logits_pred"].sigmoid().max(dim=1).values * fields["ctrness_pred"].sigmoid()
        )
        kept = []
        for image in torch.unique(fields["im_inds"]):
            in_image = torch.nonzero(fields["im_inds"] == image).squeeze(1)
            gt_inds = fields["gt_inds"][in_image]
            unique_gts = torch.unique(gt_inds)
            per_gt = max(self.topk_proposals_per_image // len(unique_gts), 1)
            for gt in unique_gts:
                of_gt = in_image[gt_inds == gt]
                if len(of_gt) > per_gt:
                    of_gt = of_gt[quality[of_gt].topk(per_gt).indices]
                kept.append(of_gt)
        keep = torch.cat(kept) if kept else fields["im_inds"][:0]
        return {name: value[keep] for name, value in fields.items()}

    def _mask_loss(
        self, mask_feats: torch.Tensor, positives: List[Instances], gt_instances: List[Instances]
    ) -> torch.Tensor:
        """Mean dice loss of the selected positives against their GT's stride-4 bitmask."""
        fields = self._select_for_mask_loss(self._gather_positives(positives, gt_instances))
        if len(fields["im_inds"]) == 0:
            # A zero that keeps every mask parameter in the graph (DDP needs their gradients).
            return mask_feats.sum() * 0.0 + fields["top_feats"].sum() * 0.0
        logits = self.mask_head(
            mask_feats,
            fields["top_feats"],
            fields["locations"],
            fields["fpn_levels"],
            fields["im_inds"],
        )
        targets = torch.cat([g.gt_bitmasks for g in gt_instances])[fields["gt_inds"]]
        if targets.shape[1:] != logits.shape[2:]:
            raise ValueError(
                f"Mask logits {tuple(logits.shape[2:])} and stride-"
                f"{self.mask_head.mask_out_stride} targets {tuple(targets.shape[1:])} differ in "
                "size; the padded input size must be a multiple of the mask-branch stride"
            )
        return dice_loss(logits[:, 0].sigmoid(), targets).mean()

    def inference(self, batched_inputs: List[Dict], do_postprocess: bool = True) -> List:
        """Detections with masks.

        With ``do_postprocess`` False, per-image Instances in padded-input coordinates with
        ``pred_global_masks`` (n, 1, H_pad/s, W_pad/s) stride-s probabilities (s =
        MASK_OUT_STRIDE) and the dynamic parameters ``top_feat``; otherwise per-image dicts
        ``{"instances": ...}`` at the input's ``height`` x ``width``.
        """
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        mask_feats, _ = self.mask_branch(features)
        detections, _ = self.proposal_generator(images, features, None, top_module=self.controller)
        self.predict_masks(mask_feats, detections)
        if not do_postprocess:
            return detections
        padded_size = tuple(images.tensor.shape[-2:])
        return [
            {
                "instances": self.postprocess(
                    det,
                    x.get("height", det.image_size[0]),
                    x.get("width", det.image_size[1]),
                    padded_size,
                )
            }
            for det, x in zip(detections, batched_inputs)
        ]

    def predict_masks(self, mask_feats: torch.Tensor, detections: List[Instances]) -> None:
        """Add ``pred_global_masks`` (n, 1, H/s, W/s) probabilities to each image's detections."""
        predict_global_masks(self.mask_head, mask_feats, detections)

    def postprocess(
        self, detections: Instances, height: int, width: int, padded_size: Tuple[int, int]
    ) -> Instances:
        """One image's detections at the output size (:func:`postprocess_detections`)."""
        return postprocess_detections(detections, height, width, padded_size, self.mask_threshold)
