"""Moved to :mod:`centermask.benchmark.training`; this old import path resolves to that module."""

import sys

from centermask.benchmark import training

sys.modules[__name__] = training
