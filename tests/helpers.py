"""Shared helpers for the tests: parity folders, configs, models with synthetic weights."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DATA = TESTS / "data"
PARITY = DATA / "parity"
KEYS = DATA / "keys"
CONFIGS = ROOT / "configs" / "centermask"
QUICK_CONFIGS = ROOT / "configs" / "quick_schedules"

# Copies of shared/parity/{synth_weights,compare}.py: they are the specification of the synthetic
# weights and of the comparison, so the tests carry them verbatim.
sys.path.insert(0, str(TESTS / "parity"))
from compare import compare  # noqa: E402
from synth_weights import synth_state_dict  # noqa: E402

PARITY_DIRS = sorted(p.name for p in PARITY.iterdir() if p.is_dir())


def load_tool(name: str):
    """``tools/<name>.py`` imported as a module (the tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parity_dir(name: str) -> Path:
    return PARITY / name


def parity_meta(name: str) -> dict:
    return json.loads((PARITY / name / "meta.json").read_text())


def parity_config_file(name: str) -> Path:
    return ROOT / parity_meta(name)["config"]


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
