"""Moved to :mod:`centermask.acceleration.fold_batchnorm`; this old import path resolves to that module."""

import sys

from centermask.acceleration import fold_batchnorm

sys.modules[__name__] = fold_batchnorm
