"""Per-stage latency of a CenterMask forward pass, from forward hooks on its submodules.

The hooks record timestamps ("marks") when known submodules start and finish; the stages are
differences between marks, so nothing in the model has to change. On the GPU the marks are CUDA
events (resolved after the pass); on the CPU they are ``time.perf_counter`` readings.

Works for the detectron2 models (``GeneralizedRCNN``, ``CondInst``), their inference pipelines
and the ONNX Runtime predictors: a stage whose modules are absent (e.g. the backbone inside an ONNX graph) is
simply not reported, and what the stages do not cover is reported as ``other``.
"""

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["STAGES", "StageTimer"]

# (mark name, module path, "start" or "end"); the first path present in the model is used.
_MARK_POINTS: Sequence[Tuple[str, Sequence[str], str]] = (
    ("bottom_up_start", ("backbone.bottom_up", "dense.backbone.bottom_up"), "start"),
    ("bottom_up_end", ("backbone.bottom_up", "dense.backbone.bottom_up"), "end"),
    ("fpn_end", ("backbone", "dense.backbone"), "end"),
    ("head_start", ("proposal_generator.fcos_head", "dense.fcos_head"), "start"),
    ("head_end", ("proposal_generator.fcos_head", "dense.fcos_head"), "end"),
    ("dense_start", ("dense",), "start"),
    ("dense_end", ("dense",), "end"),
    ("roi_start", ("roi_heads.mask_pooler", "roi_heads"), "start"),
    ("mask_heads_end", ("mask_heads",), "end"),
    ("maskiou_start", ("roi_heads.maskiou_head",), "start"),
    ("maskiou_end", ("roi_heads.maskiou_head",), "end"),
    ("roi_end", ("roi_heads",), "end"),
    # CondInst: mask branch, controller (per FCOS level), dynamic mask head.
    ("mask_branch_start", ("mask_branch", "dense.mask_branch"), "start"),
    ("mask_branch_end", ("mask_branch", "dense.mask_branch"), "end"),
    ("controller_start", ("controller", "dense.controller"), "start"),
    ("controller_end", ("controller", "dense.controller"), "end"),
    ("mask_head_start", ("mask_head",), "start"),
    ("mask_head_end", ("mask_head",), "end"),
    # CenterMask-PR: centre-heatmap or FCOS detector with its shape features.
    ("point_detector_start", ("detector",), "start"),
    ("point_detector_end", ("detector",), "end"),
)

# stage -> (start mark, end mark); alternatives are tried in order.
STAGES: Dict[str, Sequence[Tuple[str, str]]] = {
    "preprocess": (("start", "bottom_up_start"), ("start", "dense_start")),
    "backbone": (("bottom_up_start", "bottom_up_end"),),
    "fpn": (("bottom_up_end", "fpn_end"),),
    "fcos_head": (("head_start", "head_end"),),
    "dense": (),  # backbone + FPN + FCOS head when they run as one opaque module (ONNX, compiled)
    "mask_branch": (("mask_branch_start", "mask_branch_end"),),
    "controller": (("controller_start", "controller_end"),),
    "fcos_decode_nms": (
        ("head_end", "roi_start"),
        ("dense_end", "roi_start"),
        ("controller_end", "mask_head_start"),
        ("dense_end", "mask_head_start"),
    ),
    "dynamic_mask_head": (("mask_head_start", "mask_head_end"),),
    # CenterMask-PR: heads, peaks / FCOS decoding; then mask assembly and pasting.
    "point_detector": (("point_detector_start", "point_detector_end"),),
    "assemble_paste": (("point_detector_end", "end"),),
    "roi_pool_mask_head": (
        ("roi_start", "maskiou_start"),
        ("roi_start", "mask_heads_end"),
        ("roi_start", "roi_end"),
    ),
    "maskiou": (("maskiou_start", "maskiou_end"),),
    "postprocess_paste": (
        ("maskiou_end", "end"),
        ("mask_heads_end", "end"),
        ("roi_end", "end"),
        ("mask_head_end", "end"),
    ),
}


class StageTimer:
    """Hooks a model and returns per-stage seconds for each timed call.

    Usage::

        timer = StageTimer(model)
        stages = timer.run(lambda: model(inputs))   # {"total": s, "backbone": s, ...}
        timer.remove()
    """

    def __init__(self, model: nn.Module, device: Optional[torch.device] = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.cuda = self.device.type == "cuda"
        self._marks: List[Tuple[str, object]] = []
        self._handles = []
        modules = dict(model.named_modules())
        self.opaque_dense = "dense" in modules and "dense.backbone" not in modules
        for mark, paths, when in _MARK_POINTS:
            path = next((p for p in paths if p in modules), None)
            if path is None or (mark.startswith("dense") and not self.opaque_dense):
                continue
            module = modules[path]
            hook = self._hook(mark)
            if when == "start":
                self._handles.append(module.register_forward_pre_hook(hook))
            else:
                self._handles.append(module.register_forward_hook(hook))

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _hook(self, mark: str) -> Callable:
        def record(*_):
            # Repeated modules (the FCOS head per call) keep their first start and last end.
            self._marks.append((mark, self._now()))

        return record

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _resolve(self) -> Dict[str, float]:
        """mark -> seconds since "start" (first start mark, last end mark)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            first = self._marks[0][1]
            times = [(m, first.elapsed_time(e) / 1000.0) for m, e in self._marks]
        else:
            first = self._marks[0][1]
            times = [(m, t - first) for m, t in self._marks]
        resolved: Dict[str, float] = {}
        for mark, t in times:
            if mark.endswith("start") or mark == "start":
                resolved.setdefault(mark, t)
            else:
                resolved[mark] = t
        return resolved

    def run(self, call: Callable[[], object]) -> Dict[str, float]:
        """Time one ``call()``; returns {"total": s, <stage>: s, ..., "other": s}."""
        self._marks = [("start", self._now())]
        call()
        self._marks.append(("end", self._now()))
        marks = self._resolve()
        stages = {"total": marks["end"]}
        for stage, alternatives in STAGES.items():
            if stage == "dense":
                if self.opaque_dense and "dense_start" in marks and "dense_end" in marks:
                    stages[stage] = marks["dense_end"] - marks["dense_start"]
                continue
            for start, end in alternatives:
                if start in marks and end in marks:
                    stages[stage] = max(marks[end] - marks[start], 0.0)
                    break
        covered = sum(v for k, v in stages.items() if k != "total")
        stages["other"] = max(stages["total"] - covered, 0.0)
        return stages
