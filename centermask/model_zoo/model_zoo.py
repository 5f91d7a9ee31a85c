"""Published models by config name, in the style of ``detectron2.model_zoo``.

A name is ``<configs sub-folder>/<config file stem>``, e.g.
``centermask/centermask_lite_V_39_eSE_FPN_ms_4x`` or ``condinst/MS_R_50_3x`` (the stem alone, and
a trailing ``.yaml``, are accepted too). ``MODEL.WEIGHTS centermask://<name>`` makes the
checkpointer (any of detectron2's, through its ``PathManager``) load the published checkpoint,
downloaded once into the cache (:mod:`.download`).
"""

import difflib
from pathlib import Path
from typing import Any, List, Optional

import torch
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathHandler, PathManager

from centermask.checkpoint import CenterMaskCheckpointer
from centermask.config import get_cfg

from .catalog import PUBLISHED_MODELS
from .download import cached_download, mirrored_url

__all__ = [
    "CenterMaskHandler",
    "canonical_name",
    "get",
    "get_checkpoint_url",
    "get_config_file",
    "list_models",
]

PREFIX = "centermask://"
CONFIGS_ROOT = Path(__file__).resolve().parents[2] / "configs"


def list_models() -> List[str]:
    """Names of every published checkpoint."""
    return list(PUBLISHED_MODELS)


def canonical_name(name: str) -> str:
    """``<sub-folder>/<stem>`` of ``name`` (a stem alone, or a ``.yaml`` suffix, is accepted);
    an unknown name raises a KeyError that suggests the closest known ones."""
    name = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if name in PUBLISHED_MODELS:
        return name
    by_stem = [n for n in PUBLISHED_MODELS if n.split("/", 1)[1] == name]
    if len(by_stem) == 1:
        return by_stem[0]
    close = difflib.get_close_matches(name, list(PUBLISHED_MODELS), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise KeyError(
        f"No published checkpoint named {name!r}.{hint} Known names: "
        "centermask.model_zoo.list_models()."
    )


def get_config_file(name: str) -> str:
    """Path of the config file of the published model ``name``."""
    path = CONFIGS_ROOT / f"{canonical_name(name)}.yaml"
    if not CONFIGS_ROOT.is_dir():
        raise FileNotFoundError(
            f"{CONFIGS_ROOT} does not exist: the configs/ folder comes with the source checkout "
            "of centermask (install it with pip install -e)."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"The published model {canonical_name(name)!r} has no config file in this package: "
            f"{path} does not exist (the checkpoint URL is known, the architecture is not)."
        )
    return str(path)


def get_checkpoint_url(name: str) -> str:
    """URL the checkpoint of ``name`` is downloaded from (``$CENTERMASK_MIRROR`` applied)."""
    return mirrored_url(PUBLISHED_MODELS[canonical_name(name)].url)


def get(name: str, trained: bool = True, device: Optional[str] = None) -> torch.nn.Module:
    """The model of config ``name`` in eval mode, with the published weights when ``trained``
    (else with the config's own ``MODEL.WEIGHTS``, the ImageNet backbone), on ``device``
    (default: CUDA when available, else CPU)."""
    cfg = get_cfg()
    cfg.merge_from_file(get_config_file(name))
    if trained:
        cfg.MODEL.WEIGHTS = PREFIX + canonical_name(name)
    cfg.MODEL.DEVICE = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg)
    CenterMaskCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    return model


class CenterMaskHandler(PathHandler):
    """``centermask://<name>``: the cached local copy of the published checkpoint of ``name``."""

    def _get_supported_prefixes(self) -> List[str]:
        return [PREFIX]

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        self._check_kwargs(kwargs)
        return cached_download(PUBLISHED_MODELS[canonical_name(path)].url, force=force)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any):
        self._check_kwargs(kwargs)
        return open(self._get_local_path(path), mode, buffering)


PathManager.register_handler(CenterMaskHandler())
