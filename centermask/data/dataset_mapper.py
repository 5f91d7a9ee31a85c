"""A DatasetMapper whose failures name the image file and the data set record."""

import logging

import pycocotools.mask as mask_util
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.utils.file_io import PathManager
from PIL import Image

from .augmentation import build_train_augmentation
from .image_guard import check_image_header

__all__ = ["DatasetRecordError", "CheckedDatasetMapper"]

logger = logging.getLogger(__name__)


class DatasetRecordError(RuntimeError):
    """A data set record (image file + annotations) that cannot be turned into model inputs."""


class CheckedDatasetMapper(DatasetMapper):
    """detectron2's ``DatasetMapper`` (same config, same outputs) with explicit errors, and the
    training augmentation of ``INPUT.AUGMENTATION`` (:mod:`.augmentation`).

    * an unreadable or corrupt image file, or an image whose size differs from the ``height`` /
      ``width`` of its record, raises :class:`DatasetRecordError` naming the file and the
      ``image_id`` (detectron2 alone raises a bare PIL or shape error from inside a worker);
    * RLE (dict) segmentations with ``INPUT.MASK_FORMAT: polygon`` raise an error telling which key
      to set, rather than failing inside ``PolygonMasks``;
    * an image whose header claims more than ``INPUT.MAX_IMAGE_PIXELS`` pixels is refused before
      it is decoded (:mod:`.image_guard`), with the same error.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        rasterize_polygons: bool = False,
        max_image_pixels: int = 0,
        **kwargs,
    ):
        """``rasterize_polygons``: turn polygon masks into RLE before the augmentations (which
        then crop bitmaps; cropping polygons would need shapely). ``max_image_pixels``: larger
        images are refused from their header (0: no limit)."""
        super().__init__(is_train, **kwargs)
        self.rasterize_polygons = rasterize_polygons
        self.max_image_pixels = max_image_pixels

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["max_image_pixels"] = cfg.INPUT.MAX_IMAGE_PIXELS
        if is_train and cfg.INPUT.AUGMENTATION != "resize_shortest_edge":
            ret["augmentations"] = build_train_augmentation(cfg)
            if cfg.MODEL.MASK_ON:
                if cfg.INPUT.MASK_FORMAT != "bitmask":
                    raise ValueError(
                        f"INPUT.AUGMENTATION={cfg.INPUT.AUGMENTATION!r} crops masks as bitmaps: "
                        f"set INPUT.MASK_FORMAT 'bitmask' (the config says "
                        f"{cfg.INPUT.MASK_FORMAT!r})"
                    )
                # Fixed-size crops cut masks: tight boxes come from what is left of them.
                ret["recompute_boxes"] = True
                ret["rasterize_polygons"] = True
        return ret

    @staticmethod
    def _polygons_as_rle(dataset_dict: dict) -> dict:
        height, width = dataset_dict["height"], dataset_dict["width"]
        annotations = []
        for ann in dataset_dict.get("annotations", ()):
            segm = ann.get("segmentation")
            if isinstance(segm, list):
                ann = {**ann, "segmentation": mask_util.merge(
                    mask_util.frPyObjects(segm, height, width))}  # fmt: skip
            annotations.append(ann)
        return {**dataset_dict, "annotations": annotations}

    def __call__(self, dataset_dict: dict) -> dict:
        file_name = dataset_dict.get("file_name", "<no file_name>")
        record = f"{file_name} (image_id={dataset_dict.get('image_id')!r})"
        if self.is_train and self.instance_mask_format == "polygon":
            for ann in dataset_dict.get("annotations", ()):
                if isinstance(ann.get("segmentation"), dict):
                    raise DatasetRecordError(
                        f"{record} has RLE masks, which need INPUT.MASK_FORMAT 'bitmask' "
                        "(the config says 'polygon')"
                    )
        if self.is_train and self.rasterize_polygons:
            dataset_dict = self._polygons_as_rle(dataset_dict)
        try:
            if self.max_image_pixels > 0:
                with PathManager.open(file_name, "rb") as f:  # the header only
                    check_image_header(f, self.max_image_pixels, name=file_name)
            return super().__call__(dataset_dict)
        except SizeMismatchError as e:
            raise DatasetRecordError(
                f"Image size disagrees with its annotation for {record}: {e}"
            ) from e
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            # PIL raises OSError (incl. UnidentifiedImageError / truncated files) or SyntaxError
            # for corrupt files; FileNotFoundError is an OSError.
            raise DatasetRecordError(f"Cannot load record {record}: {type(e).__name__}: {e}") from e
