#!/usr/bin/env python
"""Export a model for deployment: ONNX (onnxruntime) or a TorchScript trace (``centermask export``).

    python tools/deploy/export_model.py --config-file configs/centermask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml \\
        --weights model_final.pth --format onnx --output export/lite
    python tools/deploy/export_model.py --config-file CONFIG --synthetic-weights --format onnx --output out --check
    python tools/deploy/export_model.py --config-file CONFIG --weights model_final.pth --format onnx --int8 \\
        --calib-dataset synthetic_train --calib-images 64 --calib-method percentile \\
        --keep-float cls_logits --output export/int8 --check

``--config-file`` takes a path or a published model's name (``centermask://NAME``, whose weights
are exported unless ``--weights`` or ``--synthetic-weights`` is given). ``--help`` lists the
options; the code is :mod:`centermask.cli.export_model`.
"""

import sys

from centermask.cli.export_model import main

if __name__ == "__main__":
    sys.exit(main())
