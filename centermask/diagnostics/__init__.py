"""Checks of a whole installation on one machine: :mod:`.gpu_check` (``tools/gpu_check.py``)."""
