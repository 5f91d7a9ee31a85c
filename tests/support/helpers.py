"""Shared helpers for the tests: parity folders, configs, models with synthetic weights."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent
DATA = TESTS / "data"
PARITY = DATA / "parity"
KEYS = DATA / "keys"
CONFIGS = ROOT / "configs" / "centermask"
QUICK_CONFIGS = ROOT / "configs" / "quick_schedules"

# Copies of shared/parity/{synth_weights,compare}.py: they are the specification of the synthetic
# weights and of the comparison, so the tests carry them verbatim.
from tests.support.parity.compare import compare, summarize  # noqa: E402,F401
from tests.support.parity.synth_weights import synth_state_dict  # noqa: E402,F401

_ALL_PARITY_DIRS = sorted(p.name for p in PARITY.iterdir() if p.is_dir())


def load_tool(name: str):
    """``tools/<name>.py`` (``name`` may hold a folder: "deploy/export_model") imported as a
    module (the tools are scripts, not a package)."""
    module_name = "tools_" + name.replace("/", "_")
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(module, argv):
    """The result of ``module.run`` (``module``: a :mod:`centermask.cli` command) for the
    command line ``argv``; unlike ``module.main``, errors propagate."""
    return module.run(module.parse_args(argv))


def parity_dir(name: str) -> Path:
    return PARITY / name


def parity_meta(name: str) -> dict:
    return json.loads((PARITY / name / "meta.json").read_text())


def parity_config_file(name: str) -> Path:
    # The CondInst folders name AdelaiDet's configs/CondInst/; this package keeps them lowercase.
    return ROOT / parity_meta(name)["config"].replace("configs/CondInst/", "configs/condinst/")


def _is_condinst(name: str) -> bool:
    return parity_meta(name)["config"].startswith("configs/CondInst/")


# CenterMask (centermask2) reference folders and CondInst (AdelaiDet) ones.
PARITY_DIRS = [name for name in _ALL_PARITY_DIRS if not _is_condinst(name)]
CONDINST_PARITY_DIRS = [name for name in _ALL_PARITY_DIRS if _is_condinst(name)]


def parity_keys(name: str) -> dict:
    return {k: tuple(s) for k, s in json.loads((PARITY / name / "keys.json").read_text())}


def load_npz(name: str, file: str) -> dict:
    with np.load(PARITY / name / file) as z:
        return {k: z[k] for k in z.files}


def spec_keys(config_stem: str) -> dict:
    """{key: shape} of the reference model for configs/centermask/<config_stem>.yaml."""
    out = {}
    for line in (KEYS / f"{config_stem}.tsv").read_text().splitlines():
        if not line.strip():
            continue
        key, shape = line.split("\t")[:2]
        out[key] = tuple(json.loads(shape))
    return out


def get_config(config_file, *overrides):
    """CenterMask config from a YAML, on CPU, without pretrained weights."""
    from centermask.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *overrides])
    return cfg


def config_for_run(config_file, output_dir, *overrides):
    """The package's config with ``config_file`` merged, ``OUTPUT_DIR`` set and the ``KEY VALUE``
    overrides applied (the device and weights stay those of the file)."""
    from centermask.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(["OUTPUT_DIR", str(output_dir), *overrides])
    return cfg


def train_from_scratch(cfg):
    """A seeded :class:`~centermask.engine.Trainer` run of ``cfg`` from its initial weights;
    returns the trainer (its model trained, its EventStorage holding every loss)."""
    from detectron2.utils.env import seed_all_rng

    from centermask.engine import Trainer

    seed_all_rng(cfg.SEED)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer


def build_synthetic_model(name: str, *overrides):
    """The model of parity folder ``name`` with the synthetic weights loaded strictly, in eval mode."""
    from detectron2.modeling import build_model

    cfg = get_config(parity_config_file(name), *overrides)
    model = build_model(cfg)
    model.load_state_dict(synth_state_dict(parity_keys(name)), strict=True)
    model.eval()
    return model, cfg


def to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def parity_inputs(name: str, images) -> list:
    """Model inputs of a parity folder: image indices 0/1 (resized BGR, original height/width)
    or "small" (fed as it is), CHW float32."""
    arrays, sizes = load_npz(name, "inputs.npz"), parity_meta(name)["input_sizes"]
    inputs = []
    for i in images:
        if i == "small":
            image, (height, width) = arrays["small_bgr"], arrays["small_bgr"].shape[:2]
        else:
            image, (height, width) = (
                arrays[f"image_{i}_bgr_resized"],
                sizes[f"image_{i}"]["original_hw"],
            )
        chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        inputs.append({"image": chw, "height": height, "width": width})
    return inputs


def parity_gt(name: str) -> list:
    """Per image the ground truth as the reference fed it (resized coordinates)."""
    return json.loads((PARITY / name / "losses.json").read_text())["gt_as_fed_resized_coords"]


def parity_training_inputs(name: str, images) -> list:
    """:func:`parity_inputs` with each image's ``instances`` (boxes, classes, polygons)."""
    from detectron2.structures import Boxes, Instances, PolygonMasks

    gt, inputs = parity_gt(name), parity_inputs(name, images)
    for x, i in zip(inputs, images):
        polygons = [[np.asarray(p, dtype=np.float64) for p in ps] for ps in gt[i]["gt_polygons"]]
        x["instances"] = Instances(
            tuple(gt[i]["resized_hw"]),
            gt_boxes=Boxes(torch.tensor(gt[i]["gt_boxes_xyxy"], dtype=torch.float32)),
            gt_classes=torch.tensor(gt[i]["gt_classes"], dtype=torch.int64),
            gt_masks=PolygonMasks(polygons),
        )
    return inputs


def missing_mask_metrics(report: dict) -> list:
    """Prefixes of a :func:`compare` report whose final detections got no mask comparison
    (compare.py skips it silently when the mask arrays are absent on either side)."""
    return [
        f"det {prefix}/final: mask metrics not computed"
        for prefix, kinds in report["detections"].items()
        if "mask_iou_min" not in kinds.get("final", {})
    ]


def parity_failures(report: dict, loss_sections=None) -> list:
    """Names of the failed checks of a :func:`compare` report, ignoring loss sections that were
    not computed (``loss_sections``: the ones that were; None for all); every prefix's final
    detections must have had their masks compared."""
    failed = missing_mask_metrics(report)
    failed += [
        f"det {prefix}/{kind}"
        for prefix, kinds in report["detections"].items()
        for kind, result in kinds.items()
        if not result.get("ok", True)
    ]
    failed += [
        key
        for key, result in report["losses"].items()
        if not result.get("ok", True)
        and (loss_sections is None or key.split("/")[0] in loss_sections)
    ]
    failed += [key for key, result in report["tensors"].items() if not result.get("ok", True)]
    return failed


def parity_summary(report: dict) -> str:
    """The human-readable summary of a :func:`compare` report."""
    return summarize(report)
