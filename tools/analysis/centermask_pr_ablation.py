#!/usr/bin/env python
"""CenterMask-PR's mask branches on crowded and sparse synthetic scenes: the five arms (local,
global class-agnostic, global class-specific, both class-agnostic, both class-specific), trained
for the same iterations with two seeds each, compared on masks from the ground-truth boxes
(IoU of crowded / isolated instances, leakage) and on mask AP.

    python tools/analysis/centermask_pr_ablation.py --output output/centermask_pr_ablation
    python tools/analysis/centermask_pr_ablation.py --smoke --output /tmp/ablation_smoke

``--help`` lists the options; the code is :mod:`centermask.benchmark.centermask_pr_ablation`.
"""

import sys

from centermask.benchmark.centermask_pr_ablation import main

if __name__ == "__main__":
    sys.exit(main())
