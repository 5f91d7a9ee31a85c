"""The built-in synthetic data set: determinism, occlusion, COCO files, registration."""

import hashlib
import json

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools import mask as mask_util

from centermask.data import SYNTHETIC_NAMES, register_synthetic
from centermask.data.synthetic import (
    BUILTIN_NUM_TRAIN,
    BUILTIN_NUM_VAL,
    BUILTIN_SCENE,
    annotation_path,
    ensure_synthetic,
    generate_synthetic,
    main,
    mask_to_polygons,
)
from centermask.data.synthetic_scene import (
    CLASS_NAMES,
    SceneConfig,
    SceneObject,
    compose_visible_masks,
    object_mask,
    render_scene,
)

SMALL = SceneConfig(min_short_side=64, max_short_side=96)


def _digest(root) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, num_train=10, num_val=4, seed=3, scene=SMALL, progress=False)
    return root


def _decode(ann, image):
    segm = ann["segmentation"]
    if isinstance(segm, list):
        segm = mask_util.merge(mask_util.frPyObjects(segm, image["height"], image["width"]))
    return mask_util.decode(segm).astype(bool)


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, dataset):
    again = tmp_path / "again"
    generate_synthetic(again, num_train=10, num_val=4, seed=3, scene=SMALL, progress=False)
    assert _digest(again) == _digest(dataset)
    other = tmp_path / "other"
    generate_synthetic(other, num_train=2, num_val=1, seed=4, scene=SMALL, progress=False)
    assert _digest(other)["train/000000.png"] != _digest(dataset)["train/000000.png"]


def test_more_images_only_appends(tmp_path, dataset):
    bigger = tmp_path / "bigger"
    generate_synthetic(bigger, num_train=12, num_val=1, seed=3, scene=SMALL, progress=False)
    for i in range(10):
        name = f"train/{i:06d}.png"
        assert (bigger / name).read_bytes() == (dataset / name).read_bytes()


@pytest.mark.parametrize("split", ["train", "val"])
def test_visible_masks_are_disjoint_nonempty_and_match_boxes(dataset, split):
    data = json.loads(annotation_path(dataset, split, rle=True).read_text())
    images = {img["id"]: img for img in data["images"]}
    per_image = {}
    for ann in data["annotations"]:
        image = images[ann["image_id"]]
        mask = _decode(ann, image)
        assert mask.sum() == ann["area"] > 0
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann["bbox"]
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        per_image.setdefault(ann["image_id"], []).append(mask)
    for masks in per_image.values():
        coverage = np.sum(masks, axis=0)
        assert coverage.max() == 1, "two instances claim the same pixel"


def test_polygon_and_rle_files_describe_the_same_masks(dataset):
    poly = json.loads(annotation_path(dataset, "train").read_text())
    rle = json.loads(annotation_path(dataset, "train", rle=True).read_text())
    assert poly["images"] == rle["images"]
    images = {img["id"]: img for img in poly["images"]}
    for a, b in zip(poly["annotations"], rle["annotations"]):
        assert isinstance(a["segmentation"], list) and isinstance(b["segmentation"], dict)
        image = images[a["image_id"]]
        assert np.array_equal(_decode(a, image), _decode(b, image))


def test_images_are_non_square_with_several_instances_and_all_classes(dataset):
    data = json.loads(annotation_path(dataset, "train").read_text())
    assert [c["name"] for c in data["categories"]] == list(CLASS_NAMES)
    counts = {}
    for ann in data["annotations"]:
        counts[ann["image_id"]] = counts.get(ann["image_id"], 0) + 1
    for img in data["images"]:
        assert img["height"] != img["width"]
        on_disk = cv2.imread(str(dataset / "train" / img["file_name"]))
        assert on_disk.shape[:2] == (img["height"], img["width"])
        assert 1 <= counts.get(img["id"], 0) <= SMALL.max_objects
    assert np.mean(list(counts.values())) >= 3
    assert {a["category_id"] for a in data["annotations"]} == set(range(1, len(CLASS_NAMES) + 1))


def _square(center, radius):
    return SceneObject(
        class_id=CLASS_NAMES.index("rectangle"),
        center=center,
        radius=radius,
        aspect=1.0,
        angle=0.0,
        colour=(255, 0, 0),
        colour2=(0, 255, 0),
        pattern="solid",
        texture_seed=0,
    )


