"""Images too large to decode (by their header) are refused naming the file; the demo skips them."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from centermask.cli.demo import read_image
from centermask.config import get_cfg
from centermask.data import CheckedDatasetMapper, DatasetRecordError, ImageTooLargeError
from centermask.data.image_guard import check_image_header
from tests.support.helpers import QUICK_CONFIGS

CONFIG = QUICK_CONFIGS / "centermask_lite_V_19_slim_dw_synthetic_instant_test.yaml"


def _bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A PNG of a few dozen bytes whose header claims ``width`` x ``height`` pixels."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def _image(path: Path, size=(20, 20)) -> Path:
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)
    return path


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = _bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png"):
        check_image_header(str(bomb), max_pixels=8192 * 8192)


def test_more_pixels_than_the_limit_are_refused_naming_the_limit(tmp_path):
    image = _image(tmp_path / "scan.png", size=(20, 20))
    with pytest.raises(ImageTooLargeError, match=r"scan\.png: 20 x 20 = 400 pixels .*=399"):
        check_image_header(str(image), max_pixels=399)
    check_image_header(str(image), max_pixels=400)
    check_image_header(str(image), max_pixels=0)  # no limit


def _mapper(max_pixels: int) -> CheckedDatasetMapper:
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.INPUT.MAX_IMAGE_PIXELS = max_pixels
    return CheckedDatasetMapper(cfg, False)


def test_the_dataset_mapper_refuses_a_bomb_naming_the_record(tmp_path):
    bomb = _bomb(tmp_path / "bomb.png")
    record = {"file_name": str(bomb), "image_id": 7, "height": 100_000, "width": 100_000}
    with pytest.raises(DatasetRecordError, match=r"bomb\.png \(image_id=7\).*MAX_IMAGE_PIXELS"):
        _mapper(8192 * 8192)(record)


def test_the_dataset_mapper_reads_images_within_the_limit(tmp_path):
    image = _image(tmp_path / "ok.png", size=(30, 20))
    record = {"file_name": str(image), "image_id": 1, "height": 20, "width": 30}
    assert _mapper(600)(record)["image"].shape[0] == 3
    with pytest.raises(DatasetRecordError, match=r"ok\.png.*600 pixels .*=599"):
        _mapper(599)(record)


def test_the_demo_reports_a_bomb_as_too_large_and_reads_the_rest(tmp_path):
    image, reason = read_image(str(_bomb(tmp_path / "bomb.png")), 8192 * 8192)
    assert image is None and reason.startswith("too large") and "bomb.png" in reason
    image, reason = read_image(str(_image(tmp_path / "ok.png")), 8192 * 8192)
    assert reason is None and image.shape == (20, 20, 3)
