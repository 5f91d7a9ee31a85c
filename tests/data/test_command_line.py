"""``--dataset NAME=ANNOTATIONS.json:IMAGE_DIR``: a COCO folder trained, evaluated and drawn with
no Python from the user, class counts taken from the data, malformed arguments named."""

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from detectron2.data import MetadataCatalog

from centermask.cli import demo, train_net
from centermask.config import THING_CLASS_KEYS
from centermask.config.class_counts import describe_class_counts
from centermask.data import parse_dataset_spec
from centermask.data.synthetic import annotation_path, generate_synthetic
from centermask.data.synthetic_scene import SceneConfig
from centermask.engine import build_config
from tests.support.helpers import QUICK_CONFIGS, ROOT, run_cli

INSTANT_CONFIG = QUICK_CONFIGS / "centermask_lite_V_19_slim_dw_synthetic_instant_test.yaml"
CATEGORIES = [{"id": 30, "name": "disc"}, {"id": 10, "name": "block"}, {"id": 20, "name": "spike"}]
CLASS_NAMES = ["block", "spike", "disc"]  # sorted by category id: the model's class order


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    """A COCO-format folder with 3 categories (ids 10, 20, 30): the synthetic shapes, regrouped."""
    root = tmp_path_factory.mktemp("mine")
    scene = SceneConfig(min_short_side=64, max_short_side=96, min_object_size=10)
    generate_synthetic(root, 4, 2, seed=0, scene=scene, progress=False)
    for split in ("train", "val"):
        path = annotation_path(root, split)
        data = json.loads(path.read_text())
        data["categories"] = CATEGORIES
        for ann in data["annotations"]:
            ann["category_id"] = 10 * (1 + ann["category_id"] % 3)
        path.write_text(json.dumps(data))
    return root


def _spec(root, split, name=None):
    return f"{name or 'mine_' + split}={annotation_path(root, split)}:{root / split}"


@pytest.fixture(scope="module")
def config_without_class_counts(tmp_path_factory):
    """The instant-test config minus its two NUM_CLASSES keys, as a user's YAML would be."""
    data = yaml.safe_load(INSTANT_CONFIG.read_text())
    data["_BASE_"] = str((INSTANT_CONFIG.parent / data["_BASE_"]).resolve())
    del data["MODEL"]["FCOS"]["NUM_CLASSES"], data["MODEL"]["ROI_HEADS"]["NUM_CLASSES"]
    path = tmp_path_factory.mktemp("config") / "no_class_counts.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _config(config_file, datasets, *opts, eval_only=False):
    args = argparse.Namespace(
        config_file=str(config_file), opts=list(opts), dataset=datasets, eval_only=eval_only
    )
    return build_config(args)


@pytest.mark.parametrize(
    "text",
    ["mine", "mine=ann.json", "mine=ann.json:", "=ann.json:images", "mine=ann.txt:images",
     "my data=ann.json:images"],
)  # fmt: skip
def test_a_malformed_dataset_argument_is_rejected_naming_it(text):
    with pytest.raises(ValueError, match=f"--dataset {text!r}"):
        parse_dataset_spec(text)


def test_dataset_paths_may_contain_colons():
    spec = parse_dataset_spec("mine=/data/v1:2/ann.json:/data/img:s")
    assert (spec.name, spec.json_file, spec.image_root) == (
        "mine",
        "/data/v1:2/ann.json",
        "/data/img:s",
    )


def test_a_missing_annotation_file_or_image_folder_is_named(coco_folder, tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match=f"not found: {missing}"):
        _config(INSTANT_CONFIG, [f"x={missing}:{coco_folder / 'train'}"])
    with pytest.raises(FileNotFoundError, match=f"image folder not found: {tmp_path / 'imgs'}"):
        _config(INSTANT_CONFIG, [f"x={annotation_path(coco_folder, 'train')}:{tmp_path}/imgs"])


def test_class_counts_the_run_does_not_set_come_from_the_training_set(
    coco_folder, config_without_class_counts
):
    cfg = _config(
        config_without_class_counts,
        [_spec(coco_folder, "train"), _spec(coco_folder, "val")],
        "DATASETS.TRAIN", "('mine_train',)", "DATASETS.TEST", "('mine_val',)",
    )  # fmt: skip
    assert cfg.MODEL.FCOS.NUM_CLASSES == cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    assert MetadataCatalog.get("mine_train").thing_classes == CLASS_NAMES
    assert MetadataCatalog.get("mine_val").thing_dataset_id_to_contiguous_id == {
        10: 0,
        20: 1,
        30: 2,
    }
    assert describe_class_counts(cfg, THING_CLASS_KEYS, ["mine_train"]) == (
        "MODEL.FCOS.NUM_CLASSES and MODEL.ROI_HEADS.NUM_CLASSES = 3, the thing classes of "
        "'mine_train'"
    )


