"""Bad input: broken COCO files and images fail with the file and record named, or are skipped
with a log line; never a silently wrong data set."""

import copy
import json
import logging

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from centermask.config import get_cfg
from centermask.data import (
    CheckedDatasetMapper,
    CocoFormatError,
    DatasetRecordError,
    load_coco_json_checked,
    register_coco_checked,
)

H, W = 40, 48


def _coco():
    square = [10.0, 10.0, 20.0, 10.0, 20.0, 20.0, 10.0, 20.0]
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "height": H, "width": W},
            {"id": 2, "file_name": "b.png", "height": H, "width": W},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 10, 10],
             "segmentation": [square], "area": 100.0, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [25, 5, 8, 12],
             "segmentation": [[25.0, 5.0, 33.0, 5.0, 33.0, 17.0]], "area": 48.0, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "wedge"}],
    }  # fmt: skip


def _write(tmp_path, data, name="ann.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    for file_name in ("a.png", "b.png"):
        if not (tmp_path / file_name).exists():
            cv2.imwrite(str(tmp_path / file_name), np.full((H, W, 3), 128, np.uint8))
    return path


def test_valid_file_loads_and_image_without_instances_is_kept(tmp_path):
    records = load_coco_json_checked(_write(tmp_path, _coco()), tmp_path, "checks_ok")
    assert [len(r["annotations"]) for r in records] == [2, 0]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_coco_json_checked(tmp_path / "nope.json", tmp_path)


def test_empty_annotation_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(CocoFormatError, match=r"empty: .*ann\.json"):
        load_coco_json_checked(_write(tmp_path, ""), tmp_path)


def test_malformed_json_is_an_error_naming_the_file_and_position(tmp_path):
    with pytest.raises(CocoFormatError, match=r"ann\.json is not valid json: .*line 1"):
        load_coco_json_checked(_write(tmp_path, '{"images": [}'), tmp_path)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: d.pop("categories"), "missing or non-list top-level key 'categories'"),
        (lambda d: d["images"][1].update(height=0), r"images\[1\] .*b\.png.* invalid height 0"),
        (lambda d: d["annotations"][1].update(image_id=9), r"annotations\[1\] \(id=2, image_id=9"),
        (lambda d: d["annotations"][0].update(category_id=7), "category_id 7 not in"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "must be 4 finite numbers"),
        (lambda d: d["annotations"][0].update(id=2), "duplicate annotation id"),
    ],
)
def test_malformed_records_are_errors_naming_the_record(tmp_path, corrupt, message):
    data = copy.deepcopy(_coco())
    corrupt(data)
    with pytest.raises(CocoFormatError, match=message):
        load_coco_json_checked(_write(tmp_path, data), tmp_path)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"bbox": [25, 5, 0, 12]}, "degenerate box"),
        ({"bbox": [60, 5, 8, 12]}, "outside"),
        ({"segmentation": [[25.0, 5.0, 33.0, 5.0]]}, "degenerate polygon"),
        ({"segmentation": [[25.0, 5.0, 30.0, 5.0, 33.0, 5.0]]}, "degenerate polygon"),  # no area
    ],
)
def test_degenerate_instances_are_skipped_with_a_log_or_rejected_in_strict_mode(
    tmp_path, caplog, change, reason
):
    data = copy.deepcopy(_coco())
    data["annotations"][1].update(change)
    path = _write(tmp_path, data)
    with caplog.at_level(logging.WARNING, logger="centermask.data.coco_checks"):
        records = load_coco_json_checked(path, tmp_path)
    assert [a["id"] for a in records[0]["annotations"]] == [1]
    assert reason in caplog.text and "id 2" in caplog.text and "a.png" in caplog.text
    with pytest.raises(CocoFormatError, match=reason):
        load_coco_json_checked(path, tmp_path, strict=True)


def test_rle_size_disagreeing_with_the_image_is_an_error(tmp_path):
    data = copy.deepcopy(_coco())
    data["annotations"][0]["segmentation"] = {"size": [H + 1, W], "counts": "abc"}
    with pytest.raises(CocoFormatError, match=r"RLE size \[41, 48\] disagrees .*a\.png"):
        load_coco_json_checked(_write(tmp_path, data), tmp_path)


def test_register_coco_checked_is_idempotent_and_uses_the_checks(tmp_path):
    path = _write(tmp_path, _coco())
    register_coco_checked("checks_registered", {}, str(path), str(tmp_path))
    register_coco_checked("checks_registered", {}, str(path), str(tmp_path))
    assert len(DatasetCatalog.get("checks_registered")) == 2
    bad = _write(tmp_path, "", name="empty.json")
    register_coco_checked("checks_registered", {}, str(bad), str(tmp_path))  # replaces
    with pytest.raises(CocoFormatError, match="empty"):
        DatasetCatalog.get("checks_registered")


def _mapper(is_train=True, mask_format="polygon"):
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (H,)
    cfg.INPUT.MIN_SIZE_TEST = H
    cfg.INPUT.MASK_FORMAT = mask_format
    cfg.MODEL.MASK_ON = True
    return CheckedDatasetMapper(cfg, is_train)


def _record(tmp_path, **overrides):
    records = load_coco_json_checked(_write(tmp_path, _coco()), tmp_path, "checks_mapper")
    return {**records[0], **overrides}


def test_mapper_maps_a_good_record(tmp_path):
    out = _mapper()(_record(tmp_path))
    assert out["image"].shape[1:] == (H, W) and len(out["instances"]) == 2


def test_corrupt_image_is_an_error_naming_file_and_image_id(tmp_path):
    record = _record(tmp_path)
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(DatasetRecordError, match=r"a\.png \(image_id=1\)"):
        _mapper()(record)


def test_missing_image_is_an_error_naming_it(tmp_path):
    record = _record(tmp_path, file_name=str(tmp_path / "gone.png"))
    with pytest.raises(DatasetRecordError, match=r"gone\.png \(image_id=1\)"):
        _mapper(is_train=False)(record)


def test_image_size_disagreeing_with_the_annotation_is_an_error(tmp_path):
    record = _record(tmp_path)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((H + 8, W, 3), np.uint8))
    with pytest.raises(DatasetRecordError, match=r"size disagrees .*a\.png \(image_id=1\)"):
        _mapper()(record)


def test_rle_masks_with_polygon_mask_format_name_the_key_to_set(tmp_path):
    record = _record(tmp_path)
    record["annotations"][0]["segmentation"] = {"size": [H, W], "counts": "0"}
    with pytest.raises(DatasetRecordError, match="INPUT.MASK_FORMAT 'bitmask'"):
        _mapper()(record)
