"""The CondInst inference pipeline, split into a dense part and the per-detection part, and
``optimize_for_inference`` for CondInst.

:class:`CondInstInference` returns what ``CondInst(inputs)`` returns, running the same modules:
the tensor-in/tensor-out part (backbone, FPN, FCOS head, controller, mask branch) is one module,
:class:`DenseCondInst` (swappable for an optimised, compiled or ONNX Runtime version); FCOS
decoding (early-stopping NMS, as for CenterMask), the dynamic mask head and the mask upsampling
run in PyTorch under ``torch.inference_mode``.
"""

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.structures import Instances
from torch import nn

from centermask.modeling.condinst import CondInst
from centermask.modeling.condinst.dynamic_mask_head import predict_global_masks
from centermask.modeling.condinst.postprocess import postprocess_detections
from centermask.modeling.preprocessing import ImageNormalizer

from .dtypes import DtypeLike, autocast_to, compile_dense, parse_dtype
from .fold_batchnorm import fold_frozen_batchnorm
from .fused_modules import FusedFCOSHead, fuse_conv_activations
from .inference_model import FCOSDecoding, limited_threads

__all__ = ["DenseCondInst", "CondInstInference", "optimize_condinst_for_inference"]


def check_condinst_model(model: nn.Module) -> None:
    if not isinstance(model, CondInst):
        raise TypeError(f"expected a CondInst model, got {type(model).__name__}")


class DenseCondInst(nn.Module):
    """Backbone + FPN + FCOS head + controller + mask branch with tensor outputs (the ONNX graph).

    Input: (N, 3, H, W) normalised, padded images. Output: a flat tuple of, per FCOS level, the
    class logits (N, K, H_l, W_l), then per level the box regression (N, 4, H_l, W_l), the
    centerness logits (N, 1, H_l, W_l) and the dynamic parameters (N, P, H_l, W_l), and last the
    mask features (N, C, H/8, W/8).
    """

    def __init__(
        self,
        backbone: nn.Module,
        fcos_head: nn.Module,
        controller: nn.Module,
        mask_branch: nn.Module,
        fcos_features: Sequence[str],
    ):
        super().__init__()
        self.backbone = backbone
        self.fcos_head = fcos_head
        self.controller = controller
        self.mask_branch = mask_branch
        self.fcos_features = list(fcos_features)

    @classmethod
    def from_model(cls, model: CondInst) -> "DenseCondInst":
        """The dense part of a CondInst model (sharing its modules)."""
        check_condinst_model(model)
        fcos = model.proposal_generator
        return cls(
            model.backbone, fcos.fcos_head, model.controller, model.mask_branch, fcos.in_features
        )

    def output_names(self) -> List[str]:
        names = []
        for kind in ("logits", "bbox_reg", "ctrness", "top_feats"):
            names += [f"{kind}_{f}" for f in self.fcos_features]
        return names + ["mask_feats"]

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = self.backbone(images)
        logits, bbox_reg, ctrness, towers = self.fcos_head(
            [features[f] for f in self.fcos_features]
        )[:4]
        top_feats = [self.controller(tower) for tower in towers]
        mask_feats, _ = self.mask_branch(features)  # a module call: timing hooks see it
        return (*logits, *bbox_reg, *ctrness, *top_feats, mask_feats)


def split_condinst_outputs(outputs: Sequence[torch.Tensor], num_levels: int):
    """Flat :class:`DenseCondInst` outputs -> (logits, bbox_reg, ctrness, top_feats) per level
    and the mask features."""
    if len(outputs) != 4 * num_levels + 1:
        raise ValueError(
            f"expected {4 * num_levels + 1} dense CondInst outputs (4 x {num_levels} FCOS levels "
            f"and the mask features), got {len(outputs)}"
        )
    per_level = [list(outputs[i * num_levels : (i + 1) * num_levels]) for i in range(4)]
    return (*per_level, outputs[-1])


