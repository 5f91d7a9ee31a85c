#!/usr/bin/env python
"""Train or evaluate a model with detectron2's DefaultTrainer (``centermask train`` / ``eval``).

    python tools/train_net.py --config-file CONFIG [--num-gpus N] [--resume] [--eval-only]
        [--dataset NAME=ANNOTATIONS.json:IMAGE_DIR ...] [--debug] [KEY VAL...]

``--config-file`` takes a path or a published model's name (``centermask://NAME``: its config
and, unless ``MODEL.WEIGHTS`` is given, its weights). ``--help`` shows examples; the code is
:mod:`centermask.cli.train_net`.
"""

import sys

from centermask.cli.train_net import main

if __name__ == "__main__":
    sys.exit(main())
