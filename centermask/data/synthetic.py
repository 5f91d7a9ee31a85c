"""The built-in synthetic instance-segmentation data set, written as real COCO json.

Usage::

    python -m centermask.data.synthetic --out datasets/synthetic [--num-train N --num-val M --seed S]
    python -m centermask.data.synthetic --kind crowd --out datasets/synthetic_crowd
    python -m centermask.data.synthetic --kind sparse --out datasets/synthetic_sparse

``--kind`` chooses the scenes: ``default`` (the built-in data set, :mod:`.synthetic_scene`), or
``crowd`` / ``sparse`` (chains of overlapping same-class objects, and the same objects with no two
boxes intersecting; :mod:`.synthetic_crowd`).

Layout written under ``--out``::

    train/000000.png ...                      images (PNG, lossless, or JPG with --format jpg)
    val/000000.png ...
    annotations/instances_train.json          polygons (visible-part contours, holes included)
    annotations/instances_train_rle.json      the same instances as compressed RLE
    annotations/instances_val.json
    annotations/instances_val_rle.json

Generation is deterministic: image ``i`` of a split depends only on ``(seed, split, i)`` (and the
scene options), so the same arguments give byte-identical files, and a larger ``--num-train`` only
appends images. The json files are written last and atomically, so a folder with all four json
files is complete; their ``info.generator`` entry records the arguments that produced them.
"""

import argparse
import json
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, List, Optional, Union

import cv2
import numpy as np
from pycocotools import mask as mask_util
from tqdm import tqdm

from centermask.utils.file_io import atomic_write

from .synthetic_crowd import CrowdSceneConfig, render_crowd_scene
from .synthetic_scene import CLASS_NAMES, SceneConfig, render_scene

