"""Inference benchmark of CenterMask models: per-stage latency, throughput and memory of several
execution modes of the same model, measured interleaved in one process.

Used by ``tools/analysis/benchmark.py``. Modes (comma separated, options after ":" joined by "+"):

* ``eager``: the detectron2 model as built (``model(inputs)``; autocast with ``--dtype``);
* ``optimized``: :func:`centermask.optimize_for_inference`, e.g. ``optimized:fuse=0``,
  ``optimized:compile=1`` or ``optimized:dtype=bf16`` (its options are its keyword arguments);
* ``onnx``: exported with :func:`~centermask.export.api.export_onnx` and run by the
  model's predictor (:func:`~centermask.export.api.build_onnx_predictor`: CenterMask,
  CondInst or CenterMask-PR; ``onnx:mask_heads=0`` keeps CenterMask's mask heads in PyTorch);
* ``onnx-int8``: the same graphs statically quantized to int8 by
  :func:`~centermask.export.int8.export_int8_onnx`, calibrated on ``calib_images`` (default 4)
  synthetic images of the benchmark's size, or on images of a registered data set
  (``onnx-int8:calib_dataset=synthetic_train+calib_images=32``); the other options are those of
  :class:`~centermask.export.int8.Int8Settings` (``method=percentile``,
  ``keep_float=cls_logits|bbox_pred``, ``reduce_range=0``);
* ``torchscript``: the traced dense part inside the same pipeline.

Each repetition runs every mode once, in an order that rotates between repetitions, so slow
phases of a shared machine hit all modes alike; ratios are taken between medians.
"""

import platform
import statistics
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from centermask.data.inputs import model_inputs, synthetic_image
from centermask.designs import design_of

from .memory import max_rss_mb, measure_peak_memory
from .stage_timer import STAGES, StageTimer

__all__ = [
    "ModeSpec",
    "parse_modes",
    "build_mode",
    "benchmark_inference",
    "environment_info",
    "format_inference_table",
]


@dataclass
class ModeSpec:
    """One way of running the model: ``kind`` plus keyword options."""

    name: str
    kind: str
    options: Dict[str, object] = field(default_factory=dict)


_KINDS = ("eager", "optimized", "onnx", "onnx-int8", "torchscript")


def _option_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "yes", "on", "false", "no", "off"):
        return lowered in ("true", "yes", "on")
    try:
        return int(text)
    except ValueError:
        return text


def parse_modes(text: str) -> List[ModeSpec]:
    """ "eager,optimized:fuse=0+channels_last=1,onnx" -> [ModeSpec, ...]."""
    modes = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        kind, _, options_text = item.partition(":")
        if kind not in _KINDS:
            raise ValueError(f"--modes: unknown mode {kind!r} in {item!r}; use one of {_KINDS}")
        options = {}
        for option in filter(None, options_text.split("+")):
            key, sep, value = option.partition("=")
            if not sep:
                raise ValueError(f"--modes: option {option!r} of {item!r} must be key=value")
            options[key] = _option_value(value)
        modes.append(ModeSpec(item, kind, options))
    if len({m.name for m in modes}) != len(modes):
        raise ValueError(f"--modes lists a mode twice: {text!r}")
    return modes


