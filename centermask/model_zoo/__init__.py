"""Published CenterMask, Panoptic-CenterMask and CondInst checkpoints by config name.

``get_config_file(name)``, ``get_checkpoint_url(name)`` and ``get(name, trained=True)`` as in
``detectron2.model_zoo``; importing this package (``import centermask`` does) lets every
checkpointer load ``MODEL.WEIGHTS centermask://<name>``. Downloads are cached once, with a
recorded sha256 (``$CENTERMASK_CACHE``, ``$CENTERMASK_MIRROR``: see :mod:`.download`).
"""

from .catalog import PUBLISHED_MODELS, PublishedModel
from .download import ChecksumError, DownloadError, cache_dir, cached_download
from .model_zoo import (
    CenterMaskHandler,
    canonical_name,
    config_file_weights,
    configs_root,
    get,
    get_checkpoint_url,
    get_config_file,
    list_models,
    published_weights,
    resolve_config_file,
    zoo_name,
)

__all__ = [
    "PUBLISHED_MODELS",
    "CenterMaskHandler",
    "ChecksumError",
    "DownloadError",
    "PublishedModel",
    "cache_dir",
    "cached_download",
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