__all__ = [
    "BUILTIN_NUM_TRAIN",
    "BUILTIN_NUM_VAL",
    "BUILTIN_SCENE",
    "CROWD_SCENE",
    "SPARSE_SCENE",
    "SCENES",
    "SPLITS",
    "mask_to_polygons",
    "mask_to_rle",
    "generate_split",
    "generate_synthetic",
    "ensure_synthetic",
    "annotation_path",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")
_SPLIT_SEED_OFFSET = {"train": 0, "val": 1}
# Masks are traced at twice the resolution so that the polygon vertices sit on pixel edges
# (rather than on boundary pixel centres): rasterising the polygons with pycocotools then gives the
# mask back exactly, small objects included.
_TRACE_SCALE = 2


def annotation_path(root, split: str, rle: bool = False) -> Path:
    """Path of the json of ``split`` ("train" or "val") under ``root``."""
    return Path(root) / "annotations" / f"instances_{split}{'_rle' if rle else ''}.json"


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons of a bool mask (H, W), one per connected component.

    Holes (an object seen through a ring, or a small object lying on a big one) are kept: each hole
    is spliced into its outer contour through a zero-width seam, which the even-odd rasterisation of
    pycocotools cancels out. Coordinates are continuous pixel coordinates (pixel ``i`` spans
    ``[i, i + 1]``).
    """
    scaled = cv2.resize(
        mask.astype(np.uint8),
        (mask.shape[1] * _TRACE_SCALE, mask.shape[0] * _TRACE_SCALE),
        interpolation=cv2.INTER_NEAREST,
    )
    contours, hierarchy = cv2.findContours(scaled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    hierarchy = hierarchy[0]  # rows: next, previous, first child, parent
    polygons = []
    for index, contour in enumerate(contours):
        if hierarchy[index][3] != -1:
            continue  # a hole: handled with its outer contour
        ring = contour.reshape(-1, 2).astype(np.float64)
        child = hierarchy[index][2]
        while child != -1:
            hole = contours[child].reshape(-1, 2).astype(np.float64)
            distances = ((ring[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
            a, b = np.unravel_index(np.argmin(distances), distances.shape)
            ring = np.concatenate([ring[: a + 1], hole[b:], hole[: b + 1], ring[a:]])
            child = hierarchy[child][0]
        coords = (ring + 0.5) / _TRACE_SCALE
        polygons.append([round(float(v), 2) for v in coords.reshape(-1)])
    return polygons


def mask_to_rle(mask: np.ndarray) -> Dict[str, object]:
    """Compressed COCO RLE of a bool mask (H, W), json-serialisable."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _bbox_xywh(mask: np.ndarray) -> List[float]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)]


# The built-in data set: what `make quickstart` and `python -m centermask.data.synthetic` write to
# datasets/synthetic (small non-square images, so that a CPU trains on enough of them).
BUILTIN_SCENE = SceneConfig(
    min_short_side=96, max_short_side=128, min_object_size=16, min_objects=2, max_objects=8
)
BUILTIN_NUM_TRAIN = 600
BUILTIN_NUM_VAL = 100

# The crowded scenes and their sparse control (datasets/synthetic_crowd, datasets/synthetic_sparse);
# the same numbers of images as the built-in data set.
CROWD_SCENE = CrowdSceneConfig(kind="crowd")
SPARSE_SCENE = CrowdSceneConfig(kind="sparse")
SCENES = {"default": BUILTIN_SCENE, "crowd": CROWD_SCENE, "sparse": SPARSE_SCENE}
AnyScene = Union[SceneConfig, CrowdSceneConfig]


def _render(rng: np.random.Generator, scene: AnyScene):
    if isinstance(scene, CrowdSceneConfig):
        return render_crowd_scene(rng, scene)
    return render_scene(rng, scene)


def _image_seed(seed: int, split: str, index: int) -> List[int]:
    return [seed, _SPLIT_SEED_OFFSET[split], index]


def _generator_args(
    split: str, num_images: int, seed: int, image_format: str, scene: AnyScene
) -> dict:
    """What ``info.generator`` of a split's json records; equal records mean equal files."""
    return {
        "split": split,
        "num_images": num_images,
        "seed": seed,
        "image_format": image_format,
        "scene": asdict(scene),
    }


def generate_split(
    root,
    split: str,
    num_images: int,
    seed: int = 0,
    scene: Optional[AnyScene] = None,
    image_format: str = "png",
    progress: bool = True,
) -> Dict[str, int]:
    """Write the images and both json files of one split; returns image and instance counts."""
    if split not in _SPLIT_SEED_OFFSET:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    scene = scene or BUILTIN_SCENE
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)

    images, polygon_anns, rle_anns = [], [], []
    for index in tqdm(
        range(num_images), desc=f"synthetic {split}", unit="img", disable=not progress
    ):
        rng = np.random.default_rng(_image_seed(seed, split, index))
        image, objects, masks = _render(rng, scene)
        file_name = f"{index:06d}.{image_format}"
        cv2.imwrite(str(root / split / file_name), image)
        image_id = index + 1
        height, width = image.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for obj, mask in zip(objects, masks):
            common = {
                "id": len(polygon_anns) + 1,
                "image_id": image_id,
                "category_id": obj.class_id + 1,
                "bbox": _bbox_xywh(mask),
                "area": float(mask.sum()),
                "iscrowd": 0,
            }
            polygon_anns.append({**common, "segmentation": mask_to_polygons(mask)})
            rle_anns.append({**common, "segmentation": mask_to_rle(mask)})

    info = {
        "description": f"centermask synthetic shapes, {split} split",
        "generator": _generator_args(split, num_images, seed, image_format, scene),
    }
    categories = [
        {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES)
    ]
    _remove_stale_images(root / split, num_images)
    for anns, rle in ((rle_anns, True), (polygon_anns, False)):
        data = {"info": info, "images": images, "annotations": anns, "categories": categories}
        atomic_write(
            str(annotation_path(root, split, rle=rle)),
            lambda f: json.dump(data, f, separators=(",", ":")),
            mode="w",
        )
    return {"images": num_images, "instances": len(polygon_anns)}


