"""Crowded and sparse scenes: same-class objects that overlap, and a control where nothing does.

A ``crowd`` scene holds a *chain* of 3-6 objects of one class, each one's box overlapping the
next one's (box IoU in ``[min_chain_iou, max_chain_iou]``), drawn in a random depth order so that
occlusion goes both ways along the chain, plus 0-2 objects of other classes whose boxes stay clear
of every other box. A ``sparse`` scene samples the same things (class, counts, sizes, looks) and
places every object so that no two boxes intersect. Masks are the visible parts, as in
:mod:`.synthetic_scene` (painter's algorithm, :func:`compose_visible_masks`).

Like :func:`render_scene`, :func:`render_crowd_scene` is a pure function of a
``numpy.random.Generator``. A sampled layout that cannot be placed, or whose chain keeps fewer
than ``min_chain`` visible objects after occlusion, is sampled again from the same generator.
"""

import math
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

import numpy as np

from .synthetic_scene import (
    CLASS_NAMES,
    SceneConfig,
    SceneObject,
    compose_visible_masks,
    object_mask,
    paint_objects,
    render_background,
    sample_image_size,
    sample_object,
)

__all__ = [
    "SCENE_KINDS",
    "CrowdSceneConfig",
    "box_iou",
    "mask_box",
    "sample_crowd_layout",
    "render_crowd_scene",
]

SCENE_KINDS = ("crowd", "sparse")
_MAX_LAYOUTS = 200
# sample_object's own class, size and centre draws are replaced; only its looks are kept.
_LOOKS_CONFIG = SceneConfig()


@dataclass(frozen=True)
class CrowdSceneConfig:
    """How crowded (``kind="crowd"``) or sparse (``kind="sparse"``) scenes are sampled."""

    kind: str = "crowd"
    min_short_side: int = 112
    max_short_side: int = 144
    min_aspect_ratio: float = 1.2
    max_aspect_ratio: float = 1.5
    min_object_size: float = 20.0  # diameter in pixels
    max_object_size: float = 40.0
    min_chain: int = 3
    max_chain: int = 6
    max_distractors: int = 2
    min_chain_iou: float = 0.2
    max_chain_iou: float = 0.6
    placement_tries: int = 60

    def __post_init__(self):
        if self.kind not in SCENE_KINDS:
            raise ValueError(
                f"CrowdSceneConfig.kind must be one of {SCENE_KINDS}, got {self.kind!r}"
            )
        if not 0 < self.min_chain_iou <= self.max_chain_iou < 1:
            raise ValueError(
                f"CrowdSceneConfig needs 0 < min_chain_iou <= max_chain_iou < 1, got "
                f"{self.min_chain_iou} and {self.max_chain_iou}"
            )


def mask_box(mask: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) of a non-empty bool mask (H, W), pixel edges (x1, y1 exclusive)."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _intersects(a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> bool:
    return bool(
        a[0] < b[2] + margin
        and b[0] < a[2] + margin
        and a[1] < b[3] + margin
        and b[1] < a[3] + margin
    )


def _inside(box: np.ndarray, height: int, width: int) -> bool:
    return bool(box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height)


def _sample_looks(
    rng: np.random.Generator, height: int, width: int, config: CrowdSceneConfig
) -> List[SceneObject]:
    """The objects of a scene before placement: the chain (one class, first) then the distractors
    (other classes), each with a log-uniform diameter and random looks; centres are placeholders."""
    count = int(rng.integers(config.min_chain, config.max_chain + 1))
    extra = int(rng.integers(0, config.max_distractors + 1))
    chain_class = int(rng.integers(0, len(CLASS_NAMES)))
    others = [c for c in range(len(CLASS_NAMES)) if c != chain_class]
    classes = [chain_class] * count + [int(rng.choice(others)) for _ in range(extra)]
    low, high = math.log(config.min_object_size), math.log(config.max_object_size)
    objects = []
    for class_id in classes:
        looks = sample_object(rng, height, width, _LOOKS_CONFIG)
        diameter = math.exp(rng.uniform(low, high))
        objects.append(replace(looks, class_id=class_id, radius=diameter / 2))
    return objects


def _placed(obj: SceneObject, center: Tuple[float, float], height: int, width: int):
    moved = replace(obj, center=(float(center[0]), float(center[1])))
    mask = object_mask(moved, height, width)
    return moved, mask, (mask_box(mask) if mask.any() else None)


