"""A DatasetMapper whose failures name the image file and the data set record."""

import logging

from detectron2.data import DatasetMapper
from detectron2.data.detection_utils import SizeMismatchError

__all__ = ["DatasetRecordError", "CheckedDatasetMapper"]

logger = logging.getLogger(__name__)


class DatasetRecordError(RuntimeError):
    """A data set record (image file + annotations) that cannot be turned into model inputs."""


class CheckedDatasetMapper(DatasetMapper):
    """detectron2's ``DatasetMapper`` (same config, same outputs) with explicit errors.

    * an unreadable or corrupt image file, or an image whose size differs from the ``height`` /
      ``width`` of its record, raises :class:`DatasetRecordError` naming the file and the
      ``image_id`` (detectron2 alone raises a bare PIL or shape error from inside a worker);
    * RLE (dict) segmentations with ``INPUT.MASK_FORMAT: polygon`` raise an error telling which key
      to set, rather than failing inside ``PolygonMasks``.
    """

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
        try:
            return super().__call__(dataset_dict)
        except SizeMismatchError as e:
            raise DatasetRecordError(
                f"Image size disagrees with its annotation for {record}: {e}"
            ) from e
        except (OSError, SyntaxError, ValueError) as e:
            # PIL raises OSError (incl. UnidentifiedImageError / truncated files) or SyntaxError
            # for corrupt files; FileNotFoundError is an OSError.
            raise DatasetRecordError(f"Cannot load record {record}: {type(e).__name__}: {e}") from e
