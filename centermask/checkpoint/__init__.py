"""Loading and saving checkpoints of this package's models (:mod:`.checkpointer`), the one safe
reader of checkpoint files (:mod:`.loading`), and writing converted weights (:mod:`.converted`)."""

from .checkpointer import (
    BACKBONE_PREFIXES,
    IGNORED_CHECKPOINT_KEYS,
    AtomicCheckpointer,
    CenterMaskCheckpointer,
    NoLoadableCheckpointError,
)
from .converted import save_converted_checkpoint
from .loading import (
    CheckpointLoadError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_detectron2_checkpoint,
    load_state_dict_file,
    save_safetensors,
)

__all__ = [
    "AtomicCheckpointer",
    "BACKBONE_PREFIXES",
    "CenterMaskCheckpointer",
    "CheckpointLoadError",
    "IGNORED_CHECKPOINT_KEYS",
    "NoLoadableCheckpointError",
    "UnsafeCheckpointError",
    "load_checkpoint",
    "load_detectron2_checkpoint",
    "load_state_dict_file",
    "save_converted_checkpoint",
    "save_safetensors",
]
