#!/usr/bin/env python
"""Run a CenterMask model on images, a video or a webcam and draw the predictions.

    python tools/demo.py --config-file CONFIG --input a.jpg dir/ "imgs/*.png" --output out/ \
        [--confidence-threshold 0.4] [--score box|mask] [--color-by-mask-score] \
        --opts MODEL.WEIGHTS model_final.pth

Which score is thresholded (``--confidence-threshold``, default 0.4) is explicit:

* ``--score box`` (default): ``scores``, FCOS's box score sqrt(class probability x centerness),
  the score box AP is ranked by;
* ``--score mask``: ``mask_scores`` = box score x predicted mask IoU (MaskIoU head), the score mask
  AP is ranked by. It is lower than the box score (it multiplies by an IoU), so use a lower
  threshold (e.g. 0.3).

The threshold filters the final detections; the model's own candidate threshold
(``MODEL.FCOS.INFERENCE_TH_TEST``, 0.05) is left as configured. Labels show "class box-score
m mask-score"; ``--color-by-mask-score`` colours masks by ``mask_scores`` (viridis).
"""

import argparse
import glob
import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import cv2
import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger

import centermask  # noqa: F401  (registers the model components)
import centermask.data  # noqa: F401  (registers the synthetic data sets: their class names)
from centermask.engine import BatchPredictor, build_config, draw_predictions, filter_by_score

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
logger = logging.getLogger("centermask.demo")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="CenterMask demo")
    parser.add_argument("--config-file", required=True, metavar="FILE")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files, folders or glob patterns")
    source.add_argument("--video-input", help="a video file")
    source.add_argument("--webcam", action="store_true", help="camera 0")
    parser.add_argument(
        "--output",
        help="folder for images (a file name is accepted for a single image), file for video",
    )
    parser.add_argument("--confidence-threshold", type=float, default=0.4)
    parser.add_argument(
        "--score", choices=("box", "mask"), default="box", help="which score is thresholded"
    )
    parser.add_argument("--color-by-mask-score", action="store_true")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="output size / input size (e.g. 2 for small images)",
    )
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE ...")
    return parser.parse_args(argv)


def expand_inputs(patterns: List[str]) -> List[str]:
    """Files, every image of a folder (sorted), or glob matches; errors name what is missing."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(
                str(p) for p in Path(pattern).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            found = sorted(glob.glob(os.path.expanduser(pattern)))
        if not found:
            raise FileNotFoundError(f"--input {pattern!r} matches no image")
        paths.extend(found)
    return paths


def _output_path(output: str, input_path: str, single: bool) -> str:
    if single and Path(output).suffix.lower() in IMAGE_SUFFIXES:
        return output
    os.makedirs(output, exist_ok=True)
    return os.path.join(output, Path(input_path).stem + ".png")


def _draw(args, image, instances, metadata) -> Tuple[int, np.ndarray]:
    """The instances above the threshold drawn over ``image`` (BGR); returns their count too."""
    shown = filter_by_score(instances, args.confidence_threshold, args.score)
    drawn = draw_predictions(
        image,
        shown,
        metadata,
        color_by_mask_score=args.color_by_mask_score,
        scale=args.scale,
    )
    return len(shown), drawn


def run_images(args, predictor: BatchPredictor, metadata) -> List[str]:
    paths = expand_inputs(args.input)
    written = []
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start : start + args.batch_size]
        images = []
        for path in chunk:
            image = cv2.imread(path)
            if image is None:
                raise ValueError(f"cannot read image {path}")
            images.append(image)
        tic = time.perf_counter()
        outputs = predictor(images)
        per_image = (time.perf_counter() - tic) / len(chunk)
        for path, image, instances in zip(chunk, images, outputs):
            count, drawn = _draw(args, image, instances, metadata)
            logger.info(f"{path}: {count} instances in {per_image:.3f}s")
            if args.output:
                out = _output_path(args.output, path, single=len(paths) == 1)
                cv2.imwrite(out, drawn)
                written.append(out)
            else:
                _show(drawn)
    return written


def _frames(capture) -> Iterator:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def _show(image) -> None:
    try:
        cv2.imshow("CenterMask", image)
        if cv2.waitKey(1) == 27:  # Esc
            raise KeyboardInterrupt
    except cv2.error as e:
        raise SystemExit(
            f"Cannot open a window ({e.__class__.__name__}); this OpenCV has no GUI support "
            "(opencv-python-headless). Pass --output to write the results to a file instead."
        )


def run_video(args, predictor: BatchPredictor, metadata) -> List[str]:
    capture = cv2.VideoCapture(0 if args.webcam else args.video_input)
    if not capture.isOpened():
        raise ValueError(f"cannot open {'the webcam' if args.webcam else args.video_input}")
    writer = None
    written = []
    try:
        for index, frame in enumerate(_frames(capture)):
            tic = time.perf_counter()
            count, drawn = _draw(args, frame, predictor([frame])[0], metadata)
            logger.info(f"frame {index}: {count} instances in {time.perf_counter() - tic:.3f}s")
            if args.output:
                if writer is None:
                    fps = capture.get(cv2.CAP_PROP_FPS) or 15.0
                    height, width = drawn.shape[:2]
                    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                    writer = cv2.VideoWriter(args.output, fourcc, fps, (width, height))
                    written.append(args.output)
                writer.write(drawn)
            else:
                _show(drawn)
    except KeyboardInterrupt:
        pass
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    return written


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    setup_logger(name="centermask")
    setup_logger(name="detectron2")
    cfg = build_config(argparse.Namespace(config_file=args.config_file, opts=args.opts))
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: the model is untrained (--opts MODEL.WEIGHTS x)")
    predictor = BatchPredictor(cfg, batch_size=args.batch_size)
    metadata = predictor.metadata or MetadataCatalog.get("__unused")
    if args.input:
        return run_images(args, predictor, metadata)
    return run_video(args, predictor, metadata)


if __name__ == "__main__":
    main(sys.argv[1:])
