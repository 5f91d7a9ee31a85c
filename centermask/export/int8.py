"""Static int8 quantization of exported ONNX graphs, calibrated on the images of a data set.

The float32 export (:func:`~centermask.export.api.export_onnx`) is quantized graph by graph
with ``onnxruntime.quantization.quantize_static``:

* QDQ format (QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into integer kernels
  such as QLinearConv when it loads the graph);
* weights int8, per output channel, symmetric, in a 7-bit range by default (see
  :class:`Int8Settings`); activations uint8 (the u8 x s8 products that onnxruntime's x86 kernels
  are fastest at), their ranges calibrated on real inputs with min-max, a percentile of the
  histogram or its entropy (KL divergence);
* named sensitive nodes (e.g. the final logits or box-regression convs) can stay float32.

Calibration inputs are whatever each graph receives while a float32 predictor runs on the
calibration images: every :class:`~centermask.export.common.OnnxModule` inside the
predictor records its inputs. So the mask heads are calibrated on the RoI features of real
detections, and any model exported as several ONNX graphs run by ``OnnxModule`` s (CondInst,
CenterMask-PR) quantizes with the same :func:`quantize_export`.

The int8 folder has the float32 folder's layout (same file names, same metadata, plus
``quantization.json``), so the float32 folder's predictor (``OnnxCenterMaskPredictor``,
``OnnxCondInstPredictor``, ``OnnxCenterMaskPRPredictor``; see
:func:`~centermask.export.api.build_onnx_predictor`) runs it unchanged.
"""

import copy
import fnmatch
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from torch import nn
from tqdm import tqdm

from centermask.data import CheckedDatasetMapper

from .api import build_onnx_predictor, export_onnx
from .common import OnnxModule

__all__ = [
    "CALIBRATION_METHODS",
    "QUANTIZATION_JSON",
    "Int8Settings",
    "calibration_batches",
    "record_graph_inputs",
    "quantize_graph",
    "quantize_export",
    "export_int8_onnx",
]

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
QUANTIZATION_JSON = "quantization.json"

Feed = Dict[str, np.ndarray]


@dataclass(frozen=True)
class Int8Settings:
    """How to quantize.

    Attributes:
        method: activation-range calibration, one of :data:`CALIBRATION_METHODS`.
        percentile: the percentile of ``|x|`` taken as the range with ``method="percentile"``.
        keep_float: node-name patterns left in float32; a pattern matches every node whose name
            contains it, ``*`` and ``?`` are wildcards (e.g. ``"cls_logits"``, ``"fcos_head/*"``).
            A pattern that matches no node of any graph is an error.
        reduce_range: 7-bit weights (default). x86 CPUs without VNNI (AVX2 only, e.g. AMD Zen
            2/3) multiply u8 x s8 pairs into saturating int16 sums (``vpmaddubsw``); with full
            8-bit weights the sums overflow: on a CenterMask-Lite dense part the mean relative
            output error was 0.19 with 8-bit and 0.043 with 7-bit weights. Set False only for
            CPUs with VNNI (AVX512-VNNI / AVX-VNNI), which accumulate without saturation.
    """

    method: str = "minmax"
    percentile: float = 99.999
    keep_float: Tuple[str, ...] = field(default_factory=tuple)
    reduce_range: bool = True

    def __post_init__(self):
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(
                f"unknown calibration method {self.method!r}; use one of {CALIBRATION_METHODS}"
            )
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        object.__setattr__(self, "keep_float", tuple(self.keep_float))


def calibration_batches(cfg, dataset_name: str, num_images: int) -> Iterator[List[Dict]]:
    """Model inputs of ``num_images`` images spread evenly over a registered data set.

    Each image is read and resized as the test loader does (``CheckedDatasetMapper`` in
    test mode: ``INPUT.FORMAT``, the ``MIN_SIZE_TEST`` / ``MAX_SIZE_TEST`` resize). Yields
    one-image batches, reading one image at a time.
    """
    if num_images < 1:
        raise ValueError(f"the number of calibration images must be >= 1, got {num_images}")
    if dataset_name not in DatasetCatalog.list():
        raise KeyError(
            f"calibration data set {dataset_name!r} is not registered; registered: "
            f"{', '.join(sorted(DatasetCatalog.list()))}"
        )
    records = DatasetCatalog.get(dataset_name)
    if len(records) < num_images:
        raise ValueError(
            f"calibration data set {dataset_name!r} has {len(records)} images, "
            f"{num_images} were asked for"
        )
    mapper = CheckedDatasetMapper(cfg, is_train=False)
    for index in np.linspace(0, len(records) - 1, num_images).round().astype(int):
        yield [mapper(copy.deepcopy(records[index]))]


