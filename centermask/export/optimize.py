"""Moved to :mod:`centermask.acceleration.optimize`; this old import path resolves to that module."""

import sys

from centermask.acceleration import optimize

sys.modules[__name__] = optimize
