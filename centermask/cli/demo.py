"""``centermask demo`` (and ``tools/demo.py``): run a model on images, a video or a webcam and
draw the predictions.

    centermask demo --config-file CONFIG --input a.jpg dir/ "imgs/*.png" --output out/ \
        [--confidence-threshold 0.4] [--score box|mask] [--color-by-mask-score] \
        --opts MODEL.WEIGHTS model_final.pth

``--config-file`` takes a path or a published model's name (``centermask://NAME``: its config
and, unless ``--opts MODEL.WEIGHTS`` is given, its weights, downloaded once into the cache).

Which score is thresholded (``--confidence-threshold``, default 0.4) is explicit:

* ``--score box`` (default): ``scores``, FCOS's box score sqrt(class probability x centerness),
  the score box AP is ranked by;
* ``--score mask``: ``mask_scores`` = box score x predicted mask IoU (MaskIoU head), the score mask
  AP is ranked by. It is lower than the box score (it multiplies by an IoU), so use a lower
  threshold (e.g. 0.3).

The threshold filters the final detections; the model's own candidate threshold
(``MODEL.FCOS.INFERENCE_TH_TEST``, 0.05) is left as configured. Labels show "class box-score
m mask-score"; ``--color-by-mask-score`` colours masks by ``mask_scores`` (viridis).

Over files, folders and globs, a file that cannot be read or decoded as an image, or that has
more pixels than ``INPUT.MAX_IMAGE_PIXELS`` (from its header, before decoding), is reported
(name and reason) and skipped; every other image is drawn, a summary line ends the run and the
exit status is 1 if anything was skipped. ``--output-json FILE`` writes the shown predictions of
every image in COCO results format (RLE masks; ``image_id`` is the image's position in the input
list, ``file_name`` its path). ``--dataset NAME=ANNOTATIONS.json:IMAGE_DIR`` registers a
COCO-format data set, so that ``DATASETS.TEST`` can name it: its class names label the drawing.
"""

import argparse
import glob
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.structures import Instances
from detectron2.utils.logger import setup_logger

import centermask.data  # noqa: F401  (registers the synthetic data sets: their class names)
import centermask.modeling  # noqa: F401  (registers the model components)
from centermask.cli.common import command_parser, parse_and_run
from centermask.data.image_guard import ImageTooLargeError, check_decoded_size, check_image_header
from centermask.engine import (
    BatchPredictor,
    add_dataset_argument,
    build_config,
    draw_predictions,
    filter_by_score,
)
from centermask.evaluation import instances_to_coco_results
from centermask.utils.file_io import atomic_write

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
logger = logging.getLogger("centermask.demo")

EPILOG = """
Examples:

A published model (config and weights by name; the weights are downloaded once):
  centermask demo --config-file centermask://centermask_lite_V_39_eSE_FPN_ms_4x \\
      --input photo.jpg --output out/

Your checkpoint, masks coloured by the predicted mask IoU, predictions as COCO json too:
  centermask demo --config-file configs/centermask/centermask_lite_V_39_eSE_FPN_ms_4x.yaml \\
      --input images/ --output out/ --output-json out/predictions.json --color-by-mask-score \\
      --opts MODEL.WEIGHTS output/model_final.pth

The weights keep their authors' terms (non-commercial for the published ones).
"""


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = command_parser(
        prog, "Run a model on images, a video or a webcam and draw the predictions.", EPILOG
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files, folders or glob patterns")
    source.add_argument("--video-input", help="a video file")
    source.add_argument("--webcam", action="store_true", help="camera 0")
    parser.add_argument(
        "--output",
        help="folder for images (a file name is accepted for a single image), file for video; "
        "without --output and --output-json the results are shown in a window",
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
    parser.add_argument(
        "--output-json",
        metavar="FILE",
        help="write the predictions of all input images to FILE in COCO results format",
    )
    add_dataset_argument(parser)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE ...")
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@dataclass
class DemoSummary:
    """What a run did: files written, inputs skipped ({path: reason}), COCO results."""

    inputs: int = 0
    written: List[str] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)
    results: List[dict] = field(default_factory=list)

    def report(self) -> str:
        """The summary line that ends a run over images, then one line per skipped file."""
        line = f"{self.inputs - len(self.skipped)} of {self.inputs} image(s) drawn"
        line += f", {len(self.skipped)} skipped"
        return line + "".join(f"\n  {path}: {reason}" for path, reason in self.skipped.items())

    @property
    def exit_status(self) -> int:
        """1 if any input was skipped, else 0."""
        return 1 if self.skipped else 0


def expand_inputs(patterns: List[str]) -> List[str]:
    """Files, every file of a folder (sorted, hidden ones excepted), or glob matches; errors name
    a pattern that matches nothing. Whether each file is an image is decided when it is read."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(
                str(p) for p in Path(pattern).iterdir() if p.is_file() and p.name[0] != "."
            )
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            found = sorted(p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))
        if not found:
            raise FileNotFoundError(f"--input {pattern!r} matches no file")
        paths.extend(found)
    return paths


def read_image(path: str, max_pixels: int = 0) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """(BGR uint8 image, None), or (None, the reason it cannot be used). An image of more than
    ``max_pixels`` pixels (0: no limit) is refused from its header, before it is decoded."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"
    if not data:
        return None, "empty file"
    try:
        check_image_header(data, max_pixels, name=path)
    except ImageTooLargeError as e:
        return None, f"too large ({e})"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None, f"not a decodable image ({len(data)} bytes)"
    try:  # formats PIL does not read are checked once OpenCV has decoded them
        check_decoded_size(path, image.shape[1], image.shape[0], max_pixels)
    except ImageTooLargeError as e:
        return None, f"too large ({e})"
    return image, None


def _output_path(output: str, input_path: str, index: int, single: bool, taken: List[str]) -> str:
    """``<output>/<input stem>.png``; ``<stem>_<input index>.png`` when an earlier input of the
    run (e.g. ``a.jpg`` before ``a.png``) already took that name."""
    if single and Path(output).suffix.lower() in IMAGE_SUFFIXES:
        return output
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, Path(input_path).stem + ".png")
    if path in taken:
        path = os.path.join(output, f"{Path(input_path).stem}_{index}.png")
    return path


