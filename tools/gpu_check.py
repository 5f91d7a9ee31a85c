#!/usr/bin/env python
"""The GPU acceptance check: environment, CPU vs GPU parity, AMP training, DDP and latency.

    python tools/gpu_check.py                 # on the first CUDA device, under 8 minutes
    python tools/gpu_check.py --device cpu    # the reduced form (what CI runs)

Prints a table, writes gpu_check.json (--output) and exits 1 when a check failed. What each part
checks: centermask.diagnostics.gpu_check.
"""

import sys

from centermask.diagnostics.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
