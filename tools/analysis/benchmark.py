#!/usr/bin/env python
"""Benchmark inference (per stage, several execution modes) or training iterations
(``centermask benchmark``).

    python tools/analysis/benchmark.py --config-file configs/centermask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml \\
        --threads 2 --modes eager,optimized,onnx,onnx-int8 --iterations 10 --output lite.json
    python tools/analysis/benchmark.py --config-file CONFIG --train --train-batch 2 --iterations 5

``--config-file`` takes a path or a published model's name (``centermask://NAME``, whose weights
are timed unless ``--weights`` or ``--synthetic-weights`` is given). ``--help`` lists the
options; the code is :mod:`centermask.cli.benchmark`.
"""

import sys

from centermask.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
