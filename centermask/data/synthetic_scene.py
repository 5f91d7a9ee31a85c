"""Scenes of the built-in synthetic data set: shapes, textured backgrounds and occlusion.

Everything here is a pure function of a ``numpy.random.Generator``, so a scene is reproducible from
its seed. A scene is rendered with the painter's algorithm: objects are drawn back to front and
each pixel belongs to the last object drawn over it. The annotation of an object is its *visible*
part, so the masks of one image never overlap.

Objects whose visible part is too small (see :func:`compose_visible_masks`) are removed from the
scene before it is painted: they are neither drawn nor annotated, so every object pixel in an image
belongs to exactly one annotated instance and fully hidden objects never appear in the annotations.
"""

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "CLASS_NAMES",
    "MIN_VISIBLE_PIXELS",
    "MIN_VISIBLE_FRACTION",
    "SceneObject",
    "SceneConfig",
    "sample_object",
    "object_mask",
    "compose_visible_masks",
    "render_background",
    "sample_image_size",
    "paint_objects",
    "render_scene",
]

CLASS_NAMES: Tuple[str, ...] = ("rectangle", "ellipse", "triangle", "star", "hexagon", "ring")

# An object is kept only if at least this many of its pixels, and this fraction of its full area,
# stay visible; otherwise it is removed from the scene (not drawn, not annotated).
MIN_VISIBLE_PIXELS = 12
MIN_VISIBLE_FRACTION = 0.25


@dataclass(frozen=True)
class SceneObject:
    """One shape of a scene. Geometry is in pixels of the image it belongs to.

    ``radius`` is half the extent of the shape along its longest axis, ``aspect`` (<= 1) shrinks
    the other axis, ``angle`` is a rotation in degrees, ``colour`` is BGR and ``pattern`` one of
    ``"solid"``, ``"stripes"``, ``"noise"`` with ``colour2`` as the second colour of the pattern.
    """

    class_id: int
    center: Tuple[float, float]
    radius: float
    aspect: float
    angle: float
    colour: Tuple[int, int, int]
    colour2: Tuple[int, int, int]
    pattern: str
    texture_seed: int


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are sampled: image sides, object sizes and counts."""

    min_short_side: int = 128
    max_short_side: int = 192
    min_aspect_ratio: float = 1.2  # long side / short side; images are never square
    max_aspect_ratio: float = 1.6
    min_object_size: float = 8.0  # diameter in pixels
    max_object_fraction: float = 0.8  # largest diameter, as a fraction of the short side
    min_objects: int = 3
    max_objects: int = 12


def _rotated(points: np.ndarray, center: Sequence[float], angle_deg: float) -> np.ndarray:
    theta = math.radians(angle_deg)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return points @ rotation.T + np.asarray(center, dtype=np.float64)


def _regular_polygon(sides: int, radius: float, phase: float = 0.0) -> np.ndarray:
    angles = phase + np.arange(sides) * 2 * math.pi / sides
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _outline(obj: SceneObject) -> np.ndarray:
    """Polygon outline (N, 2) of the non-elliptic shapes, before rasterisation."""
    r, a = obj.radius, obj.aspect
    name = CLASS_NAMES[obj.class_id]
    if name == "rectangle":
        pts = np.array([[-r, -r * a], [r, -r * a], [r, r * a], [-r, r * a]])
    elif name == "triangle":
        pts = _regular_polygon(3, r, -math.pi / 2) * np.array([1.0, 0.5 + 0.5 * a])
    elif name == "star":
        outer = _regular_polygon(5, r, -math.pi / 2)
        inner = _regular_polygon(5, r * (0.35 + 0.2 * a), -math.pi / 2 + math.pi / 5)
        pts = np.stack([outer, inner], axis=1).reshape(-1, 2)
    elif name == "hexagon":
        pts = _regular_polygon(6, r)
    else:
        raise ValueError(f"{name} has no polygon outline")
    return _rotated(pts, obj.center, obj.angle)


def object_mask(obj: SceneObject, height: int, width: int) -> np.ndarray:
    """The full (unoccluded) mask of ``obj``: bool array (height, width)."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    name = CLASS_NAMES[obj.class_id]
    if name in ("ellipse", "ring"):
        # Sub-pixel precision through cv2's fixed-point "shift" argument.
        shift, scale = 4, 16
        center = (int(round(obj.center[0] * scale)), int(round(obj.center[1] * scale)))
        axes = (int(round(obj.radius * scale)), int(round(obj.radius * obj.aspect * scale)))
        cv2.ellipse(canvas, center, axes, obj.angle, 0, 360, 1, -1, cv2.LINE_8, shift)
        if name == "ring":
            inner = (int(axes[0] * 0.55), int(axes[1] * 0.55))
            cv2.ellipse(canvas, center, inner, obj.angle, 0, 360, 0, -1, cv2.LINE_8, shift)
    else:
        pts = np.round(_outline(obj) * 16).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 1, cv2.LINE_8, 4)
    return canvas.astype(bool)


