"""Peak memory of a piece of work without psutil: process RSS on the CPU, allocator peak on CUDA."""

import resource
import sys
import threading
import time
from typing import Callable, Dict, Optional

import torch

__all__ = ["current_rss_mb", "max_rss_mb", "measure_peak_memory"]

_PAGE_MB = resource.getpagesize() / 2**20


def current_rss_mb() -> Optional[float]:
    """Resident set size of this process now (Linux /proc), or None where unavailable."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_MB
    except (OSError, ValueError, IndexError):
        return None


def max_rss_mb() -> float:
    """Peak RSS of this process since it started (``getrusage``; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class _RssSampler(threading.Thread):
    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = current_rss_mb() or 0.0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.peak = max(self.peak, current_rss_mb() or 0.0)
            time.sleep(self.interval)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return max(self.peak, current_rss_mb() or 0.0)


def measure_peak_memory(
    call: Callable[[], object], device: torch.device, interval: float = 0.002
) -> Dict[str, Optional[float]]:
    """Run ``call()`` once and report its peak memory in MB.

    CPU: ``peak_rss_mb`` (sampled every ``interval`` s from /proc) and ``rss_increase_mb`` over the
    RSS before the call (None off Linux). CUDA: ``cuda_peak_allocated_mb`` and
    ``cuda_peak_reserved_mb`` of the caching allocator during the call.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        torch.cuda.synchronize(device)
        return {
            "cuda_peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20,
            "cuda_peak_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20,
        }
    before = current_rss_mb()
    if before is None:
        call()
        return {"peak_rss_mb": max_rss_mb(), "rss_increase_mb": None}
    sampler = _RssSampler(interval)
    sampler.start()
    try:
        call()
    finally:
        peak = sampler.stop()
    return {"peak_rss_mb": peak, "rss_increase_mb": max(peak - before, 0.0)}
