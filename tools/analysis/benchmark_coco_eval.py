#!/usr/bin/env python
"""Time COCO box and mask evaluation: pycocotools' COCOeval against faster-coco-eval's.

    python tools/analysis/benchmark_coco_eval.py [--images 5000] [--detections 20] [--repeats 2]

The ground truth is the synthetic val split (generated into a temporary folder unless
``--annotations`` names an instances json), tiled to ``--images`` images; the results file holds,
per image, every object found again (jittered box, shifted mask, some with a wrong class) plus
false positives up to ``--detections`` detections, with random scores, RLE masks. Both
implementations evaluate the same results, interleaved, ``--repeats`` times each; the table gives
the median seconds of evaluate + accumulate + summarize (``loadRes`` excluded, it is the same
pycocotools code for both) and checks that the AP numbers agree.
"""

import argparse
import contextlib
import copy
import io
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pycocotools.mask as mask_util
from faster_coco_eval import COCOeval_faster
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from centermask.data.synthetic import annotation_path, generate_synthetic


def tiled_ground_truth(dataset: Dict, images: int) -> Dict:
    """``dataset`` repeated (new image and annotation ids) until it has ``images`` images."""
    out = {**dataset, "images": [], "annotations": []}
    by_image: Dict[int, List[Dict]] = {}
    for ann in dataset["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for new_id in range(images):
        image = dataset["images"][new_id % len(dataset["images"])]
        out["images"].append({**image, "id": new_id})
        for ann in by_image.get(image["id"], []):
            out["annotations"].append(
                {**ann, "id": len(out["annotations"]) + 1, "image_id": new_id}
            )
    return out


def noisy_results(gt: COCO, detections: int, seed: int = 0) -> List[Dict]:
    rng = np.random.default_rng(seed)
    category_ids = sorted(gt.getCatIds())
    results = []
    for image_id, image in gt.imgs.items():
        height, width = image["height"], image["width"]
        masks, classes = [], []
        for ann in gt.imgToAnns[image_id]:
            masks.append(np.roll(gt.annToMask(ann), int(rng.integers(-2, 3)), axis=1))
            classes.append(
                ann["category_id"] if rng.random() > 0.15 else int(rng.choice(category_ids))
            )
        while len(masks) < detections:
            mask = np.zeros((height, width), np.uint8)
            x, y = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
            mask[y : y + int(rng.integers(4, 40)), x : x + int(rng.integers(4, 40))] = 1
            masks.append(mask)
            classes.append(int(rng.choice(category_ids)))
        for mask, category_id in zip(masks, classes):
            rle = mask_util.encode(np.asfortranarray(mask))
            box = mask_util.toBbox(rle).tolist()
            rle["counts"] = rle["counts"].decode()
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": [v + float(rng.normal(0, 1.5)) for v in box],
                    "segmentation": rle,
                    "score": float(rng.random()),
                }
            )
    return results


def evaluate(cocoeval_class, gt: COCO, dt: COCO, iou_type: str):
    evaluator = cocoeval_class(gt, dt, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        tic = time.perf_counter()
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return time.perf_counter() - tic, np.array(evaluator.stats)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", help="COCO instances json (default: synthetic val)")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=20, help="results per image")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        source = args.annotations
        if source is None:
            generate_synthetic(tmp, 1, 100, seed=0, progress=False)
            source = annotation_path(tmp, "val")
        dataset = tiled_ground_truth(json.loads(Path(source).read_text()), args.images)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        results = noisy_results(gt, args.detections)
        loaded = {}
        for iou_type in ("bbox", "segm"):
            typed = copy.deepcopy(results)
            for r in typed:
                r.pop("segmentation" if iou_type == "bbox" else "bbox")
            loaded[iou_type] = gt.loadRes(typed)
    print(f"{len(gt.imgs)} images, {len(gt.anns)} objects, {len(results)} results")
    print("| task | pycocotools COCOeval (s) | faster-coco-eval (s) | speed-up | same AP |")
    print("|---|---|---|---|---|")
    for iou_type, dt in loaded.items():
        times = {COCOeval: [], COCOeval_faster: []}
        stats = {}
        for _ in range(args.repeats):
            for cls in times:  # interleaved
                seconds, stats[cls] = evaluate(cls, gt, dt, iou_type)
                times[cls].append(seconds)
        slow, fast = (statistics.median(times[c]) for c in (COCOeval, COCOeval_faster))
        same = np.allclose(stats[COCOeval], stats[COCOeval_faster], atol=1e-12, rtol=0)
        print(f"| {iou_type} | {slow:.2f} | {fast:.2f} | {slow / fast:.1f}x | {same} |")


if __name__ == "__main__":
    main()