def _random_colour(rng: np.random.Generator, saturated: bool) -> Tuple[int, int, int]:
    hue = rng.integers(0, 180)
    sat = rng.integers(120, 256) if saturated else rng.integers(0, 90)
    val = rng.integers(110, 256) if saturated else rng.integers(50, 210)
    hsv = np.array([[[hue, sat, val]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def sample_object(
    rng: np.random.Generator, height: int, width: int, config: SceneConfig
) -> SceneObject:
    """A random object whose size is log-uniform in [min_object_size, max_object_fraction*short]."""
    largest = max(config.min_object_size, config.max_object_fraction * min(height, width))
    diameter = math.exp(rng.uniform(math.log(config.min_object_size), math.log(largest)))
    class_id = int(rng.integers(0, len(CLASS_NAMES)))
    return SceneObject(
        class_id=class_id,
        center=(float(rng.uniform(0, width)), float(rng.uniform(0, height))),
        radius=diameter / 2,
        aspect=float(rng.uniform(0.55, 1.0)),
        angle=float(rng.uniform(0, 360)),
        colour=_random_colour(rng, saturated=True),
        colour2=_random_colour(rng, saturated=True),
        pattern=str(rng.choice(["solid", "solid", "stripes", "noise"])),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def compose_visible_masks(
    full_masks: Sequence[np.ndarray],
    min_visible_pixels: int = MIN_VISIBLE_PIXELS,
    min_visible_fraction: float = MIN_VISIBLE_FRACTION,
) -> Tuple[List[int], List[np.ndarray]]:
    """Occlusion by z-order: ``full_masks[i]`` is drawn before (behind) ``full_masks[i + 1]``.

    Objects whose visible part is smaller than ``min_visible_pixels`` or than
    ``min_visible_fraction`` of their full area are removed, and the visibility of the others is
    recomputed without them (removing an object only uncovers the ones behind it, so this ends).

    Returns:
        kept: indices into ``full_masks`` of the objects that stay, back to front.
        visible: their visible masks, bool (H, W) each, pairwise disjoint.
    """
    kept = [i for i, m in enumerate(full_masks) if m.any()]
    while True:
        owner = np.full(full_masks[0].shape if full_masks else (0, 0), -1, dtype=np.int32)
        for i in kept:
            owner[full_masks[i]] = i
        visible = [owner == i for i in kept]
        too_small = [
            i
            for i, vis in zip(kept, visible)
            if vis.sum() < max(min_visible_pixels, min_visible_fraction * full_masks[i].sum())
        ]
        if not too_small:
            return kept, visible
        kept = [i for i in kept if i not in too_small]


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured BGR uint8 background: smooth colour noise, an optional pattern, pixel noise."""
    base = np.array(_random_colour(rng, saturated=False), dtype=np.float32)
    grid = rng.normal(0, 28, size=(int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3))
    smooth = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    image = base + smooth
    pattern = rng.choice(["none", "stripes", "checker"])
    if pattern != "none":
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        period = float(rng.uniform(6, 24))
        theta = float(rng.uniform(0, math.pi))
        u = xx * math.cos(theta) + yy * math.sin(theta)
        if pattern == "stripes":
            wave = np.sin(2 * math.pi * u / period)
        else:
            v = -xx * math.sin(theta) + yy * math.cos(theta)
            wave = np.sign(np.sin(2 * math.pi * u / period) * np.sin(2 * math.pi * v / period))
        image += (float(rng.uniform(8, 22)) * wave)[..., None]
    image += rng.normal(0, 5, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _object_texture(obj: SceneObject, height: int, width: int) -> np.ndarray:
    """A full-frame float32 BGR texture for ``obj`` (only its mask pixels are used)."""
    rng = np.random.default_rng(obj.texture_seed)
    first = np.array(obj.colour, dtype=np.float32)
    second = np.array(obj.colour2, dtype=np.float32)
    if obj.pattern == "stripes":
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        theta = math.radians(obj.angle)
        u = (xx - obj.center[0]) * math.cos(theta) + (yy - obj.center[1]) * math.sin(theta)
        period = max(3.0, obj.radius / 2)
        weight = (np.sin(2 * math.pi * u / period) > 0).astype(np.float32)[..., None]
        texture = first * weight + second * (1 - weight)
    elif obj.pattern == "noise":
        texture = first + rng.normal(0, 18, size=(height, width, 3)).astype(np.float32)
    else:
        texture = np.broadcast_to(first, (height, width, 3)).astype(np.float32)
    return texture + rng.normal(0, 4, size=(height, width, 3)).astype(np.float32)


def sample_image_size(rng: np.random.Generator, config) -> Tuple[int, int]:
    """(height, width) of a landscape or portrait image; ``config`` has ``min/max_short_side`` and
    ``min/max_aspect_ratio`` (a :class:`SceneConfig` or a crowd scene's config)."""
    short = int(rng.integers(config.min_short_side, config.max_short_side + 1))
    long = int(round(short * rng.uniform(config.min_aspect_ratio, config.max_aspect_ratio)))
    return (short, long) if rng.random() < 0.5 else (long, short)


def paint_objects(
    background: np.ndarray,
    objects: Sequence[SceneObject],
    full_masks: Sequence[np.ndarray],
    kept: Sequence[int],
) -> np.ndarray:
    """The BGR uint8 image: the ``kept`` objects' textures over ``background`` (H, W, 3), back to
    front, each on its full (unoccluded) mask (H, W) so that later objects cover earlier ones."""
    height, width = background.shape[:2]
    image = background.astype(np.float32)
    for i in kept:
        texture = _object_texture(objects[i], height, width)
        image[full_masks[i]] = texture[full_masks[i]]
    return np.clip(image, 0, 255).astype(np.uint8)


def render_scene(
    rng: np.random.Generator, config: SceneConfig
) -> Tuple[np.ndarray, List[SceneObject], List[np.ndarray]]:
    """Sample and paint one scene.

    Returns:
        image: BGR uint8 (H, W, 3), H != W.
        objects: the kept objects, back to front.
        masks: their visible masks, bool (H, W), pairwise disjoint, each non-empty.
    """
    height, width = sample_image_size(rng, config)

    background = render_background(rng, height, width)
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    objects = [sample_object(rng, height, width, config) for _ in range(count)]
    full_masks = [object_mask(obj, height, width) for obj in objects]
    kept, visible = compose_visible_masks(full_masks)

    return paint_objects(background, objects, full_masks, kept), [objects[i] for i in kept], visible
