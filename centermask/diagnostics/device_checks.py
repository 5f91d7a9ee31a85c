"""Parts 1 and 2 of the GPU acceptance check: the environment, NCCL and the torchvision ops on
the device, and CPU vs device parity of every design (outputs and gradients, float32 without
TF32), plus fp16 vs fp32 on CUDA."""

import copy
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torchvision.ops import deform_conv2d, nms, roi_align

from centermask.acceleration import optimize_for_inference
from centermask.benchmark.inference import environment_info
from centermask.benchmark.precision import tf32_disabled
from centermask.benchmark.training import synthetic_training_record, training_mapper
from centermask.config import get_cfg
from centermask.data.inputs import model_inputs, synthetic_image
from centermask.export.agreement import detection_agreement
from centermask.utils.synthetic_weights import load_synthetic_weights

from .results import FAIL, PASS, SKIP, Check, relative_error

__all__ = ["environment", "check_nccl", "check_ops", "parity_models", "check_parity", "check_fp16"]

REL_TOL = 1e-4  # outputs and gradients, CPU vs device, float32 without TF32
MATCH_MIN = 0.99  # detections matched one to one (same class, box IoU >= 0.5)
MASK_IOU_MIN = 0.99  # mean mask IoU of the matched detections
FP16_MATCH_MIN = 0.95


def environment(device: torch.device) -> Dict:
    """Versions, the GPU, its compute capability, the driver and CUDA versions."""
    info = environment_info(device, None)
    info["cuda_available"] = torch.cuda.is_available()
    info["cuda_runtime"] = torch.version.cuda
    if device.type == "cuda":
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30)
        info["cudnn"] = torch.backends.cudnn.version()
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            info["driver"] = subprocess.run(
                query, capture_output=True, text=True, timeout=20
            ).stdout.split("\n")[0]
        except (OSError, subprocess.SubprocessError):
            info["driver"] = "unknown (no nvidia-smi)"
    return info


def check_nccl(device: torch.device) -> Check:
    """A single-process NCCL all-reduce on the device."""
    if device.type != "cuda":
        return Check(1, "NCCL all-reduce (1 process)", SKIP, "needs CUDA")
    import torch.distributed as dist

    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("nccl", init_method=f"file://{folder}/store", rank=0, world_size=1)
        try:
            value = torch.arange(4.0, device=device) + 1
            dist.all_reduce(value)
            torch.cuda.synchronize(device)
            ok = value.tolist() == [1.0, 2.0, 3.0, 4.0]
        finally:
            dist.destroy_process_group()
    return Check(1, "NCCL all-reduce (1 process)", PASS if ok else FAIL, f"result {value.tolist()}")