def _remove_stale_images(folder: Path, num_images: int) -> None:
    """Delete image files of an earlier, larger generation (index >= ``num_images``), so that the
    folder holds exactly the split's images."""
    for path in folder.iterdir():
        stem, suffix = path.stem, path.suffix.lower()
        if suffix in (".png", ".jpg") and stem.isdigit() and len(stem) == 6:
            if int(stem) >= num_images:
                path.unlink()


def generate_synthetic(
    root,
    num_train: int = BUILTIN_NUM_TRAIN,
    num_val: int = BUILTIN_NUM_VAL,
    seed: int = 0,
    scene: Optional[AnyScene] = None,
    image_format: str = "png",
    progress: bool = True,
) -> Dict[str, Dict[str, int]]:
    """Write both splits under ``root``; returns per-split image and instance counts."""
    return {
        split: generate_split(root, split, count, seed, scene, image_format, progress)
        for split, count in (("train", num_train), ("val", num_val))
    }


def _existing_generator_args(root, split: str) -> Optional[dict]:
    paths = [annotation_path(root, split, rle) for rle in (False, True)]
    if not all(p.is_file() for p in paths):
        return None
    try:
        with open(paths[0]) as f:
            return json.load(f).get("info", {}).get("generator")
    except (OSError, ValueError):
        return None


def ensure_synthetic(
    root,
    num_train: int = BUILTIN_NUM_TRAIN,
    num_val: int = BUILTIN_NUM_VAL,
    seed: int = 0,
    scene: Optional[AnyScene] = None,
    image_format: str = "png",
    progress: bool = True,
) -> bool:
    """Generate the data set under ``root`` unless the same arguments already produced it there.

    Returns True when something was (re)generated.
    """
    scene = scene or BUILTIN_SCENE
    generated = False
    for split, count in (("train", num_train), ("val", num_val)):
        wanted = _generator_args(split, count, seed, image_format, scene)
        if _existing_generator_args(root, split) == wanted:
            continue
        logger.info(f"Generating the synthetic {split} split ({count} images) in {root}")
        generate_split(root, split, count, seed, scene, image_format, progress)
        generated = True
    return generated


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Write the built-in synthetic instance-segmentation data set (COCO json)."
    )
    parser.add_argument(
        "--kind",
        choices=sorted(SCENES),
        default="default",
        help="scenes: the built-in data set (default), crowded same-class chains, or their "
        "sparse control",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: datasets/synthetic[_KIND])"
    )
    parser.add_argument("--num-train", type=int, default=BUILTIN_NUM_TRAIN)
    parser.add_argument("--num-val", type=int, default=BUILTIN_NUM_VAL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("png", "jpg"), default="png")
    # Scene options; unset ones keep the kind's defaults.
    parser.add_argument("--min-short-side", type=int)
    parser.add_argument("--max-short-side", type=int)
    parser.add_argument("--min-object-size", type=float)
    parser.add_argument("--min-objects", type=int, help="--kind default only")
    parser.add_argument("--max-objects", type=int, help="--kind default only")
    args = parser.parse_args(argv)
    scene = SCENES[args.kind]
    overrides = {
        key: getattr(args, key)
        for key in (
            "min_short_side",
            "max_short_side",
            "min_object_size",
            "min_objects",
            "max_objects",
        )
        if getattr(args, key) is not None
    }
    unknown = sorted(set(overrides) - set(asdict(scene)))
    if unknown:
        options = ", ".join("--" + k.replace("_", "-") for k in unknown)
        parser.error(f"{options} do not apply to --kind {args.kind}")
    scene = replace(scene, **overrides)
    if args.out is None:
        args.out = "datasets/synthetic" + ("" if args.kind == "default" else f"_{args.kind}")
    counts = generate_synthetic(
        args.out, args.num_train, args.num_val, args.seed, scene, args.format, progress=True
    )
    for split, c in counts.items():
        print(f"{split}: {c['images']} images, {c['instances']} instances")
    print(f"written to {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
