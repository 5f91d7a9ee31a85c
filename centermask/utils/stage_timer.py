"""Moved to :mod:`centermask.benchmark.stage_timer`; this old import path resolves to that module."""

import sys

from centermask.benchmark import stage_timer

sys.modules[__name__] = stage_timer
