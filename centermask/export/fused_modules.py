"""Moved to :mod:`centermask.acceleration.fused_modules`; this old import path resolves to that module."""

import sys

from centermask.acceleration import fused_modules

sys.modules[__name__] = fused_modules