def record_graph_inputs(
    predictor: nn.Module, batches: Iterable[List[Dict]], *, total: Optional[int] = None
) -> Dict[Path, List[Feed]]:
    """Run ``predictor`` on every batch of model inputs and record what each ONNX graph receives.

    Returns {graph file: [feed per call]}, a feed being {input name: array}; graphs are those of
    the :class:`OnnxModule` s inside ``predictor`` (each must know its ``path``).
    """
    graphs = [m for m in predictor.modules() if isinstance(m, OnnxModule)]
    if not graphs:
        raise ValueError(f"{type(predictor).__name__} runs no ONNX graph (no OnnxModule inside)")
    if any(graph.path is None for graph in graphs):
        raise ValueError("every OnnxModule to calibrate needs its path (OnnxModule(..., path=))")
    feeds: Dict[Path, List[Feed]] = {}

    def record(module: OnnxModule, inputs: Tuple[torch.Tensor, ...]) -> None:
        feed = {n: x.detach().cpu().numpy().copy() for n, x in zip(module.input_names, inputs)}
        feeds.setdefault(Path(module.path), []).append(feed)

    handles = [graph.register_forward_pre_hook(record) for graph in graphs]
    try:
        with torch.no_grad():
            for batch in tqdm(batches, total=total, desc="calibration inputs", unit="batch"):
                predictor(batch)
    finally:
        for handle in handles:
            handle.remove()
    missing = [str(g.path) for g in graphs if Path(g.path) not in feeds]
    if missing:
        raise ValueError(
            f"no calibration input reached {missing} (e.g. no detections on the calibration "
            "images, so the mask heads never ran): use more or other calibration images"
        )
    return feeds


class _FeedReader:
    """onnxruntime's CalibrationDataReader over recorded feeds, with a progress bar.

    ``set_range`` lets onnxruntime collect one feed at a time (``CalibStridedMinMax`` = 1), which
    bounds the memory its calibrators hold and lets the histogram calibrators take inputs of
    different sizes (they stack the tensors of one collection step).
    """

    def __init__(self, feeds: Sequence[Feed], description: str):
        self.feeds = list(feeds)
        self.pending = iter(())
        self.progress = tqdm(total=len(self.feeds), desc=description, unit="input")

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.pending = iter(self.feeds[start_index:end_index])

    def get_next(self) -> Optional[Feed]:
        feed = next(self.pending, None)
        if feed is not None:
            self.progress.update()
            if self.progress.n == len(self.feeds):
                self.progress.close()
        return feed


def _matching_nodes(graph_path: Path, patterns: Sequence[str]) -> Dict[str, List[str]]:
    import onnx

    names = [node.name for node in onnx.load(str(graph_path), load_external_data=False).graph.node]
    return {p: [n for n in names if fnmatch.fnmatchcase(n, f"*{p}*")] for p in patterns}


