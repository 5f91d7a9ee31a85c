"""Training-iteration benchmark: time per iteration split into data, forward, backward, optimizer.

Three modes of the same model are compared, interleaved, on the same batches:

* ``default``: this package's implementation (vectorised FCOS target assignment: all locations x
  all GT boxes of a level at once; losses on the flattened batch; frozen norms of the VoVNet
  backbone applied through the conv weights, see :class:`ConvUnitSequence`);
* ``channels-last``: ``default`` with the model in NHWC memory order (``MODEL.CHANNELS_LAST``);
* ``straightforward`` (models with FCOS): the same losses written the obvious way, as a
  reference point: FCOS targets assigned with a Python loop over images, levels and GT boxes,
  the FCOS losses computed per image and summed, each frozen norm applied after its conv, the
  model in NCHW order. It exists only here, to measure what the optimisations buy; it produces
  the same loss values (checked on the first batch and reported). Models without FCOS (the
  CenterMask-PR heatmap detector) are compared with ``default``.

Data: synthetic images with polygon instances, mapped as detectron2's DatasetMapper does (the
config's training resize, ``annotations_to_instances``), in the main process, which is what the
"data" time measures.
"""

import copy
import statistics
import time
from typing import Callable, Dict, List, Optional

import cv2
import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.solver import build_optimizer
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage

from centermask.data.inputs import synthetic_image
from centermask.modeling.backbone.osa import ConvUnitSequence
from centermask.modeling.fcos import FCOS
from centermask.modeling.fcos.losses import centerness_targets, fcos_losses

__all__ = [
    "StraightforwardLossFCOS",
    "straightforward_model",
    "synthetic_training_record",
    "benchmark_training",
]


def _straightforward_targets(fcos: FCOS, locations, gt_instances):
    """labels (N, L), reg_targets (N, L, 4), gt_index (N, L): per image, per level, per GT box
    in Python."""
    labels_all, reg_all, index_all = [], [], []
    for instances in gt_instances:
        boxes = instances.gt_boxes.tensor.to(locations[0].dtype)
        classes = instances.gt_classes
        centers = instances.gt_centers.to(boxes.dtype) if instances.has("gt_centers") else None
        labels_img, reg_img, index_img = [], [], []
        for level_locations, stride, (lo, hi) in zip(locations, fcos.strides, fcos.size_ranges):
            xs, ys = level_locations[:, 0], level_locations[:, 1]
            best_area = torch.full_like(xs, float("inf"))
            labels = torch.full((len(xs),), fcos.num_classes, dtype=torch.int64, device=xs.device)
            reg = torch.zeros((len(xs), 4), dtype=xs.dtype, device=xs.device)
            index = torch.zeros((len(xs),), dtype=torch.int64, device=xs.device)
            for g in range(len(boxes)):
                x0, y0, x1, y1 = boxes[g]
                distances = torch.stack((xs - x0, ys - y0, x1 - xs, y1 - ys), dim=1)
                if fcos.center_sample:
                    # The box centre, or the one the model gives (CondInst: the mask centroid).
                    cx, cy = centers[g] if centers is not None else ((x0 + x1) / 2, (y0 + y1) / 2)
                    half = stride * fcos.pos_radius
                    rx0, ry0 = torch.max(cx - half, x0), torch.max(cy - half, y0)
                    rx1, ry1 = torch.min(cx + half, x1), torch.min(cy + half, y1)
                    inside = (xs - rx0 > 0) & (ys - ry0 > 0) & (rx1 - xs > 0) & (ry1 - ys > 0)
                else:
                    inside = distances.min(dim=1).values > 0
                largest = distances.max(dim=1).values
                area = (x1 - x0) * (y1 - y0)
                better = inside & (largest >= lo) & (largest <= hi) & (area < best_area)
                best_area = torch.where(better, area, best_area)
                labels[better] = classes[g]
                reg[better] = distances[better]
                index[better] = g
            labels_img.append(labels)
            reg_img.append(reg / float(stride))
            index_img.append(index)
        labels_all.append(torch.cat(labels_img))
        reg_all.append(torch.cat(reg_img))
        index_all.append(torch.cat(index_img))
    return torch.stack(labels_all), torch.stack(reg_all), torch.stack(index_all)


