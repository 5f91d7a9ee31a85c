import hashlib
import json
from itertools import combinations

import numpy as np
import pytest

from centermask.data.builtin import SCENE_KIND_NAMES, register_scene_kind
from centermask.data.synthetic import (
    BUILTIN_SCENE,
    CROWD_SCENE,
    SPARSE_SCENE,
    annotation_path,
    generate_split,
    main,
)
from centermask.data.synthetic_crowd import (
    CrowdSceneConfig,
    box_iou,
    mask_box,
    render_crowd_scene,
    sample_crowd_layout,
)
from centermask.data.synthetic_scene import CLASS_NAMES, object_mask, render_scene

NUM_SCENES = 25


def _scene(kind: str, index: int):
    config = CROWD_SCENE if kind == "crowd" else SPARSE_SCENE
    return render_crowd_scene(np.random.default_rng([3, index]), config)


def _intersect(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_crowd_scene_has_a_chain_of_three_same_class_instances_with_overlapping_boxes():
    for index in range(NUM_SCENES):
        _, objects, masks = _scene("crowd", index)
        classes = [o.class_id for o in objects]
        crowd_class = max(set(classes), key=classes.count)
        boxes = [mask_box(m) for m, c in zip(masks, classes) if c == crowd_class]
        assert len(boxes) >= 3
        # The same-class boxes form one connected group (through intersections).
        reached, frontier = {0}, [0]
        while frontier:
            i = frontier.pop()
            for j in range(len(boxes)):
                if j not in reached and _intersect(boxes[i], boxes[j]):
                    reached.add(j)
                    frontier.append(j)
        assert len(reached) >= 3
        # The other objects are of other classes and clear of every same-class box.
        others = [mask_box(m) for m, c in zip(masks, classes) if c != crowd_class]
        assert len(others) <= 2
        assert not any(_intersect(a, b) for a in others for b in boxes)


def test_consecutive_chain_boxes_have_an_iou_in_the_configured_range():
    config = CrowdSceneConfig(kind="crowd")
    pairs = 0
    for index in range(NUM_SCENES):
        layout = sample_crowd_layout(np.random.default_rng([5, index]), 140, 190, config)
        if layout is None:
            continue  # the renderer samples again
        objects, count = layout
        boxes = [mask_box(object_mask(o, 140, 190)) for o in objects[:count]]
        assert len({o.class_id for o in objects[:count]}) == 1
        assert all(o.class_id != objects[0].class_id for o in objects[count:])
        for a, b in zip(boxes, boxes[1:]):
            assert 0.2 <= box_iou(a, b) <= 0.6
            pairs += 1
    assert pairs >= 2 * NUM_SCENES // 2


def test_sparse_scene_has_no_intersecting_boxes():
    counts = []
    for index in range(NUM_SCENES):
        _, objects, masks = _scene("sparse", index)
        boxes = [mask_box(m) for m in masks]
        assert not any(_intersect(a, b) for a, b in combinations(boxes, 2))
        classes = [o.class_id for o in objects]
        counts.append(max(classes.count(c) for c in set(classes)))
    assert min(counts) >= 3  # the same chain-class count distribution as the crowd


def test_sparse_and_crowd_sample_the_same_classes_and_sizes():
    def stats(kind):
        found = [_scene(kind, i)[1] for i in range(NUM_SCENES)]
        return [sorted(o.class_id for o in objs) for objs in found], [
            o.radius for objs in found for o in objs
        ]

    crowd_classes, crowd_radii = stats("crowd")
    sparse_classes, sparse_radii = stats("sparse")
    assert {c for cs in crowd_classes for c in cs} == set(range(len(CLASS_NAMES)))
    assert {c for cs in sparse_classes for c in cs} == set(range(len(CLASS_NAMES)))
    for radii in (crowd_radii, sparse_radii):
        assert 10.0 <= min(radii) and max(radii) <= 20.0
    assert abs(np.mean(crowd_radii) - np.mean(sparse_radii)) < 2.0


@pytest.mark.parametrize("kind", ["crowd", "sparse"])
def test_scene_is_a_function_of_its_seed(kind):
    first, objects, masks = _scene(kind, 7)
    again, objects_again, masks_again = _scene(kind, 7)
    other = _scene(kind, 8)[0]
    assert np.array_equal(first, again) and objects == objects_again
    assert all(np.array_equal(a, b) for a, b in zip(masks, masks_again))
    assert first.shape != other.shape or not np.array_equal(first, other)


def test_masks_are_disjoint_and_holes_appear():
    ring = CLASS_NAMES.index("ring")
    rings = 0
    for index in range(NUM_SCENES):
        _, objects, masks = _scene("crowd", index)
        assert (np.sum(masks, axis=0) <= 1).all()
        rings += sum(o.class_id == ring for o in objects)
    assert rings > 0


def test_builtin_scene_and_files_are_unchanged(tmp_path):
    # Digests of the built-in data set as written before the crowd / sparse kinds existed.
    image, _, masks = render_scene(np.random.default_rng([0, 0, 0]), BUILTIN_SCENE)
    digest = hashlib.sha256(image.tobytes())
    for mask in masks:
        digest.update(np.packbits(mask).tobytes())
    assert digest.hexdigest() == "8c4f60ae46819cb1e3219ab1b5230b6d9aad678759ff8cb1694ed4c9249d8b18"
    generate_split(tmp_path, "val", 2, progress=False)
    written = hashlib.sha256(annotation_path(tmp_path, "val").read_bytes()).hexdigest()
    assert written == "daf75b15c6a75ebc946875d97efec978683b3b1ea46c7889136178bd18b50e4c"


def test_generator_entry_writes_a_registered_crowd_dataset(tmp_path, capsys):
    from detectron2.data import DatasetCatalog

    main(["--kind", "crowd", "--out", str(tmp_path), "--num-train", "2", "--num-val", "1"])
    data = json.loads(annotation_path(tmp_path, "train").read_text())
    assert data["info"]["generator"]["scene"]["kind"] == "crowd"
    names = register_scene_kind("crowd", tmp_path)
    assert set(names) == set(SCENE_KIND_NAMES["crowd"])
    try:
        records = DatasetCatalog.get("synthetic_crowd_train")
        assert len(records) == 2 and all(len(r["annotations"]) >= 3 for r in records)
    finally:
        register_scene_kind("crowd")  # back to the default root


def test_unknown_scene_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        CrowdSceneConfig(kind="dense")
    with pytest.raises(ValueError, match="scene kind"):
        register_scene_kind("dense")