def quantize_graph(
    float_path, int8_path, feeds: Sequence[Feed], settings: Int8Settings = Int8Settings()
) -> List[str]:
    """Quantize one ONNX graph statically, calibrated on ``feeds``; returns the node names kept
    in float32 (those matching ``settings.keep_float``)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    float_path = Path(float_path)
    excluded = sorted(
        {n for nodes in _matching_nodes(float_path, settings.keep_float).values() for n in nodes}
    )
    extra_options = {"CalibPercentile": settings.percentile, "CalibStridedMinMax": 1}
    quantize_static(
        str(float_path),
        str(int8_path),
        _FeedReader(feeds, f"calibrating {float_path.name} ({settings.method})"),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=settings.reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        calibrate_method=methods[settings.method],
        extra_options=extra_options,
    )
    return excluded


def quantize_export(
    float_dir,
    output_dir,
    predictor: nn.Module,
    batches: Iterable[List[Dict]],
    settings: Int8Settings = Int8Settings(),
    *,
    num_batches: Optional[int] = None,
) -> Dict[str, Path]:
    """Quantize every ONNX graph of a float32 export folder into ``output_dir``.

    Args:
        float_dir: the float32 export (its other files, e.g. the metadata, are copied as they are).
        output_dir: created if needed; must differ from ``float_dir``.
        predictor: a float32 predictor running the graphs of ``float_dir`` (the calibration
            inputs of each graph are recorded while it runs, see :func:`record_graph_inputs`).
        batches: calibration batches of model inputs (lists of {"image", "height", "width"}).
        settings: see :class:`Int8Settings`.
        num_batches: length of ``batches`` for the progress bar, when it is a generator.

    Returns:
        {graph file name: int8 path} and "quantization": the ``quantization.json`` path.
    """
    float_dir, output_dir = Path(float_dir), Path(output_dir)
    if float_dir.resolve() == output_dir.resolve():
        raise ValueError(f"int8 output folder {output_dir} must differ from the float32 export")
    graph_files = sorted(float_dir.glob("*.onnx"))
    for pattern, nodes in _keep_float_matches(graph_files, settings.keep_float).items():
        if not nodes:
            raise ValueError(
                f"keep-float pattern {pattern!r} matches no node of "
                f"{', '.join(p.name for p in graph_files)}"
            )
    feeds = record_graph_inputs(predictor, batches, total=num_batches)
    unused = [p.name for p in graph_files if p.resolve() not in {f.resolve() for f in feeds}]
    if unused:
        raise ValueError(
            f"{float_dir}: graphs {unused} did not run in {type(predictor).__name__}, so they "
            "cannot be calibrated; export without them or run them in the predictor"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    for path in float_dir.iterdir():
        if path.is_file() and path.suffix != ".onnx":
            shutil.copy2(path, output_dir / path.name)
    paths, kept = {}, {}
    for graph_path, graph_feeds in feeds.items():
        paths[graph_path.name] = output_dir / graph_path.name
        kept[graph_path.name] = quantize_graph(
            graph_path, paths[graph_path.name], graph_feeds, settings
        )
    report = {
        "format": "onnx-qdq-int8",
        "weights": "int8, per channel, symmetric"
        + (", 7-bit range" if settings.reduce_range else ""),
        "activations": "uint8, per tensor",
        "settings": asdict(settings),
        "calibration_calls": {name.name: len(f) for name, f in feeds.items()},
        "float32_nodes": kept,
    }
    paths["quantization"] = output_dir / QUANTIZATION_JSON
    paths["quantization"].write_text(json.dumps(report, indent=2))
    return paths


def _keep_float_matches(graph_files: Sequence[Path], patterns: Sequence[str]):
    matches = {p: [] for p in patterns}
    for graph_path in graph_files:
        for pattern, nodes in _matching_nodes(graph_path, patterns).items():
            matches[pattern] += nodes
    return matches


def export_int8_onnx(
    model: nn.Module,
    output_dir,
    batches: Iterable[List[Dict]],
    settings: Int8Settings = Int8Settings(),
    *,
    num_batches: Optional[int] = None,
    **export_options,
) -> Dict[str, Path]:
    """Export a CenterMask, CondInst or CenterMask-PR model to int8 ONNX graphs in one call::

        export_int8_onnx(model, "export/int8", calibration_batches(cfg, "synthetic_train", 64))

    Args:
        model: the model (untouched); exported by :func:`export_onnx`, which dispatches on its
            type, and calibrated in the matching :func:`build_onnx_predictor`.
        output_dir: the int8 export (same layout as :func:`export_onnx`'s).
        batches: calibration batches of model inputs, e.g. :func:`calibration_batches`.
        settings: see :class:`Int8Settings`.
        num_batches: the number of ``batches``, for the progress bar.
        export_options: passed to :func:`export_onnx` (``height``, ``width``, ``opset``,
            ``mask_heads``).
    """
    with tempfile.TemporaryDirectory(prefix="centermask_float32_") as float_dir:
        export_onnx(model, float_dir, **export_options)
        predictor = build_onnx_predictor(model, float_dir)
        return quantize_export(
            float_dir, output_dir, predictor, batches, settings, num_batches=num_batches
        )