class StraightforwardLossFCOS(FCOS):
    """FCOS whose training targets come from :func:`_straightforward_targets` and whose losses
    are computed one image at a time (the two steps :meth:`FCOS.forward` runs in training)."""

    def _targets(self, locations, gt_instances):
        return _straightforward_targets(self, locations, gt_instances)

    def _losses_from_targets(self, logits, bbox_reg, ctrness, labels, reg_targets):
        sums = {"loss_fcos_cls": 0.0, "loss_fcos_loc": 0.0, "loss_fcos_ctr": 0.0}
        num_positive, ctr_total = 0.0, 0.0
        for i in range(labels.shape[0]):
            flat = [
                torch.cat([x[i].permute(1, 2, 0).reshape(-1, x.shape[1]) for x in outputs])
                for outputs in (logits, bbox_reg, ctrness)
            ]
            positive = labels[i] != self.num_classes
            image_positive = positive.sum().clamp(min=1).float()
            image_ctr = centerness_targets(reg_targets[i][positive]).sum()
            losses = fcos_losses(
                flat[0],
                flat[1],
                flat[2].reshape(-1),
                labels[i],
                reg_targets[i],
                focal_alpha=self.focal_alpha,
                focal_gamma=self.focal_gamma,
                loc_loss_type=self.loc_loss_type,
            )
            # fcos_losses normalises per image; undo it to get sums over the batch.
            sums["loss_fcos_cls"] = sums["loss_fcos_cls"] + losses["loss_fcos_cls"] * image_positive
            sums["loss_fcos_ctr"] = sums["loss_fcos_ctr"] + losses["loss_fcos_ctr"] * image_positive
            sums["loss_fcos_loc"] = sums["loss_fcos_loc"] + losses[
                "loss_fcos_loc"
            ] * image_ctr.clamp(min=1e-6)
            num_positive = num_positive + positive.sum().float()
            ctr_total = ctr_total + image_ctr
        num_positive = torch.as_tensor(num_positive).clamp(min=1.0)
        return {
            "loss_fcos_cls": sums["loss_fcos_cls"] / num_positive,
            "loss_fcos_loc": sums["loss_fcos_loc"] / torch.as_tensor(ctr_total).clamp(min=1e-6),
            "loss_fcos_ctr": sums["loss_fcos_ctr"] / num_positive,
        }


def straightforward_model(model: torch.nn.Module) -> Optional[torch.nn.Module]:
    """A copy of ``model`` whose FCOS modules (wherever they are: CenterMask's and CondInst's
    proposal generator, CenterMask-PR's FCOS detector) compute their losses the straightforward
    way (:class:`StraightforwardLossFCOS`) and whose frozen norms run after their convs; None
    when the model has no FCOS (e.g. CenterMask-PR's heatmap detector)."""
    naive = copy.deepcopy(model)
    fcos_modules = [m for m in naive.modules() if type(m) is FCOS]
    if not fcos_modules:
        return None
    for module in fcos_modules:
        module.__class__ = StraightforwardLossFCOS
    for module in naive.modules():
        if isinstance(module, ConvUnitSequence):
            module.fold_frozen_norms = False
    return naive


def synthetic_training_record(
    seed: int, height: int = 480, width: int = 640, num_objects: int = 8, num_classes: int = 80
):
    """A dataset record with an in-memory ``image`` and polygon annotations of drawn shapes of
    random classes in ``[0, num_classes)``."""
    rng = np.random.default_rng(seed + 1000)
    image = synthetic_image(height, width, seed)
    annotations = []
    for _ in range(num_objects):
        cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
        rx, ry = rng.uniform(8, width / 5), rng.uniform(8, height / 5)
        angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        polygon = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)
        polygon[:, 0] = polygon[:, 0].clip(0, width - 1)
        polygon[:, 1] = polygon[:, 1].clip(0, height - 1)
        colour = tuple(float(c) for c in rng.integers(0, 256, 3))
        cv2.fillPoly(image, [polygon.round().astype(np.int32)], colour)
        x0, y0 = polygon.min(axis=0)
        x1, y1 = polygon.max(axis=0)
        annotations.append(
            {
                "bbox": [float(x0), float(y0), float(x1), float(y1)],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": int(rng.integers(0, num_classes)),
                "segmentation": [polygon.reshape(-1).tolist()],
                "iscrowd": 0,
            }
        )
    return {"image": image, "height": height, "width": width, "annotations": annotations}


