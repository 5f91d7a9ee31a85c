"""``optimize_for_inference``: a faster model for inference with the same outputs.

:func:`optimize_for_inference` dispatches on the model's design (:mod:`centermask.designs`);
:func:`optimize_centermask_for_inference` is CenterMask's row.
"""

import copy
from typing import Optional

import torch
from detectron2.modeling.meta_arch.rcnn import GeneralizedRCNN
from torch import nn

from centermask.designs import design_of, resolve

from .dtypes import DtypeLike, compile_dense, parse_dtype
from .fold_batchnorm import fold_frozen_batchnorm
from .fused_modules import ClassSelectedMaskPredictor, FusedFCOSHead, fuse_conv_activations
from .inference_model import CenterMaskInference, DenseCenterMask, check_centermask_model

__all__ = ["optimize_centermask_for_inference", "optimize_for_inference"]


def optimize_for_inference(model: nn.Module, **options) -> nn.Module:
    """A faster inference version of a CenterMask, CondInst or CenterMask-PR model, called like
    it and returning what ``model(inputs)`` returns.

    Usage::

        model = build_model(cfg); CenterMaskCheckpointer(model).load(weights)
        fast = centermask.optimize_for_inference(model)
        outputs = fast([{"image": chw_bgr_float_tensor, "height": h, "width": w}])

    ``options`` (keyword-only, the same for every design; see
    :func:`optimize_centermask_for_inference` for what each does): ``fold_frozen_bn``,
    ``channels_last``, ``compile``, ``dtype``, ``fuse``, ``postprocess_threads``, ``inplace``.
    Every design autocasts its dense part (backbone, FPN, dense heads) to ``dtype`` and runs
    decoding and post-processing in float32.
    """
    return resolve(design_of(model).optimize)(model, **options)


def optimize_centermask_for_inference(
    model: GeneralizedRCNN,
    *,
    fold_frozen_bn: bool = True,
    channels_last: Optional[bool] = None,
    compile: bool = False,
    dtype: DtypeLike = None,
    fuse: bool = True,
    postprocess_threads: Optional[int] = 1,
    inplace: bool = False,
) -> CenterMaskInference:
    """A faster inference version of a CenterMask model, returning what ``model(inputs)`` returns.

    What it does (measured by ``tools/analysis/benchmark.py``; numbers in docs/BENCHMARKS.md):

    * **Folds FrozenBatchNorm** into the preceding conv of the backbone (VoVNet, MobileNetV2,
      ResNet), so each backbone layer is one op instead of two.
    * **Fuses** (``fuse``): conv + ReLU/ReLU6 into one oneDNN op on the CPU (VoVNet/MobileNetV2
      units, SAG-Mask and MaskIoU convs); the FCOS class and box towers into one tower of grouped
      convs (half the ops per level); the 1x1 mask predictor evaluated for the predicted class
      only (1 of K maps).
    * **channels-last** (NHWC) memory format for the backbone, FPN and FCOS head. On the CPU this
      is the largest gain (oneDNN runs depthwise and 1x1 convs much faster in NHWC).
    * Runs under ``torch.inference_mode``. FCOS decoding is vectorised over levels and images
      (one top-k per level, no host synchronisation) and its class-aware NMS stops as soon as the
      ``post_nms_topk`` best survivors are known (same detections, CPU).
    * **Batched mask pasting**: one ``grid_sample`` per group of masks instead of one per mask,
      with bit-identical masks.
    * Runs FCOS decoding and post-processing with ``postprocess_threads`` CPU threads (1): their
      tensors are small, and with more threads every op waits for the slowest worker.
    * Optional ``torch.compile`` of the dense part (backbone + FPN + FCOS head).
    * Optional autocast of the dense part to fp16/bf16 (meant for GPUs); FCOS decoding, the RoI
      heads and post-processing stay in float32.

    In float32 the outputs equal those of ``model`` up to float rounding (the parity tests hold).

    Args:
        model: a GeneralizedRCNN with the FCOS proposal generator and CenterROIHeads (any
            backbone of this package or detectron2's ResNet).
        fold_frozen_bn: fold FrozenBatchNorm2d (and eval-mode BatchNorm2d) into the convs.
        channels_last: NHWC memory format for the dense part and the mask heads. Default: on for
            CPU, and on CUDA only with a 16-bit ``dtype`` (tensor cores prefer NHWC).
        compile: ``torch.compile`` the dense part with dynamic shapes and weight freezing
            (:func:`~centermask.acceleration.dtypes.compile_dense`). The first call compiles
            (minutes on a small CPU); other input sizes reuse the graph.
        dtype: None / "fp32" for float32, or "fp16" / "bf16" to autocast the dense part.
        fuse: apply the fusions listed above (conv + activation fusion is skipped with
            ``compile``, which fuses by itself).
        postprocess_threads: CPU threads for decoding and post-processing; None keeps the global
            ``torch.get_num_threads()``.
        inplace: modify ``model`` itself instead of a deep copy. The folded model has different
            state_dict keys, so do not save it as a checkpoint.

    Returns:
        A :class:`CenterMaskInference` module in eval mode, on the model's device.
    """
    check_centermask_model(model)
    dtype = parse_dtype(dtype)
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    device = model.pixel_mean.device
    if fold_frozen_bn:
        fold_frozen_batchnorm(model)
    if channels_last is None:
        half = dtype in (torch.float16, torch.bfloat16)
        channels_last = device.type == "cpu" or half
    dense = DenseCenterMask.from_model(model)
    mask_predictor = None
    if fuse:
        fused_head = FusedFCOSHead.from_head(dense.fcos_head)
        if fused_head is not None:
            dense.fcos_head = fused_head
        if not compile:
            fuse_conv_activations(dense)
            fuse_conv_activations(model.roi_heads)
        mask_head = getattr(model.roi_heads, "mask_head", None)
        predictor = getattr(mask_head, "predictor", None)
        if isinstance(predictor, nn.Conv2d) and predictor.kernel_size == (1, 1):
            mask_predictor = ClassSelectedMaskPredictor(predictor)
            mask_head.predictor = nn.Identity()
    if channels_last:
        dense = dense.to(memory_format=torch.channels_last)
        # The mask and MaskIoU convs run on up to 100 RoIs of 14x14: 10-20% faster in NHWC too.
        model.roi_heads.to(memory_format=torch.channels_last)
    if compile:
        dense = compile_dense(dense)
    pipeline = CenterMaskInference(
        model,
        dense,
        mask_predictor=mask_predictor,
        channels_last=channels_last,
        dtype=dtype,
        postprocess_threads=postprocess_threads,
    )
    return pipeline.eval()
