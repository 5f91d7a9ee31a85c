"""Measure it: per-stage inference latency, training-iteration time, peak memory, and the
CenterMask-PR mask-branch ablation.

* :mod:`.inference`: execution modes of one model timed interleaved (``tools/analysis/benchmark.py``);
* :mod:`.training`: training-iteration time split into data, forward, backward, optimizer;
* :mod:`.stage_timer`: forward-hook timing of the pipeline stages;
* :mod:`.memory`: peak memory without psutil;
* :mod:`.precision`: TF32 on CUDA (on for benchmarks on GPUs that have it, off for parity);
* :mod:`.centermask_pr_ablation`: CenterMask-PR's five mask arms on crowded and sparse synthetic
  scenes (``tools/analysis/centermask_pr_ablation.py``), scored by :mod:`.gt_box_masks` (masks
  from the ground-truth boxes: IoU of crowded / isolated instances, leakage) and mask AP.
"""
