"""Loading and saving checkpoints of this package's models (:mod:`.checkpointer`), and writing
converted weights (:mod:`.converted`)."""

from .checkpointer import (
    BACKBONE_PREFIXES,
    IGNORED_CHECKPOINT_KEYS,
    AtomicCheckpointer,
    CenterMaskCheckpointer,
)
from .converted import save_converted_checkpoint

__all__ = [
    "AtomicCheckpointer",
    "BACKBONE_PREFIXES",
    "CenterMaskCheckpointer",
    "IGNORED_CHECKPOINT_KEYS",
    "save_converted_checkpoint",
]
