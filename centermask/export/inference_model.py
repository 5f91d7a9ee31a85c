"""Moved to :mod:`centermask.acceleration.inference_model`; this old import path resolves to that module."""

import sys

from centermask.acceleration import inference_model

sys.modules[__name__] = inference_model
