"""INPUT.AUGMENTATION "scale_crop_color": every training input is FIXED_SIZE x FIXED_SIZE, with
polygon masks cropped as bitmaps and boxes recomputed from them; bad settings are refused."""

import numpy as np
import pytest
import torch

from centermask.config import get_cfg
from centermask.data import CheckedDatasetMapper


def _record(tmp_path, height=120, width=200):
    import cv2

    path = tmp_path / "image.png"
    cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))
    square = [[20.0, 20.0, 180.0, 20.0, 180.0, 100.0, 20.0, 100.0]]
    return {"file_name": str(path), "height": height, "width": width, "image_id": 1,
            "annotations": [{"bbox": [20, 20, 160, 80], "bbox_mode": 1, "category_id": 0,
                             "segmentation": square, "iscrowd": 0}]}  # fmt: skip


def test_scale_crop_color_gives_fixed_size_inputs_with_boxes_inside(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.AUGMENTATION", "scale_crop_color", "INPUT.FIXED_SIZE", "64",
                         "MODEL.MASK_ON", "True", "INPUT.MASK_FORMAT", "bitmask"])  # fmt: skip
    mapper = CheckedDatasetMapper(cfg, is_train=True)
    np.random.seed(0)
    for _ in range(8):
        out = mapper(_record(tmp_path))
        assert tuple(out["image"].shape) == (3, 64, 64)
        boxes = out["instances"].gt_boxes.tensor
        masks = out["instances"].gt_masks
        assert (boxes >= 0).all() and (boxes <= 64).all()
        if len(boxes):  # tight around what the crop left of the mask
            torch.testing.assert_close(boxes, masks.get_bounding_boxes().tensor)


def test_unknown_augmentation_or_polygon_masks_name_the_key():
    cfg = get_cfg()
    cfg.INPUT.AUGMENTATION = "mosaic"
    with pytest.raises(ValueError, match="INPUT.AUGMENTATION.*'mosaic'"):
        CheckedDatasetMapper(cfg, is_train=True)
    cfg.merge_from_list(["INPUT.AUGMENTATION", "scale_crop_color", "MODEL.MASK_ON", "True"])
    with pytest.raises(ValueError, match="INPUT.MASK_FORMAT 'bitmask'"):
        CheckedDatasetMapper(cfg, is_train=True)
