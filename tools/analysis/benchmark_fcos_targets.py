#!/usr/bin/env python
"""Time FCOS target assignment per image for a given input size and number of GT boxes.

python tools/analysis/benchmark_fcos_targets.py --height 800 --width 1216 --num-gt 10 100
python tools/analysis/benchmark_fcos_targets.py --device cuda --num-gt 10 100 500
"""

import argparse
import time

import torch
from detectron2.structures import Boxes, Instances

from centermask.modeling.fcos.targets import (
    compute_locations_per_level,
    fcos_targets,
    size_ranges_for_levels,
)

STRIDES = [8, 16, 32, 64, 128]


def random_instances(num_gt: int, height: int, width: int, device: torch.device) -> Instances:
    g = torch.Generator().manual_seed(num_gt)
    centre = torch.rand(num_gt, 2, generator=g) * torch.tensor([width, height])
    size = torch.rand(num_gt, 2, generator=g) ** 2 * torch.tensor([width, height]) / 2 + 4
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    classes = torch.randint(0, 80, (num_gt,), generator=g)
    return Instances(
        (height, width), gt_boxes=Boxes(boxes.to(device)), gt_classes=classes.to(device)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1216)
    parser.add_argument("--num-gt", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    locations, size = [], (args.height, args.width)
    for s in STRIDES:
        size = (
            (-(-size[0] // 2), -(-size[1] // 2)) if s > 8 else (args.height // 8, args.width // 8)
        )
        locations.append(compute_locations_per_level(size[0], size[1], s, device))
    num_locations = sum(len(loc) for loc in locations)
    ranges = size_ranges_for_levels([64, 128, 256, 512])
    print(
        f"input {args.height}x{args.width}, {num_locations} locations on 5 levels, "
        f"device {device}, {torch.get_num_threads()} threads"
    )
    for num_gt in args.num_gt:
        gt = [random_instances(num_gt, args.height, args.width, device)]

        def run():
            labels, _ = fcos_targets(
                locations, gt, strides=STRIDES, size_ranges=ranges, num_classes=80
            )
            return labels

        for _ in range(3):
            run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.iters):
            labels = run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_image = (time.perf_counter() - start) / args.iters
        positives = int((labels != 80).sum())
        print(f"{num_gt:5d} GT boxes: {per_image * 1e3:8.2f} ms / image ({positives} positives)")


if __name__ == "__main__":
    main()