class _Autocast(nn.Module):
    """Runs a model under autocast; the model keeps its name-free place in the hook paths."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, inputs):
        with torch.autocast(self.model.device.type, dtype=self.dtype):
            return self.model(inputs)


def build_mode(
    spec: ModeSpec, model: nn.Module, *, dtype, work_dir: Path, cfg=None, image_hw=(480, 640)
) -> Tuple[nn.Module, str]:
    """The module to call with the inputs, and a note about the mode. ``cfg`` (the model's
    config) and ``image_hw`` (the benchmark's image size) are needed by ``onnx-int8`` only."""
    from centermask.acceleration import CenterMaskInference, optimize_for_inference
    from centermask.export.api import build_onnx_predictor, export_onnx
    from centermask.export.centermask_onnx import export_torchscript

    half = dtype not in (None, torch.float32)
    if spec.kind == "eager":
        return (_Autocast(model, dtype) if half else model), "detectron2 model as built"
    if spec.kind == "optimized":
        options = {"dtype": dtype, **spec.options}  # e.g. optimized:dtype=bf16 next to fp32 modes
        return optimize_for_inference(model, **options), "optimize_for_inference"
    folder = work_dir / spec.name.replace(":", "_").replace("+", "_").replace("=", "-")
    design = design_of(model)
    if spec.kind == "torchscript" and not design.torchscript:
        raise ValueError(
            f"mode 'torchscript' is not available for {design.name} "
            "(eager, optimized, onnx, onnx-int8)"
        )
    if spec.kind in ("onnx", "onnx-int8"):
        options = dict(spec.options)
        heads = options.pop("mask_heads", True)
        if not design.mask_heads_graph and not heads:
            raise ValueError(f"{design.name} exports have no mask-head graph to leave out")
        if spec.kind == "onnx":
            export_onnx(model, folder, mask_heads=heads, **options)
        else:
            _export_int8(model, folder, cfg, image_hw, heads, options)
        predictor_options = {"use_onnx_mask_heads": heads} if design.mask_heads_graph else {}
        predictor = build_onnx_predictor(model, folder, **predictor_options)
        precision = "float32" if spec.kind == "onnx" else "int8 QDQ"
        return predictor, f"onnxruntime ({precision}) " + ",".join(
            predictor.dense.session.get_providers()
        )
    path = export_torchscript(model, folder, **spec.options)
    return (
        CenterMaskInference(model, _HookableScript(torch.jit.load(str(path)))),
        "torch.jit.trace of the dense part",
    )


def _export_int8(model, folder: Path, cfg, image_hw, mask_heads: bool, options: Dict) -> None:
    from centermask.export.int8 import Int8Settings, calibration_batches, export_int8_onnx

    if cfg is None:
        raise ValueError("the onnx-int8 mode needs the model's config (build_mode(cfg=...))")
    count = options.pop("calib_images", 4)
    dataset = options.pop("calib_dataset", None)
    if "keep_float" in options:
        options["keep_float"] = tuple(str(options["keep_float"]).split("|"))
    settings = Int8Settings(**options)
    if dataset:
        batches = calibration_batches(cfg, dataset, count)
    else:  # other images than the timed ones
        batches = (
            model_inputs(cfg, [synthetic_image(*image_hw, seed=1000 + i)]) for i in range(count)
        )
    export_int8_onnx(model, folder, batches, settings, num_batches=count, mask_heads=mask_heads)


class _HookableScript(nn.Module):
    """Plain-module wrapper of a ScriptModule, which cannot take the timing hooks itself."""

    def __init__(self, script: torch.jit.ScriptModule):
        super().__init__()
        self.script = script

    def forward(self, images: torch.Tensor):
        return self.script(images)


def _timed_module(runner: nn.Module) -> nn.Module:
    return runner.model if isinstance(runner, _Autocast) else runner


def _summary(values: List[float]) -> Dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"median_ms": statistics.median(values) * 1e3, "p90_ms": p90 * 1e3}


