"""Moved to :mod:`centermask.benchmark.inference`; this old import path resolves to that module."""

import sys

from centermask.benchmark import inference

sys.modules[__name__] = inference
