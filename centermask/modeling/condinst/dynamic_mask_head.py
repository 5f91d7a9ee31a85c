"""CondInst's dynamic mask head: a tiny FCN per instance whose weights the controller predicts,
run on the shared mask features plus coordinates relative to the instance's location."""

from typing import List, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.structures import Instances
from torch import nn
from torch.nn import functional as F

from centermask.layers.aligned_bilinear import aligned_bilinear
from centermask.modeling.fcos.targets import compute_locations_per_level

__all__ = [
    "dynamic_param_counts",
    "split_dynamic_params",
    "DynamicMaskHead",
    "predict_global_masks",
]


def dynamic_param_counts(
    in_channels: int, channels: int, num_layers: int
) -> Tuple[List[int], List[int]]:
    """(weight counts, bias counts) per layer of the per-instance FCN: in -> channels -> ... -> 1."""
    widths = [in_channels] + [channels] * (num_layers - 1) + [1]
    weights = [w_in * w_out for w_in, w_out in zip(widths[:-1], widths[1:])]
    return weights, widths[1:]


def split_dynamic_params(
    params: torch.Tensor, in_channels: int, channels: int, num_layers: int
) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Split (n, P) controller outputs into per-layer weights (n, out, in) and biases (n, out, 1).

    The layout is CondInst's: all layers' weights first (each row-major (out, in)), then all
    biases.
    """
    weight_counts, bias_counts = dynamic_param_counts(in_channels, channels, num_layers)
    expected = sum(weight_counts) + sum(bias_counts)
    if params.shape[1] != expected:
        raise ValueError(
            f"The controller predicts {params.shape[1]} parameters per instance, the dynamic mask "
            f"head needs {expected} ({num_layers} layers, {channels} channels, {in_channels} "
            "inputs)"
        )
    chunks = torch.split(params, weight_counts + bias_counts, dim=1)
    n = params.shape[0]
    weights = [w.reshape(n, b, -1) for w, b in zip(chunks[:num_layers], bias_counts)]
    biases = [b.reshape(n, -1, 1) for b in chunks[num_layers:]]
    return weights, biases


class DynamicMaskHead(nn.Module):
    """Mask logits of n instances from their dynamic parameters and the shared mask features.

    Input of each instance's FCN at every mask-feature pixel: (rel_x, rel_y, features...), with
    rel = (instance location - pixel location) / size_of_interest[instance level]. Its logits are
    upsampled with :func:`aligned_bilinear` from the mask-feature stride to ``mask_out_stride``.

    Buffers (checkpoint keys of CondInst): ``sizes_of_interest`` (int64, the FCOS sizes of
    interest plus one more level; a checkpoint's values override the config's) and ``_iter``
    (training-step counter).
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int = 8,
        channels: int = 8,
        num_layers: int = 3,
        mask_feat_stride: int = 8,
        mask_out_stride: int = 4,
        disable_rel_coords: bool = False,
        sizes_of_interest: Sequence[int] = (64, 128, 256, 512),
    ):
        """
        Args:
            in_channels: mask feature channels.
            channels: width of the hidden dynamic layers.
            num_layers: dynamic 1x1 conv layers.
            mask_feat_stride: stride of the mask features.
            mask_out_stride: stride of the output logits (divides ``mask_feat_stride``).
            disable_rel_coords: no relative coordinates in the input.
            sizes_of_interest: FCOS level boundaries; level l normalises by [..., 2*last][l].
        """
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MODEL.CONDINST.MASK_HEAD.NUM_LAYERS must be >= 1, got {num_layers}")
        if mask_feat_stride % mask_out_stride != 0:
            raise ValueError(
                f"MODEL.CONDINST.MASK_OUT_STRIDE {mask_out_stride} must divide the mask-branch "
                f"stride {mask_feat_stride}"
            )
        self.channels = channels
        self.num_layers = num_layers
        self.mask_feat_stride = mask_feat_stride
        self.mask_out_stride = mask_out_stride
        self.disable_rel_coords = disable_rel_coords
        self.in_channels = in_channels + (0 if disable_rel_coords else 2)
        weights, biases = dynamic_param_counts(self.in_channels, channels, num_layers)
        self.num_params = sum(weights) + sum(biases)
        soi = [int(s) for s in sizes_of_interest]
        self.register_buffer("sizes_of_interest", torch.tensor(soi + [soi[-1] * 2]))
        self.register_buffer("_iter", torch.zeros([1]))

    @classmethod
    def from_config(cls, cfg, mask_feat_stride: int):
        head = cfg.MODEL.CONDINST.MASK_HEAD
        return {
            "in_channels": cfg.MODEL.CONDINST.MASK_BRANCH.OUT_CHANNELS,
            "channels": head.CHANNELS,
            "num_layers": head.NUM_LAYERS,
            "mask_feat_stride": mask_feat_stride,
            "mask_out_stride": cfg.MODEL.CONDINST.MASK_OUT_STRIDE,
            "disable_rel_coords": head.DISABLE_REL_COORDS,
            "sizes_of_interest": list(cfg.MODEL.FCOS.SIZES_OF_INTEREST),
        }

    def _check_sizes_of_interest(self, sizes: torch.Tensor) -> None:
        """Reject non-positive sizes of interest. The check reads the buffer on the host, so it
        runs once per buffer content (a new tensor, or one changed in place, bumps ``_version``)
        rather than once per forward, which would wait for the device every iteration."""
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return
        version = (id(sizes), sizes._version)
        if getattr(self, "_checked_sizes", None) == version:
            return
        if (sizes <= 0).any():
            raise ValueError(
                f"mask_head.sizes_of_interest must be positive, got {sizes.tolist()} (a "
                "checkpoint with float values there is truncated to int64)"
            )
        self._checked_sizes = version

    def _relative_coords(
        self, locations: torch.Tensor, fpn_levels: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        """(n, 2, H*W) (instance - pixel) / size of interest of the instance's level."""
        sizes = self.sizes_of_interest
        self._check_sizes_of_interest(sizes)
        grid = compute_locations_per_level(
            height, width, self.mask_feat_stride, locations.device
        )  # (H*W, 2)
        relative = locations[:, None, :] - grid[None, :, :]  # (n, H*W, 2)
        scale = sizes.to(relative.dtype)[fpn_levels]
        return (relative.permute(0, 2, 1) / scale[:, None, None]).to(locations.dtype)

    def forward(
        self,
        mask_feats: torch.Tensor,
        params: torch.Tensor,
        locations: torch.Tensor,
        fpn_levels: torch.Tensor,
        im_inds: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            mask_feats: (N, C, H, W) mask features of the batch.
            params: (n, num_params) dynamic parameters of n instances.
            locations: (n, 2) instances' FCOS locations (x, y) in padded-input pixels.
            fpn_levels: (n,) FCOS level of each instance (0 = finest).
            im_inds: (n,) image of each instance.

        Returns:
            (n, 1, H*f, W*f) mask logits, f = mask_feat_stride / mask_out_stride.
        """
        n = params.shape[0]
        _, channels, height, width = mask_feats.shape
        x = mask_feats[im_inds].reshape(n, channels, height * width)
        if not self.disable_rel_coords:
            coords = self._relative_coords(locations, fpn_levels, height, width)
            x = torch.cat([coords.to(x.dtype), x], dim=1)
        weights, biases = split_dynamic_params(
            params, self.in_channels, self.channels, self.num_layers
        )
        for layer, (weight, bias) in enumerate(zip(weights, biases)):
            x = torch.baddbmm(bias, weight, x)
            if layer < self.num_layers - 1:
                x = F.relu(x)
        logits = x.reshape(n, 1, height, width)
        return aligned_bilinear(logits, self.mask_feat_stride // self.mask_out_stride)


def predict_global_masks(
    mask_head: DynamicMaskHead, mask_feats: torch.Tensor, detections: List[Instances]
) -> None:
    """Add ``pred_global_masks`` (n, 1, H*f, W*f) probabilities to each image's detections.

    Args:
        mask_head: the dynamic mask head.
        mask_feats: (N, C, H, W) mask features of the batch.
        detections: per image, with ``top_feat`` (dynamic parameters), ``locations`` and
            ``fpn_levels``; images without detections get (0, 1, H*f, W*f).
    """
    counts = [len(d) for d in detections]
    params = torch.cat([d.top_feat for d in detections])
    scale = mask_head.mask_feat_stride // mask_head.mask_out_stride
    height, width = (size * scale for size in mask_feats.shape[2:])
    if params.shape[0] == 0:
        probs = mask_feats.new_zeros((0, 1, height, width))
    else:
        im_inds = torch.cat(
            [
                torch.full((n,), i, dtype=torch.int64, device=params.device)
                for i, n in enumerate(counts)
            ]
        )
        locations = torch.cat([d.locations for d in detections])
        levels = torch.cat([d.fpn_levels for d in detections])
        probs = mask_head(mask_feats, params, locations, levels, im_inds).sigmoid()
    for det, image_probs in zip(detections, probs.split(counts)):
        det.pred_global_masks = image_probs