class CondInstInference(ImageNormalizer):
    """CondInst inference with the outputs of ``model(inputs)`` (see the module docstring).

    Children: ``dense`` (:class:`DenseCondInst` or a drop-in with the same outputs) and
    ``mask_head`` (the model's dynamic mask head).
    """

    def __init__(
        self,
        model: CondInst,
        dense: Optional[nn.Module] = None,
        *,
        channels_last: bool = False,
        dtype: Optional[torch.dtype] = None,
        postprocess_threads: Optional[int] = None,
    ):
        """
        Args:
            model: the CondInst model; its modules are shared, not copied.
            dense: replaces ``DenseCondInst.from_model(model)``; same tensors in and out.
            channels_last: feed the dense part NHWC-strided images.
            dtype: run the dense part under autocast to this dtype; decoding, the dynamic mask
                head and the mask upsampling stay in float32.
            postprocess_threads: CPU intra-op threads for FCOS decoding (None: the global
                setting); the mask head and the mask upsampling use all threads.
        """
        super().__init__()
        check_condinst_model(model)
        layout = DenseCondInst.from_model(model)
        self.dense = dense if dense is not None else layout
        self.num_levels = len(layout.fcos_features)
        self.mask_head = model.mask_head
        self.mask_threshold = model.mask_threshold
        self.register_pixel_normalization(
            model.pixel_mean, model.pixel_std, model.backbone.size_divisibility
        )
        self.decoding = FCOSDecoding.from_fcos(model.proposal_generator)
        self.channels_last = channels_last
        self.dtype = dtype
        self.postprocess_threads = postprocess_threads
        self.train(False)

    def inference(self, batched_inputs: List[Dict], do_postprocess: bool = True):
        """Same contract as :meth:`CondInst.inference`."""
        with torch.inference_mode():
            images = self.preprocess_image(batched_inputs)
            tensor = images.tensor
            if self.channels_last:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            with autocast_to(self.device, self.dtype):
                outputs = self.dense(tensor)
            outputs = [x.float() for x in outputs]
            logits, bbox_reg, ctrness, top_feats, mask_feats = split_condinst_outputs(
                outputs, self.num_levels
            )
            with limited_threads(self.device, self.postprocess_threads):
                detections = self.decoding(
                    logits, bbox_reg, ctrness, images.image_sizes, top_feats=top_feats
                )
            # Mask head and upsampling work on whole-image maps: all threads.
            predict_global_masks(self.mask_head, mask_feats.contiguous(), detections)
            if not do_postprocess:
                return detections
            padded_size = tuple(tensor.shape[-2:])
            return [
                {
                    "instances": postprocess_detections(
                        det,
                        x.get("height", det.image_size[0]),
                        x.get("width", det.image_size[1]),
                        padded_size,
                        self.mask_threshold,
                    )
                }
                for det, x in zip(detections, batched_inputs)
            ]

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> List[Dict[str, Instances]]:
        if self.training:
            raise RuntimeError("CondInstInference is for inference; train the original model")
        return self.inference(batched_inputs)


def optimize_condinst_for_inference(
    model: CondInst,
    *,
    fold_frozen_bn: bool = True,
    channels_last: Optional[bool] = None,
    compile: bool = False,
    dtype: DtypeLike = None,
    fuse: bool = True,
    postprocess_threads: Optional[int] = 1,
    inplace: bool = False,
) -> CondInstInference:
    """:func:`centermask.optimize_for_inference` for CondInst: frozen and eval-mode BatchNorms
    folded into their convs (backbone and mask branch), conv + ReLU fused, the FCOS towers
    merged, NHWC memory order on the CPU (and on CUDA with a 16-bit ``dtype``), optional
    ``torch.compile`` of the dense part (dynamic shapes,
    :func:`~centermask.acceleration.dtypes.compile_dense`), optional autocast of the dense part
    to ``dtype`` ("fp16" / "bf16") with float32 decoding and mask head."""
    check_condinst_model(model)
    dtype = parse_dtype(dtype)
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if fold_frozen_bn:
        fold_frozen_batchnorm(model)
    if channels_last is None:
        half = dtype in (torch.float16, torch.bfloat16)
        channels_last = model.pixel_mean.device.type == "cpu" or half
    dense = DenseCondInst.from_model(model)
    if fuse:
        fused_head = FusedFCOSHead.from_head(dense.fcos_head)
        if fused_head is not None:
            dense.fcos_head = fused_head
        if not compile:
            fuse_conv_activations(dense)
    if channels_last:
        dense = dense.to(memory_format=torch.channels_last)
    if compile:
        dense = compile_dense(dense)
    return CondInstInference(
        model,
        dense,
        channels_last=channels_last,
        dtype=dtype,
        postprocess_threads=postprocess_threads,
    )
