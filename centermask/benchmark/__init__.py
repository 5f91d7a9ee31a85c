"""Measure it: per-stage inference latency, training-iteration time and peak memory.

* :mod:`.inference`: execution modes of one model timed interleaved (``tools/analysis/benchmark.py``);
* :mod:`.training`: training-iteration time split into data, forward, backward, optimizer;
* :mod:`.stage_timer`: forward-hook timing of the pipeline stages;
* :mod:`.memory`: peak memory without psutil;
* :mod:`.precision`: TF32 on CUDA (on for benchmarks on GPUs that have it, off for parity).
"""
