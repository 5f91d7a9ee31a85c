"""centermask demo (tools/demo.py) and BatchPredictor, with a randomly initialised model that keeps
every candidate."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.structures import Boxes, Instances

from centermask.checkpoint import AtomicCheckpointer
from centermask.cli import demo
from centermask.config import get_cfg
from centermask.engine import BatchPredictor, Trainer, filter_by_score
from tests.support.helpers import QUICK_CONFIGS, run_cli

CONFIG = QUICK_CONFIGS / "centermask_lite_V_19_slim_dw_synthetic_instant_test.yaml"
OPTS = ["MODEL.FCOS.INFERENCE_TH_TEST", "0.0", "MODEL.FCOS.POST_NMS_TOPK_TEST", "10"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("weights")
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    # Untrained box regressions sit near 0 (empty boxes, dropped at post-processing): give every
    # location a box reaching ~2 strides to each side.
    torch.nn.init.constant_(model.proposal_generator.fcos_head.bbox_pred.bias, 2.0)
    AtomicCheckpointer(model, str(out)).save("random")
    return str(out / "random.pth")


@pytest.fixture(scope="module")
def cfg(weights):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(["MODEL.WEIGHTS", weights, *OPTS])
    return cfg


def _images(count, height=72, width=100):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for _ in range(count)]


def test_batch_predictor_gives_the_same_instances_batched_or_one_by_one(cfg):
    predictor = BatchPredictor(cfg, batch_size=3)
    images = _images(3)
    batched = predictor(images)
    single = [predictor.predict_one(image) for image in images]
    assert len(batched) == 3
    for a, b in zip(batched, single):
        assert len(a) == len(b) > 0
        assert a.image_size == (72, 100)
        assert torch.equal(a.pred_classes, b.pred_classes)
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.mask_scores, b.mask_scores, atol=1e-4, rtol=1e-4)
        assert a.pred_masks.dtype == torch.bool and a.pred_masks.shape[1:] == (72, 100)


def test_batch_predictor_rejects_non_images(cfg):
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        BatchPredictor(cfg)([np.zeros((10, 10), np.uint8)])


def test_batch_predictor_rejects_empty_and_non_uint8_images_naming_the_index(cfg):
    predictor = BatchPredictor(cfg, batch_size=2)
    good = _images(1)[0]
    with pytest.raises(ValueError, match=r"image 1 is empty: shape \(0, 100, 3\)"):
        predictor([good, np.zeros((0, 100, 3), np.uint8)])
    with pytest.raises(ValueError, match="image 2: expected a uint8 BGR image.*float32"):
        predictor([good, good, good.astype(np.float32)])


def test_filter_by_score_uses_the_named_score():
    instances = Instances((4, 4))
    instances.pred_boxes = Boxes(torch.zeros(3, 4))
    instances.scores = torch.tensor([0.75, 0.5, 0.25])
    instances.mask_scores = torch.tensor([0.25, 0.625, 0.125])
    assert filter_by_score(instances, 0.4, "box").scores.tolist() == [0.75, 0.5]
    assert filter_by_score(instances, 0.4, "mask").mask_scores.tolist() == [0.625]
    with pytest.raises(ValueError, match="score must be one of"):
        filter_by_score(instances, 0.4, "iou")


def test_demo_on_a_folder_writes_one_drawn_image_per_input(weights, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, image in enumerate(_images(2, 64, 90)):
        cv2.imwrite(str(folder / f"img{i}.png"), image)
    out = tmp_path / "out"
    written = run_cli(demo, 
        ["--config-file", str(CONFIG), "--input", str(folder), "--output", str(out),
         "--confidence-threshold", "0.0", "--score", "mask", "--color-by-mask-score",
         "--opts", "MODEL.WEIGHTS", weights, *OPTS]
    ).written  # fmt: skip
    assert sorted(Path(p).name for p in written) == ["img0.png", "img1.png"]
    for path in written:
        drawn = cv2.imread(path)
        assert drawn.shape == (64, 90, 3)
        assert not np.array_equal(drawn, cv2.imread(str(folder / Path(path).name)))


def test_demo_names_inputs_that_match_nothing(weights, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here.*matches no file"):
        run_cli(demo, 
            ["--config-file", str(CONFIG), "--input", str(tmp_path / "nothing-here*.jpg"),
             "--output", str(tmp_path), "--opts", "MODEL.WEIGHTS", weights]
        )  # fmt: skip


def test_demo_on_a_video_writes_a_video_with_every_frame(weights, tmp_path):
    video = tmp_path / "in.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (90, 64))
    for frame in _images(3, 64, 90):
        writer.write(frame)
    writer.release()
    out = tmp_path / "out.mp4"
    written = run_cli(demo, 
        ["--config-file", str(CONFIG), "--video-input", str(video), "--output", str(out),
         "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS", weights, *OPTS]
    ).written  # fmt: skip
    assert written == [str(out)]
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


def test_demo_skips_and_names_broken_files_draws_the_rest_and_fails_the_exit_status(
    weights, tmp_path
):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, image in enumerate(_images(3, 64, 90)):
        cv2.imwrite(str(folder / f"img{i}.png"), image)
    (folder / "notes.txt").write_text("not an image")
    (folder / "img2.jpg").write_bytes((folder / "img2.png").read_bytes())  # same output stem
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.png").write_bytes((folder / "img0.png").read_bytes()[:40])
    unreadable = folder / "locked.png"
    unreadable.write_bytes((folder / "img1.png").read_bytes())
    unreadable.chmod(0)
    readable_anyway = os.access(unreadable, os.R_OK)  # e.g. when the tests run as root
    out = tmp_path / "out"
    summary = run_cli(demo, 
        ["--config-file", str(CONFIG), "--input", str(folder), "--output", str(out),
         "--batch-size", "2", "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS",
         weights, *OPTS]
    )  # fmt: skip
    # Inputs in name order: empty.jpg, img0.png, img1.png, img2.jpg, img2.png (input 4), ...
    drawn = {"img0.png", "img1.png", "img2.png", "img2_4.png"}
    drawn |= {"locked.png"} if readable_anyway else set()
    assert {p.name for p in out.iterdir()} == drawn
    reasons = {Path(path).name: reason for path, reason in summary.skipped.items()}
    expected = {
        "notes.txt": "not a decodable image (12 bytes)",
        "empty.jpg": "empty file",
        "truncated.png": "not a decodable image (40 bytes)",
    }
    if not readable_anyway:
        expected["locked.png"] = "cannot be read (Permission denied)"
    assert reasons == expected
    report = summary.report()
    assert report.startswith(f"{len(drawn)} of 8 image(s) drawn, {8 - len(drawn)} skipped\n")
    assert all(f"{folder / name}: {reason}" in report for name, reason in expected.items())
    assert summary.exit_status == 1


def test_demo_output_json_holds_coco_results_of_every_input(weights, tmp_path):
    paths = []
    for i, image in enumerate(_images(2, 64, 90)):
        paths.append(tmp_path / f"img{i}.png")
        cv2.imwrite(str(paths[-1]), image)
    out_json = tmp_path / "predictions.json"
    summary = run_cli(demo, 
        ["--config-file", str(CONFIG), "--input", *map(str, paths), "--output-json",
         str(out_json), "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS", weights,
         *OPTS]
    )  # fmt: skip
    results = json.loads(out_json.read_text())
    assert results == json.loads(json.dumps(summary.results))
    assert not summary.skipped and summary.exit_status == 0
    assert {r["image_id"] for r in results} == {0, 1}
    assert {r["file_name"] for r in results} == set(map(str, paths))
    for result in results:
        assert {"category_id", "bbox", "score", "mask_score", "segmentation"} <= set(result)
        rle = result["segmentation"]
        mask = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert mask.shape == (64, 90)
        x, y, w, h = result["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 90.01 and y + h <= 64.01
    # One image alone gives the same predictions for it as in the run over both.
    alone = run_cli(demo, 
        ["--config-file", str(CONFIG), "--input", str(paths[1]), "--confidence-threshold",
         "0.0", "--output-json", str(out_json), "--opts", "MODEL.WEIGHTS", weights, *OPTS]
    )  # fmt: skip
    assert len(alone.results) == sum(r["image_id"] == 1 for r in results)