def _draw(args, image, instances, metadata) -> Tuple[Instances, np.ndarray]:
    """The instances above the threshold, and ``image`` (BGR) with them drawn over it."""
    shown = filter_by_score(instances, args.confidence_threshold, args.score)
    drawn = draw_predictions(
        image,
        shown,
        metadata,
        color_by_mask_score=args.color_by_mask_score,
        scale=args.scale,
    )
    return shown, drawn


def run_images(args, predictor: BatchPredictor, metadata, summary: DemoSummary) -> None:
    paths = expand_inputs(args.input)
    summary.inputs = len(paths)
    id_map = metadata.get("thing_dataset_id_to_contiguous_id", None)
    batch: List[Tuple[int, str, np.ndarray]] = []
    for index, path in enumerate(paths):
        image, problem = read_image(path, predictor.cfg.INPUT.MAX_IMAGE_PIXELS)
        if problem is not None:
            logger.warning(f"skipped {path}: {problem}")
            summary.skipped[path] = problem
        else:
            batch.append((index, path, image))
        if batch and (len(batch) == args.batch_size or index == len(paths) - 1):
            _predict_and_draw(args, predictor, metadata, batch, len(paths) == 1, id_map, summary)
            batch = []
    logger.info(summary.report())


def _predict_and_draw(args, predictor, metadata, batch, single, id_map, summary) -> None:
    tic = time.perf_counter()
    outputs = predictor([image for _, _, image in batch])
    per_image = (time.perf_counter() - tic) / len(batch)
    for (index, path, image), instances in zip(batch, outputs):
        shown, drawn = _draw(args, image, instances, metadata)
        logger.info(f"{path}: {len(shown)} instances in {per_image:.3f}s")
        for result in instances_to_coco_results(shown, index, id_map):
            summary.results.append({**result, "file_name": path})
        if args.output:
            out = _output_path(args.output, path, index, single, summary.written)
            cv2.imwrite(out, drawn)
            summary.written.append(out)
        elif not args.output_json:
            _show(drawn)


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


def run_video(args, predictor: BatchPredictor, metadata, summary: DemoSummary) -> None:
    """Frames of the video (``image_id`` in the COCO results: the frame index) or the webcam."""
    capture = cv2.VideoCapture(0 if args.webcam else args.video_input)
    if not capture.isOpened():
        raise ValueError(f"cannot open {'the webcam' if args.webcam else args.video_input}")
    id_map = metadata.get("thing_dataset_id_to_contiguous_id", None)
    writer = None
    try:
        for index, frame in enumerate(_frames(capture)):
            tic = time.perf_counter()
            shown, drawn = _draw(args, frame, predictor([frame])[0], metadata)
            logger.info(
                f"frame {index}: {len(shown)} instances in {time.perf_counter() - tic:.3f}s"
            )
            summary.results.extend(instances_to_coco_results(shown, index, id_map))
            if args.output:
                if writer is None:
                    fps = capture.get(cv2.CAP_PROP_FPS) or 15.0
                    height, width = drawn.shape[:2]
                    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                    writer = cv2.VideoWriter(args.output, fourcc, fps, (width, height))
                    summary.written.append(args.output)
                writer.write(drawn)
            elif not args.output_json:
                _show(drawn)
    except KeyboardInterrupt:
        pass
    finally:
        capture.release()
        if writer is not None:
            writer.release()


def run(args: argparse.Namespace) -> DemoSummary:
    """The demo over ``args`` (of :func:`build_parser`)."""
    setup_logger(name="centermask")
    setup_logger(name="detectron2")
    # Inference only: class counts the config leaves unset come from DATASETS.TEST.
    config_args = argparse.Namespace(
        config_file=args.config_file, opts=args.opts, dataset=args.dataset, eval_only=True
    )
    cfg = build_config(config_args)
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: the model is untrained (--opts MODEL.WEIGHTS x)")
    predictor = BatchPredictor(cfg, batch_size=args.batch_size)
    metadata = predictor.metadata or MetadataCatalog.get("__unused")
    summary = DemoSummary()
    if args.input:
        run_images(args, predictor, metadata, summary)
    else:
        run_video(args, predictor, metadata, summary)
    if args.output_json:
        text = json.dumps(summary.results)
        atomic_write(args.output_json, lambda f: f.write(text), mode="w")
        logger.info(f"{len(summary.results)} predictions written to {args.output_json}")
    return summary


def command(args: argparse.Namespace) -> int:
    """Exit status 1 when an input was skipped."""
    return run(args).exit_status


def main(argv: Optional[List[str]] = None) -> int:
    return parse_and_run(build_parser(), command, argv)