def test_an_explicit_class_count_that_disagrees_names_the_keys(
    coco_folder, config_without_class_counts
):
    train = [_spec(coco_folder, "train")]
    # Set in the config file (6, the synthetic data's count).
    with pytest.raises(
        ValueError,
        match=r"'mine_train' has 3 thing classes, but the config sets MODEL\.FCOS\.NUM_CLASSES=6, "
        r"MODEL\.ROI_HEADS\.NUM_CLASSES=6",
    ):
        _config(INSTANT_CONFIG, train, "DATASETS.TRAIN", "('mine_train',)")
    # Set on the command line to the default value: still set by the user, still wrong.
    with pytest.raises(ValueError, match=r"sets MODEL\.FCOS\.NUM_CLASSES=80\. Set MODEL\.FCOS"):
        _config(config_without_class_counts, train, "MODEL.FCOS.NUM_CLASSES", "80",
                "DATASETS.TRAIN", "('mine_train',)")  # fmt: skip


@pytest.mark.slow
def test_a_coco_folder_trains_in_two_processes_evaluates_and_runs_the_demo_from_the_command_line(
    coco_folder, config_without_class_counts, tmp_path
):
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    common = ["--config-file", config_without_class_counts, "--dataset",
              _spec(coco_folder, "train"), "--dataset", _spec(coco_folder, "val")]  # fmt: skip
    out = tmp_path / "train"
    # Two gloo workers: each must register the data sets and take the class counts from them.
    train = subprocess.run(
        [sys.executable, str(ROOT / "tools/train_net.py"), *common, "--num-gpus", "2",
         "DATASETS.TRAIN", "('mine_train',)", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "2",
         "OUTPUT_DIR", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = train.stdout + train.stderr
    assert train.returncode == 0, log[-6000:]
    assert "World size: 2" in log and "= 3, the thing classes of 'mine_train'" in log
    weights = out / "model_final.pth"
    state = torch.load(weights, map_location="cpu", weights_only=True)["model"]
    assert state["proposal_generator.fcos_head.cls_logits.weight"].shape[0] == 3

    # --eval-only, through train_net's own argument parser and main (in this process: a third
    # interpreter start-up would only add time).
    args = train_net.build_parser().parse_args(
        [*common, "--eval-only", "DATASETS.TEST", "('mine_val',)", "MODEL.WEIGHTS", str(weights),
         "MODEL.FCOS.INFERENCE_TH_TEST", "0.0", "OUTPUT_DIR", str(tmp_path / "eval")]
    )  # fmt: skip
    results = train_net.main_worker(args)
    # Two iterations from scratch score about 0 AP; what this run shows is that the evaluation
    # scored detections against the data set's own categories (ids 10, 20, 30, not 1-3).
    assert 0 <= results["bbox"]["AP"] <= 100 and 0 <= results["segm"]["AP"] <= 100
    assert (tmp_path / "eval" / "inference" / "eval_results.json").is_file()
    predictions = json.loads(
        (tmp_path / "eval" / "inference" / "coco_instances_results.json").read_text()
    )
    assert predictions and {p["category_id"] for p in predictions} <= {10, 20, 30}
    assert all("segmentation" in p for p in predictions)

    summary = run_cli(demo, 
        ["--config-file", config_without_class_counts, "--input", str(coco_folder / "val"),
         "--output", str(tmp_path / "drawn"), "--output-json", str(tmp_path / "pred.json"),
         "--confidence-threshold", "0.0", "--dataset", _spec(coco_folder, "val"), "--opts",
         "DATASETS.TEST", "('mine_val',)", "MODEL.WEIGHTS", str(weights),
         "MODEL.FCOS.INFERENCE_TH_TEST", "0.0"]
    )  # fmt: skip
    assert len(summary.written) == 2 and not summary.skipped
    assert {r["category_id"] for r in summary.results} <= {10, 20, 30}
    assert MetadataCatalog.get("mine_val").thing_classes == CLASS_NAMES
