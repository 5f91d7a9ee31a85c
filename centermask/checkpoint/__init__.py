"""Loading and saving checkpoints of this package's models (:mod:`.checkpointer`)."""

from .checkpointer import (
    BACKBONE_PREFIXES,
    IGNORED_CHECKPOINT_KEYS,
    AtomicCheckpointer,
    CenterMaskCheckpointer,
)

__all__ = [
    "AtomicCheckpointer",
    "BACKBONE_PREFIXES",
    "CenterMaskCheckpointer",
    "IGNORED_CHECKPOINT_KEYS",
]
