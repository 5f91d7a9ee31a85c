#!/usr/bin/env python
"""CPU quickstart: generate the synthetic data set, train a Lite model from scratch, evaluate
(``centermask quickstart``).

    python tools/quickstart.py [--output-dir output/quickstart] [--data-dir datasets/synthetic]
                               [--budget-minutes 15] [--threads N] [--processes 2] [KEY VALUE ...]

The time budget counts from the start of the process. ``--help`` lists the options; the code is
:mod:`centermask.cli.quickstart`.
"""

import os
import sys

# Read by the OpenMP runtime when torch loads it, so it must be set before centermask (and with
# it torch) is imported: waiting threads sleep instead of spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from centermask.cli.quickstart import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
