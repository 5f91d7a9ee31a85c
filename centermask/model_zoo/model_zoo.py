"""Published models by config name, in the style of ``detectron2.model_zoo``.

A name is ``<configs sub-folder>/<config file stem>``, e.g.
``centermask/centermask_lite_V_39_eSE_FPN_ms_4x`` or ``condinst/MS_R_50_3x`` (the stem alone, and
a trailing ``.yaml``, are accepted too). ``MODEL.WEIGHTS centermask://<name>`` makes the
checkpointer (any of detectron2's, through its ``PathManager``) load the published checkpoint,
downloaded once into the cache (:mod:`.download`).

Every command's ``--config-file`` goes through :func:`resolve_config_file`: besides a path it
takes a model-zoo name (``centermask://<name>``, or ``centermask/<name>`` / ``condinst/<name>``
when no such file exists), which gives the config file and, unless the command line sets
``MODEL.WEIGHTS``, the published weights.

The config files come with the package: a wheel carries a copy of the source checkout's
``configs/`` as ``centermask/model_zoo/configs`` (setup.py's ``build_py``); an editable install
reads the checkout's own folder.
"""

import difflib
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

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
    "config_file_weights",
    "configs_root",
    "get",
    "get_checkpoint_url",
    "get_config_file",
    "list_models",
    "published_weights",
    "resolve_config_file",
    "zoo_name",
]

PREFIX = "centermask://"
# Zoo names may drop the scheme when they start with one of these configs sub-folders.
BARE_NAME_PREFIXES = ("centermask/", "condinst/")
# The copy inside an installed wheel first, then the source checkout's folder.
CONFIGS_ROOTS = (
    Path(__file__).resolve().parent / "configs",
    Path(__file__).resolve().parents[2] / "configs",
)


def configs_root() -> Path:
    """The folder of the shipped config files (see the module docstring)."""
    for root in CONFIGS_ROOTS:
        if root.is_dir():
            return root
    raise FileNotFoundError(
        f"No configs folder: neither {CONFIGS_ROOTS[0]} (installed package) nor "
        f"{CONFIGS_ROOTS[1]} (source checkout) exists. Reinstall centermask from its source "
        "checkout (pip install .) or pass --config-file a path."
    )


def list_models() -> List[str]:
    """Names of every published checkpoint."""
    return list(PUBLISHED_MODELS)


def _strip(name: str) -> str:
    name = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    return name[: -len(".yaml")] if name.endswith(".yaml") else name


def canonical_name(name: str) -> str:
    """``<sub-folder>/<stem>`` of ``name`` (a stem alone, or a ``.yaml`` suffix, is accepted);
    an unknown name raises a KeyError that suggests the closest known ones."""
    name = _strip(name)
    if name in PUBLISHED_MODELS:
        return name
    by_stem = [n for n in PUBLISHED_MODELS if n.split("/", 1)[1] == name]
    if len(by_stem) == 1:
        return by_stem[0]
    close = difflib.get_close_matches(name, list(PUBLISHED_MODELS), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise KeyError(
        f"No published checkpoint named {name!r}.{hint} Known names: `centermask zoo list` "
        "or centermask.model_zoo.list_models()."
    )


def get_config_file(name: str) -> str:
    """Path of the config file of the published model ``name``; any shipped config is found by
    its ``<sub-folder>/<stem>`` too, with or without published weights (e.g.
    ``quickstart/centermask_lite_V_19_slim_dw_eSE_synthetic``)."""
    root = configs_root()
    shipped = root / f"{_strip(name)}.yaml"
    if "/" in _strip(name) and shipped.is_file():
        return str(shipped)
    path = root / f"{canonical_name(name)}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"The published model {canonical_name(name)!r} has no config file in this package: "
            f"{path} does not exist (the checkpoint URL is known, the architecture is not)."
        )
    return str(path)


def published_weights(name: str) -> Optional[str]:
    """``centermask://<canonical name>`` when ``name`` has published weights, else None."""
    try:
        return PREFIX + canonical_name(name)
    except KeyError:
        return None


def zoo_name(config_file: str) -> Optional[str]:
    """The model-zoo name a ``--config-file`` value stands for, or None when it is a path:
    ``centermask://<name>`` always, ``centermask/<name>`` and ``condinst/<name>`` when no such
    file exists."""
    if config_file.startswith(PREFIX):
        return config_file[len(PREFIX) :]
    if config_file.startswith(BARE_NAME_PREFIXES) and not os.path.exists(config_file):
        return config_file
    return None


def config_file_weights(config_file: str) -> Optional[str]:
    """The published weights a ``--config-file`` value stands for: ``centermask://<name>`` for
    a model-zoo name with published weights; None for a path or a shipped config without."""
    name = zoo_name(config_file) if config_file else None
    return published_weights(name) if name else None


def resolve_config_file(config_file: str, opts: Sequence[str] = ()) -> Tuple[str, List[str]]:
    """The config file and the ``KEY VALUE`` overrides a command runs with.

    A path is checked and returned with ``opts`` unchanged. A model-zoo name (:func:`zoo_name`)
    gives its shipped config file and, when it has published weights and ``opts`` do not set
    ``MODEL.WEIGHTS``, ``opts`` with ``MODEL.WEIGHTS centermask://<name>`` put first.
    """
    opts = list(opts)
    name = zoo_name(config_file) if config_file else None
    if name is None:
        if config_file and "://" not in config_file and not os.path.isfile(config_file):
            raise FileNotFoundError(
                f"--config-file {config_file!r}: no such file (a published model's name works "
                "too, e.g. centermask://centermask_lite_V_39_eSE_FPN_ms_4x: see `centermask zoo "
                "list`)"
            )
        return config_file, opts
    path = get_config_file(name)
    weights = config_file_weights(config_file)
    if weights and "MODEL.WEIGHTS" not in opts[0::2]:
        opts = ["MODEL.WEIGHTS", weights] + opts
    return path, opts


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