def _place_chain(rng, chain, height, width, config) -> Optional[Tuple[list, list]]:
    """Centres for the chain: a random start, then each object at a distance from the previous one
    (along a slowly turning direction) that gives a box IoU in the configured range."""
    first, mask, box = _placed(
        chain[0], _random_center(rng, chain[0], height, width), height, width
    )
    if box is None or not _inside(box, height, width):
        return None
    placed, masks, boxes = [first], [mask], [box]
    heading = rng.uniform(0, 2 * math.pi)
    for obj in chain[1:]:
        for _ in range(config.placement_tries):
            heading += rng.normal(0, 0.6)
            distance = rng.uniform(0.35, 1.0) * (placed[-1].radius + obj.radius)
            prev = placed[-1].center
            center = (
                prev[0] + distance * math.cos(heading),
                prev[1] + distance * math.sin(heading),
            )
            moved, mask, box = _placed(obj, center, height, width)
            if box is None or not _inside(box, height, width):
                continue
            iou = box_iou(boxes[-1], box)
            if not config.min_chain_iou <= iou <= config.max_chain_iou:
                continue
            # Only consecutive objects overlap much: the chain does not fold onto itself.
            if any(box_iou(b, box) > config.max_chain_iou for b in boxes[:-1]):
                continue
            placed.append(moved)
            masks.append(mask)
            boxes.append(box)
            break
        else:
            return None
    return placed, boxes


def _random_center(rng, obj: SceneObject, height: int, width: int) -> Tuple[float, float]:
    r = obj.radius
    return (float(rng.uniform(r, max(r, width - r))), float(rng.uniform(r, max(r, height - r))))


def _place_apart(rng, objects, boxes, height, width, config, margin: float) -> Optional[list]:
    """Each of ``objects`` at a random centre whose box is ``margin`` pixels clear of all boxes
    so far (``boxes`` grows); None when one cannot be placed."""
    placed = []
    for obj in objects:
        for _ in range(config.placement_tries):
            moved, _, box = _placed(obj, _random_center(rng, obj, height, width), height, width)
            if box is None or not _inside(box, height, width):
                continue
            if any(_intersects(box, b, margin) for b in boxes):
                continue
            placed.append(moved)
            boxes.append(box)
            break
        else:
            return None
    return placed


def sample_crowd_layout(
    rng: np.random.Generator, height: int, width: int, config: CrowdSceneConfig
) -> Optional[Tuple[List[SceneObject], int]]:
    """One placement attempt: the objects (chain first, in chain order) and the chain's length,
    or None when the layout could not be placed (the caller samples again)."""
    objects = _sample_looks(rng, height, width, config)
    count = sum(1 for o in objects if o.class_id == objects[0].class_id)
    if config.kind == "crowd":
        chain = _place_chain(rng, objects[:count], height, width, config)
        if chain is None:
            return None
        placed, boxes = chain
        # Distractors are "distant": a clear gap to every box.
        rest = _place_apart(rng, objects[count:], list(boxes), height, width, config, margin=4.0)
    else:
        placed, rest = [], _place_apart(rng, objects, [], height, width, config, margin=1.0)
    if rest is None:
        return None
    return placed + rest, count


def render_crowd_scene(
    rng: np.random.Generator, config: CrowdSceneConfig
) -> Tuple[np.ndarray, List[SceneObject], List[np.ndarray]]:
    """Sample and paint one crowded or sparse scene (see the module docstring).

    Returns, like :func:`render_scene`: the BGR uint8 image (H, W, 3), the kept objects back to
    front, and their visible masks (bool (H, W), pairwise disjoint, non-empty).
    """
    height, width = sample_image_size(rng, config)
    background = render_background(rng, height, width)
    for _ in range(_MAX_LAYOUTS):
        layout = sample_crowd_layout(rng, height, width, config)
        if layout is None:
            continue
        objects, count = layout
        # A random depth order: along the chain, either neighbour may be in front.
        order = [int(i) for i in rng.permutation(len(objects))]
        objects = [objects[i] for i in order]
        full_masks = [object_mask(obj, height, width) for obj in objects]
        kept, visible = compose_visible_masks(full_masks)
        chain_kept = sum(1 for i in kept if order[i] < count)
        if chain_kept >= config.min_chain:
            break
    else:
        raise ValueError(
            f"no {config.kind} layout fits a {height}x{width} image in {_MAX_LAYOUTS} tries: "
            f"lower the object sizes or counts of {config}"
        )
    return paint_objects(background, objects, full_masks, kept), [objects[i] for i in kept], visible