def benchmark_inference(
    model: nn.Module,
    cfg,
    modes: Sequence[ModeSpec],
    *,
    batch_sizes: Sequence[int] = (1,),
    iterations: int = 10,
    warmup: int = 2,
    dtype: Optional[torch.dtype] = None,
    images: Optional[Sequence[np.ndarray]] = None,
    work_dir: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> Dict:
    """Time every mode at every batch size, interleaved; returns a JSON-ready dict."""
    device = model.pixel_mean.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    images = list(images) if images else [synthetic_image(seed=i) for i in range(max(batch_sizes))]
    results = {"modes": {}, "batch_sizes": list(batch_sizes)}
    with tempfile.TemporaryDirectory() if work_dir is None else nullcontext(work_dir) as folder:
        runners, notes = {}, {}
        for spec in modes:
            log(f"preparing mode {spec.name} ...")
            runners[spec.name], notes[spec.name] = build_mode(
                spec,
                model,
                dtype=dtype,
                work_dir=Path(folder),
                cfg=cfg,
                image_hw=images[0].shape[:2],
            )
        timers = {name: StageTimer(_timed_module(r), device) for name, r in runners.items()}
        for batch_size in batch_sizes:
            inputs = model_inputs(cfg, [images[i % len(images)] for i in range(batch_size)])
            sizes = sorted({tuple(x["image"].shape[-2:]) for x in inputs})
            log(
                f"batch {batch_size}: input {sizes} (after the test resize), {warmup} warm-up + "
                f"{iterations} timed runs per mode"
            )
            runs = {name: [] for name in runners}
            with torch.no_grad():
                for _ in range(warmup):
                    for runner in runners.values():
                        runner(inputs)
                sync()
                names = list(runners)
                for rep in range(iterations):
                    for name in names[rep % len(names) :] + names[: rep % len(names)]:
                        runs[name].append(timers[name].run(lambda: (runners[name](inputs), sync())))
                memory = {
                    name: measure_peak_memory(lambda: runner(inputs), device)
                    for name, runner in runners.items()
                }
            for name in runners:
                stages = [s for s in list(STAGES) + ["other"] if s in runs[name][0]]
                total = _summary([r["total"] for r in runs[name]])
                entry = results["modes"].setdefault(name, {"note": notes[name], "batches": {}})
                entry["batches"][str(batch_size)] = {
                    "total": total,
                    "stages": {s: _summary([r.get(s, 0.0) for r in runs[name]]) for s in stages},
                    "images_per_s": batch_size / (total["median_ms"] / 1e3),
                    "memory": memory[name],
                    "input_hw": [list(s) for s in sizes],
                }
        for timer in timers.values():
            timer.remove()
    baseline = modes[0].name
    for name, entry in results["modes"].items():
        for batch, data in entry["batches"].items():
            reference = results["modes"][baseline]["batches"][batch]["total"]["median_ms"]
            data["speedup_vs_" + baseline] = reference / data["total"]["median_ms"]
    results["process_max_rss_mb"] = max_rss_mb() if device.type == "cpu" else None
    return results


def environment_info(device: torch.device, dtype: Optional[torch.dtype]) -> Dict:
    """Versions, device and thread settings for the report."""
    import detectron2
    import torchvision

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "detectron2": detectron2.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "dtype": str(dtype or torch.float32).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = _cpu_name()
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_inference_table(results: Dict) -> str:
    """Plain-text table: one row per mode and batch size, stage medians in ms."""
    stages = [s for s in list(STAGES) + ["other"]]
    present = [
        s
        for s in stages
        if any(s in b["stages"] for m in results["modes"].values() for b in m["batches"].values())
    ]
    header = ["mode", "batch", "total ms", "p90 ms", "img/s", "speedup"] + present
    header += ["peak MB", "+MB"]
    rows = []
    for name, entry in results["modes"].items():
        for batch, data in entry["batches"].items():
            speedup = next(v for k, v in data.items() if k.startswith("speedup_vs_"))
            memory = data["memory"]
            peak = memory.get("peak_rss_mb") or memory.get("cuda_peak_allocated_mb")
            increase = memory.get("rss_increase_mb")
            rows.append(
                [name, batch, f"{data['total']['median_ms']:.1f}", f"{data['total']['p90_ms']:.1f}"]
                + [f"{data['images_per_s']:.2f}", f"{speedup:.2f}x"]
                + [
                    f"{data['stages'][s]['median_ms']:.1f}" if s in data["stages"] else "-"
                    for s in present
                ]
                + [f"{peak:.0f}" if peak is not None else "-"]
                + [f"{increase:.0f}" if increase is not None else "-"]
            )
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(header, widths))]
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