def test_fully_hidden_and_tiny_leftover_objects_are_dropped():
    size = (64, 64)
    small = object_mask(_square((20.0, 20.0), 4.0), *size)
    big = object_mask(_square((24.0, 24.0), 16.0), *size)  # covers `small` completely
    sliver = object_mask(_square((45.0, 45.0), 6.0), *size)
    cover = object_mask(_square((44.0, 44.0), 6.0), *size)  # leaves a 1-pixel-wide sliver
    kept, visible = compose_visible_masks([small, big, sliver, cover])
    assert kept == [1, 3]
    assert np.array_equal(visible[1], cover)
    # with `sliver` removed, `big` is not occluded by it any more
    assert np.array_equal(visible[0], big & ~cover)


def test_render_scene_masks_partition_the_painted_objects():
    image, objects, masks = render_scene(np.random.default_rng(0), SMALL)
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert len(objects) == len(masks) >= 1
    assert np.sum(masks, axis=0).max() == 1


def test_polygons_of_a_mask_with_holes_rasterise_back_exactly():
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:35, 5:45] = True
    mask[10:15, 10:15] = False  # two holes
    mask[20:30, 30:40] = False
    mask[1:3, 47:49] = True  # a separate 2x2 component
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2 and all(len(p) >= 6 for p in polygons)
    decoded = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, 40, 50)))
    assert np.array_equal(decoded.astype(bool), mask)


def test_registration_is_idempotent_and_loads_both_variants(dataset):
    assert register_synthetic(dataset) == list(SYNTHETIC_NAMES)
    register_synthetic(dataset)  # same files again: no error, nothing changes
    records = DatasetCatalog.get("synthetic_val")
    rle_records = DatasetCatalog.get("synthetic_val_rle")
    assert len(records) == len(rle_records) == 4
    assert isinstance(rle_records[0]["annotations"][0]["segmentation"], dict)
    meta = MetadataCatalog.get("synthetic_train")
    assert meta.thing_classes == list(CLASS_NAMES) and meta.evaluator_type == "coco"


def test_registration_to_a_missing_folder_says_how_to_generate(tmp_path, dataset):
    register_synthetic(tmp_path / "nothing")
    try:
        with pytest.raises(FileNotFoundError, match="python -m centermask.data.synthetic"):
            DatasetCatalog.get("synthetic_train")
    finally:
        register_synthetic(dataset)


def test_ensure_regenerates_only_when_arguments_change(tmp_path):
    root = tmp_path / "ds"
    assert ensure_synthetic(root, 2, 1, seed=0, scene=SMALL, progress=False)
    assert not ensure_synthetic(root, 2, 1, seed=0, scene=SMALL, progress=False)
    assert ensure_synthetic(root, 3, 1, seed=0, scene=SMALL, progress=False)


def test_command_line_writes_the_layout(tmp_path, capsys):
    out = tmp_path / "cli"
    main(["--out", str(out), "--num-train", "2", "--num-val", "1", "--max-short-side", "80",
          "--min-short-side", "64", "--format", "jpg"])  # fmt: skip
    for split in ("train", "val"):
        for rle in (False, True):
            assert annotation_path(out, split, rle).is_file()
    assert (out / "train" / "000001.jpg").is_file()
    assert "train: 2 images" in capsys.readouterr().out


def test_the_command_and_the_quickstart_write_the_same_built_in_set(tmp_path, monkeypatch):
    """`python -m centermask.data.synthetic` with its defaults records the generator arguments
    that `ensure_synthetic` (the quickstart's call) wants, so neither rewrites the other's set."""
    written = []
    monkeypatch.setattr(
        "centermask.data.synthetic.generate_split",
        lambda root, split, count, seed, scene, image_format, progress: written.append(
            (split, count, seed, scene, image_format)
        )
        or {"images": count, "instances": 0},
    )
    main(["--out", str(tmp_path)])
    assert written == [
        ("train", BUILTIN_NUM_TRAIN, 0, BUILTIN_SCENE, "png"),
        ("val", BUILTIN_NUM_VAL, 0, BUILTIN_SCENE, "png"),
    ]


def test_a_smaller_split_leaves_no_images_of_the_larger_one(tmp_path):
    generate_synthetic(tmp_path, num_train=5, num_val=1, seed=3, scene=SMALL, progress=False)
    generate_synthetic(tmp_path, num_train=2, num_val=1, seed=3, scene=SMALL, progress=False)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["000000.png", "000001.png"]
