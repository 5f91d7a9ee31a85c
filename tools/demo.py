#!/usr/bin/env python
"""Run a model on images, a video or a webcam and draw the predictions (``centermask demo``).

    python tools/demo.py --config-file CONFIG --input a.jpg dir/ "imgs/*.png" --output out/ \
        [--confidence-threshold 0.4] [--score box|mask] [--color-by-mask-score] \
        --opts MODEL.WEIGHTS model_final.pth
    python tools/demo.py --config-file centermask://centermask_lite_V_39_eSE_FPN_ms_4x \
        --input photo.jpg --output out/

``--config-file`` takes a path or a published model's name (``centermask://NAME``: its config
and, unless ``--opts MODEL.WEIGHTS`` is given, its weights). ``--help`` lists the options; the
code is :mod:`centermask.cli.demo`.
"""

import sys

from centermask.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
