"""Moved to :mod:`centermask.benchmark.memory`; this old import path resolves to that module."""

import sys

from centermask.benchmark import memory

sys.modules[__name__] = memory