def check_ops(device: torch.device) -> List[Check]:
    """deform_conv2d, roi_align and nms on the device against float64 on the CPU."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 20, 24, generator=generator)
    weight = torch.randn(16, 8, 3, 3, generator=generator) * 0.1
    offset = torch.randn(2, 18, 20, 24, generator=generator) * 2
    mask = torch.rand(2, 9, 20, 24, generator=generator)
    boxes = torch.rand(50, 4, generator=generator) * 100
    boxes[:, 2:] += boxes[:, :2] + 5
    scores = torch.rand(50, generator=generator)
    rois = torch.cat([torch.randint(0, 2, (50, 1), generator=generator).float(), boxes / 5], 1)

    def deform(t):
        return deform_conv2d(t(x), t(offset), t(weight), padding=(1, 1), mask=t(mask))

    def align(t):
        return roi_align(t(x), t(rois), (7, 7), spatial_scale=0.5, sampling_ratio=2, aligned=True)

    checks = []
    for name, op in (("deform_conv2d", deform), ("roi_align", align)):
        with tf32_disabled():
            ours = op(lambda t: t.to(device))
        error = relative_error(ours, op(lambda t: t.double()))
        status = PASS if error <= REL_TOL else FAIL
        checks.append(Check(1, f"{name} on {device.type}", status, f"rel. error {error:.1e}"))
    kept = nms(boxes.to(device), scores.to(device), 0.5).cpu()
    same = torch.equal(kept, nms(boxes.double(), scores.double(), 0.5))
    checks.append(
        Check(1, f"nms on {device.type}", PASS if same else FAIL, f"{len(kept)} boxes kept")
    )
    return checks


def parity_models(root: Path, quick: bool) -> List[Tuple[str, str, List[str]]]:
    """(label, config file, overrides) of the models to compare: every parity folder's design in
    ``tests/data/parity`` (its ``meta.json`` names the config), a deformable V-57 and both
    CenterMask-PR detectors; ``quick``: the Lite and CenterMask-PR ones only."""
    models = []
    parity = root / "tests" / "data" / "parity"
    for folder in sorted(p for p in parity.iterdir() if (p / "meta.json").is_file()):
        config = json.loads((folder / "meta.json").read_text())["config"]
        config = config.replace("configs/CondInst/", "configs/condinst/")
        if not quick or "lite" in folder.name:
            models.append((folder.name, config, []))
    if not quick:
        models.append(
            ("V-57 deformable", "configs/centermask/centermask_V_57_eSE_dcn_FPN_ms_3x.yaml", [])
        )
    for detector in ("", "fcos_"):
        config = f"configs/quickstart/centermask_pr_{detector}lite_V_19_slim_dw_eSE_synthetic.yaml"
        models.append((f"CenterMask-PR {detector.rstrip('_') or 'heatmap'}", config, []))
    return models


def build_synthetic(root: Path, config: str, overrides: List[str], device: str):
    cfg = get_cfg()
    cfg.merge_from_file(str(root / config))
    cfg.merge_from_list(overrides + ["MODEL.DEVICE", device, "MODEL.WEIGHTS", ""])
    torch.manual_seed(0)
    model = build_model(cfg)
    load_synthetic_weights(model)
    return model.eval(), cfg


def _instances(outputs):
    return [x["instances"].to("cpu") for x in outputs]


def _agreement(reference, candidate, iou_threshold=0.5) -> Tuple[float, float, int]:
    """(worst match rate, worst mean mask IoU, detections) over the images."""
    rates, ious, count = [], [], 0
    for r, c in zip(reference, candidate):
        a = detection_agreement(r, c, iou_threshold=iou_threshold)
        rates.append(a.match_rate)
        ious.append(1.0 if a.mean_mask_iou is None else a.mean_mask_iou)
        count += a.num_reference
    return min(rates), min(ious), count


def _training_batch(cfg, size: int) -> List[Dict]:
    mapper = training_mapper(cfg)
    classes = cfg.MODEL.FCOS.NUM_CLASSES
    records = [
        synthetic_training_record(i, size, size * 4 // 3, num_objects=4, num_classes=classes)
        for i in range(2)
    ]
    np.random.seed(0)
    return [mapper(r) for r in records]


def _losses_and_grads(model, batch):
    model.train()
    torch.manual_seed(0)
    with EventStorage(0):  # the RoI heads log to the storage
        losses = model(batch)
    sum(losses.values()).backward()
    grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.eval()
    return {k: v.detach().cpu() for k, v in losses.items()}, grads


def check_parity(root: Path, device: torch.device, label: str, config: str, overrides, size: int):
    """One model, CPU vs device: detections, backbone features, losses and gradients; and the
    optimised pipeline vs the eager model on the device."""
    # No random subsets in training (they would draw differently on each device).
    overrides = overrides + [
        "INPUT.MIN_SIZE_TEST",
        str(size),
        "INPUT.MAX_SIZE_TEST",
        str(size * 4 // 3),
    ]
    cpu_model, cfg = build_synthetic(root, config, overrides, "cpu")
    if hasattr(cpu_model, "detector") and hasattr(cpu_model.detector, "max_train_masks"):
        cpu_model.detector.max_train_masks = -1  # CenterMask-PR on FCOS
    if hasattr(cpu_model, "max_proposals"):
        cpu_model.max_proposals = -1  # CondInst
    dev_model = copy.deepcopy(cpu_model).to(device)
    inputs = model_inputs(cfg, [synthetic_image(size, size * 4 // 3, seed=s) for s in (0, 1)])
    data = {}
    with tf32_disabled(), torch.no_grad():
        reference = _instances(cpu_model(inputs))
        ours = _instances(dev_model(inputs))
        rate, mask_iou, count = _agreement(reference, ours, iou_threshold=0.99)
        images = cpu_model.preprocess_image(inputs).tensor
        cpu_features = cpu_model.backbone(images)
        dev_features = dev_model.backbone(images.to(device))
        data["feature_rel_error"] = max(
            relative_error(dev_features[k], v) for k, v in cpu_features.items()
        )
        optimized = _instances(optimize_for_inference(dev_model)(inputs))
        data["optimized_match_rate"], data["optimized_mask_iou"], _ = _agreement(ours, optimized)
    batch = _training_batch(cfg, size)
    with tf32_disabled():
        cpu_losses, cpu_grads = _losses_and_grads(cpu_model, batch)
        dev_losses, dev_grads = _losses_and_grads(dev_model, batch)
    data["loss_rel_error"] = max(relative_error(dev_losses[k], v) for k, v in cpu_losses.items())
    scale = max(float(g.abs().max()) for g in cpu_grads.values())
    data["grad_rel_error"] = max(
        float((dev_grads[n] - g).abs().max()) / scale if n in dev_grads else float("inf")
        for n, g in cpu_grads.items()
    )
    data.update(match_rate=rate, mask_iou=mask_iou, detections=count)
    ok = (
        count > 0
        and rate >= MATCH_MIN
        and mask_iou >= MASK_IOU_MIN
        and data["optimized_match_rate"] >= MATCH_MIN
        and data["optimized_mask_iou"] >= MASK_IOU_MIN
        and max(data["feature_rel_error"], data["loss_rel_error"], data["grad_rel_error"])
        <= REL_TOL
    )
    detail = (
        f"{count} dets, matched {rate:.1%}, mask IoU {mask_iou:.3f}; optimized {data['optimized_match_rate']:.1%}"
        f"; rel. err features {data['feature_rel_error']:.1e} losses {data['loss_rel_error']:.1e} "
        f"grads {data['grad_rel_error']:.1e}"
    )
    return Check(2, f"parity cpu vs {device.type}: {label}", PASS if ok else FAIL, detail, data)


def check_fp16(root: Path, device: torch.device, label: str, config: str, overrides, size: int):
    """optimize_for_inference in fp16 vs fp32 on CUDA: detections agree >= 95%."""
    name = f"fp16 vs fp32: {label}"
    if device.type != "cuda":
        return Check(2, name, SKIP, "fp16 needs CUDA")
    overrides = overrides + [
        "INPUT.MIN_SIZE_TEST",
        str(size),
        "INPUT.MAX_SIZE_TEST",
        str(size * 4 // 3),
    ]
    model, cfg = build_synthetic(root, config, overrides, str(device))
    inputs = model_inputs(cfg, [synthetic_image(size, size * 4 // 3, seed=s) for s in (0, 1)])
    with tf32_disabled():
        full = _instances(optimize_for_inference(model)(inputs))
        half = _instances(optimize_for_inference(model, dtype="fp16")(inputs))
    rate, mask_iou, count = _agreement(full, half)
    status = PASS if rate >= FP16_MATCH_MIN and count > 0 else FAIL
    detail = f"{count} dets, matched {rate:.1%}, mask IoU {mask_iou:.3f}"
    return Check(2, name, status, detail, {"match_rate": rate, "mask_iou": mask_iou})