def _mapper(cfg) -> Callable[[Dict], Dict]:
    augmentations = T.AugmentationList(utils.build_augmentation(cfg, is_train=True))

    def map_record(record: Dict) -> Dict:
        aug_input = T.AugInput(record["image"])
        transforms = augmentations(aug_input)
        image = aug_input.image
        annotations = [
            utils.transform_instance_annotations(copy.deepcopy(a), transforms, image.shape[:2])
            for a in record["annotations"]
        ]
        instances = utils.annotations_to_instances(
            annotations, image.shape[:2], mask_format=cfg.INPUT.MASK_FORMAT
        )
        return {
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "instances": utils.filter_empty_instances(instances),
            "height": record["height"],
            "width": record["width"],
        }

    return map_record


def benchmark_training(
    model: torch.nn.Module,
    cfg,
    *,
    batch_size: int = 2,
    iterations: int = 5,
    warmup: int = 1,
    num_objects: int = 8,
    log: Callable[[str], None] = print,
) -> Dict:
    """Interleaved training iterations of the three modes; JSON-ready dict."""
    device = model.pixel_mean.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    nchw = copy.deepcopy(model).train().to(memory_format=torch.contiguous_format)
    models = {
        "default": nchw,
        "channels-last": copy.deepcopy(nchw).to(memory_format=torch.channels_last),
    }
    naive = straightforward_model(nchw)
    if naive is not None:
        models = {"straightforward": naive, **models}
    else:
        log("no FCOS in this model: no straightforward mode (it rewrites the FCOS losses)")
    optimizers = {name: build_optimizer(cfg, m) for name, m in models.items()}
    mapper = _mapper(cfg)
    classes = cfg.MODEL.FCOS.NUM_CLASSES
    records = [
        synthetic_training_record(i, num_objects=num_objects, num_classes=classes)
        for i in range(2 * batch_size)
    ]
    times: Dict[str, List[Dict[str, float]]] = {name: [] for name in models}
    first_losses: Dict[str, Dict[str, float]] = {}
    with EventStorage(0):
        for step in range(warmup + iterations):
            names = list(models) if step % 2 == 0 else list(models)[::-1]
            for name in names:
                model_, optimizer = models[name], optimizers[name]
                start = time.perf_counter()
                # Same augmentation draws (and RoI sampling) for both modes at a given step.
                np.random.seed(step)
                first = step * batch_size
                batch = [mapper(records[(first + i) % len(records)]) for i in range(batch_size)]
                sync()
                t_data = time.perf_counter()
                torch.manual_seed(step)
                losses = model_(batch)
                total = sum(losses.values())
                sync()
                t_forward = time.perf_counter()
                optimizer.zero_grad()
                total.backward()
                sync()
                t_backward = time.perf_counter()
                optimizer.step()
                sync()
                end = time.perf_counter()
                if step == 0:
                    first_losses[name] = {k: float(v.detach()) for k, v in losses.items()}
                if step >= warmup:
                    times[name].append(
                        {
                            "data": t_data - start,
                            "forward": t_forward - t_data,
                            "backward": t_backward - t_forward,
                            "optimizer": end - t_backward,
                            "total": end - start,
                        }
                    )
    results = {"batch_size": batch_size, "objects_per_image": num_objects, "modes": {}}
    for name, runs in times.items():
        results["modes"][name] = {
            part: statistics.median(r[part] for r in runs) * 1e3 for part in runs[0]
        }
    baseline = "straightforward" if naive is not None else "default"
    results["baseline"] = baseline
    baseline_total = results["modes"][baseline]["total"]
    results[f"speedup_vs_{baseline}"] = {
        name: baseline_total / entry["total"] for name, entry in results["modes"].items()
    }
    results["first_batch_losses"] = first_losses
    reference = first_losses[baseline]
    results["first_batch_max_rel_loss_diff"] = max(
        abs(losses[k] - reference[k]) / max(abs(reference[k]), 1e-12)
        for losses in first_losses.values()
        for k in reference
    )
    log(f"losses of the first batch agree to {results['first_batch_max_rel_loss_diff']:.2e} (rel)")
    return results


def format_training_table(results: Dict) -> str:
    parts = ["data", "forward", "backward", "optimizer", "total"]
    header = "mode".rjust(16) + "".join(p.rjust(12) for p in parts)
    baseline = results.get("baseline", "straightforward")
    lines = [header + f"  vs {baseline}  (median ms)"]
    for name, entry in results["modes"].items():
        speedup = results[f"speedup_vs_{baseline}"][name]
        lines.append(
            name.rjust(16) + "".join(f"{entry[p]:12.1f}" for p in parts) + f"{speedup:14.2f}x"
        )
    return "\n".join(lines)
