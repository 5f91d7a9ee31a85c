"""FCOS proposal generator; importing it registers ``FCOS`` in PROPOSAL_GENERATOR_REGISTRY."""

from .fcos import FCOS
from .head import FCOSHead, Scale

__all__ = ["FCOS", "FCOSHead", "Scale"]
