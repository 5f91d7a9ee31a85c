"""What the exporters and onnxruntime predictors of every design share.

* file names of an export folder (:data:`DENSE_ONNX`, :data:`METADATA_JSON`, ...);
* :func:`sample_images` and :func:`export_image_graph`: tracing the dense part of a model, images
  in, named maps out, with a dynamic batch and image size (:func:`check_no_deformable_convs`
  first: ONNX has no deformable convolution);
* :func:`create_session` and :class:`OnnxModule`: an onnxruntime session behind ``nn.Module``;
* :func:`open_export`: what every predictor does first: read the folder's metadata, check that it
  is an export of the expected kind, open the dense graph and check its outputs.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.ops import DeformConv2d

from centermask.layers.deform_conv import DeformConv
from centermask.modeling.backbone import DLAUpBackbone, VoVNet

__all__ = [
    "DENSE_ONNX",
    "DENSE_TORCHSCRIPT",
    "MASK_HEADS_ONNX",
    "METADATA_JSON",
    "ExportFolder",
    "OnnxModule",
    "check_no_deformable_convs",
    "create_session",
    "export_image_graph",
    "open_export",
    "sample_images",
    "spatial_axes",
    "write_metadata",
]

DENSE_ONNX = "dense.onnx"
MASK_HEADS_ONNX = "mask_heads.onnx"
METADATA_JSON = "centermask_export.json"
DENSE_TORCHSCRIPT = "dense.ts"


def sample_images(model: nn.Module, height: int, width: int) -> torch.Tensor:
    """A deterministic (1, 3, height, width) tracing sample; the size must be a multiple of the
    backbone's ``size_divisibility``."""
    divisor = max(model.backbone.size_divisibility, 1)
    if height % divisor or width % divisor:
        raise ValueError(
            f"export sample size {height}x{width} must be a multiple of the backbone's "
            f"size_divisibility ({divisor})"
        )
    generator = torch.Generator().manual_seed(0)
    return torch.randn((1, 3, height, width), generator=generator) * 50.0


def spatial_axes(names: Sequence[str]) -> Dict[str, Dict[int, str]]:
    """Dynamic batch and spatial axes of (N, C, H, W) outputs, each with its own H and W."""
    return {name: {0: "batch", 2: f"{name}_h", 3: f"{name}_w"} for name in names}


# The setting that builds each backbone without deformable convs.
_PLAIN_CONV_SETTINGS = {
    DLAUpBackbone: "MODEL.DLA.DEFORMABLE_UP False",
    VoVNet: "MODEL.VOVNET.STAGE_WITH_DCN all False",
}


def check_no_deformable_convs(module: nn.Module) -> None:
    """Raise a ValueError naming the config key to change if ``module`` holds deformable convs:
    ``torchvision::deform_conv2d`` has no ONNX export, and tracing would fail only at its end."""
    deformable = [
        name for name, m in module.named_modules() if isinstance(m, (DeformConv, DeformConv2d))
    ]
    if not deformable:
        return
    owners = [
        (name, setting)
        for name, m in module.named_modules()
        for kind, setting in _PLAIN_CONV_SETTINGS.items()
        if isinstance(m, kind)
    ]
    settings = sorted(
        {s for d in deformable for name, s in owners if d.startswith(f"{name}.") or not name}
    )
    fix = f"build the model with {' and '.join(settings)}" if settings else "use plain convs"
    raise ValueError(
        f"ONNX export has no deformable convolution (torchvision::deform_conv2d), and this model "
        f"has {len(deformable)}, e.g. {deformable[0]!r}: {fix} to export it, or keep them and "
        "deploy with centermask.acceleration.optimize_for_inference (or, for CenterMask, "
        "TorchScript: tools/deploy/export_model.py --format torchscript)"
    )


def export_image_graph(
    module: nn.Module,
    images: torch.Tensor,
    path: Path,
    output_axes: Dict[str, Dict[int, str]],
    *,
    opset: int,
) -> None:
    """Export ``module``, (N, 3, H, W) ``images`` -> the outputs named (in order) by
    ``output_axes``, with a dynamic batch and image size and the given dynamic output axes."""
    check_no_deformable_convs(module)
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}, **output_axes}
    with torch.no_grad():
        torch.onnx.export(
            module,
            (images,),
            str(path),
            input_names=["images"],
            output_names=list(output_axes),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def write_metadata(output_dir: Path, metadata: Dict) -> Path:
    """Write the folder's ``centermask_export.json``; ``metadata["format"]`` names the design."""
    path = Path(output_dir) / METADATA_JSON
    path.write_text(json.dumps(metadata, indent=2))
    return path


CUDA_PROVIDER = "CUDAExecutionProvider"


def _installed_onnxruntime() -> str:
    """The installed onnxruntime distribution(s) with versions, e.g. "onnxruntime 1.17.0"."""
    from importlib import metadata

    found = []
    for name in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found) or "an onnxruntime of unknown distribution"


def create_session(path, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None):
    """An onnxruntime InferenceSession with all graph optimisations.

    Args:
        path: the .onnx file.
        providers: execution providers; default CUDA (when onnxruntime has it) then CPU. Asking
            for ``CUDAExecutionProvider`` when the installed onnxruntime has none (the CPU-only
            ``onnxruntime`` package, or CUDA libraries it cannot load) is a RuntimeError naming
            the installed package: install ``onnxruntime-gpu`` instead.
        threads: intra-op threads; default ``torch.get_num_threads()``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    available = ort.get_available_providers()
    if providers is None:
        providers = [p for p in (CUDA_PROVIDER, "CPUExecutionProvider") if p in available]
    providers = list(providers)
    wants_cuda = any((p[0] if isinstance(p, tuple) else p) == CUDA_PROVIDER for p in providers)
    no_cuda = (
        f"{CUDA_PROVIDER} was requested for {path}, but the installed {_installed_onnxruntime()} "
        "{}: uninstall it and install onnxruntime-gpu (matching the CUDA version of torch), or "
        "ask for providers=['CPUExecutionProvider']"
    )
    if wants_cuda and CUDA_PROVIDER not in available:
        raise RuntimeError(no_cuda.format(f"offers only {available}"))
    session = ort.InferenceSession(str(path), options, providers=providers)
    if wants_cuda and CUDA_PROVIDER not in session.get_providers():
        # onnxruntime-gpu falls back to the CPU with a log line when CUDA / cuDNN do not load.
        raise RuntimeError(no_cuda.format("could not load it (CUDA or cuDNN libraries missing?)"))
    return session


# onnxruntime element types -> torch dtypes, for binding torch tensors to a session.
_ORT_TYPES = {
    torch.float32: np.float32,
    torch.float16: np.float16,
    torch.int64: np.int64,
    torch.int32: np.int32,
    torch.uint8: np.uint8,
    torch.int8: np.int8,
    torch.bool: np.bool_,
}


def _device_index(device: torch.device) -> int:
    if device.type == "cuda" and device.index is None:
        return torch.cuda.current_device()
    return device.index or 0


def _ortvalue_to_torch(value) -> torch.Tensor:
    """An onnxruntime OrtValue as a torch tensor on the same device, without a host copy."""
    c_value = value._get_c_value() if hasattr(value, "_get_c_value") else value
    if hasattr(c_value, "__dlpack__"):
        return torch.from_dlpack(c_value)
    if value.device_name().lower() == "cpu":
        return torch.from_numpy(value.numpy())
    raise RuntimeError(
        f"the installed {_installed_onnxruntime()} cannot hand {value.device_name()} outputs to "
        "torch (no DLPack): install a newer onnxruntime-gpu"
    )


class OnnxModule(nn.Module):
    """An ONNX Runtime session behind an ``nn.Module`` interface: tensors in, tensors out.

    With ``io_binding`` (default: when the session runs on CUDA) the inputs are bound where they
    are (a CUDA tensor's memory is read in place) and the outputs stay on the session's device
    and come back as torch tensors through DLPack: no host round trip. Without it, inputs go
    through host numpy arrays and the outputs are copied to ``output_device`` (default: the
    first input's device). Forward hooks work as for any module (the benchmark times it as one
    stage).
    """

    def __init__(
        self,
        session,
        output_device: Optional[torch.device] = None,
        path=None,
        io_binding: Optional[bool] = None,
    ):
        """``path``: the graph's file, for tools that work on the graphs a predictor runs (int8
        calibration records each graph's inputs by it)."""
        super().__init__()
        self.session = session
        self.path = Path(path) if path is not None else None
        self.input_names = [x.name for x in session.get_inputs()]
        self.output_names = [x.name for x in session.get_outputs()]
        self.output_device = output_device
        if io_binding is None:
            io_binding = CUDA_PROVIDER in session.get_providers()
        self.io_binding = io_binding

    def forward(self, *inputs: torch.Tensor) -> tuple:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"expected inputs {self.input_names}, got {len(inputs)} tensors")
        device = torch.device(self.output_device or inputs[0].device)
        if self.io_binding:
            return self._run_bound(inputs, device)
        feed = {
            name: np.ascontiguousarray(x.detach().cpu().numpy())
            for name, x in zip(self.input_names, inputs)
        }
        return tuple(torch.from_numpy(y).to(device) for y in self.session.run(None, feed))

    def _run_bound(self, inputs: Sequence[torch.Tensor], device: torch.device) -> tuple:
        """One run with inputs bound in place and outputs allocated on ``device``."""
        binding = self.session.io_binding()
        inputs = [x.detach().contiguous() for x in inputs]  # kept alive until the run ends
        for name, x in zip(self.input_names, inputs):
            if x.dtype not in _ORT_TYPES:
                raise TypeError(f"input {name!r}: dtype {x.dtype} cannot be bound to onnxruntime")
            binding.bind_input(
                name,
                x.device.type,
                _device_index(x.device),
                _ORT_TYPES[x.dtype],
                tuple(x.shape),
                x.data_ptr(),
            )
        for name in self.output_names:
            binding.bind_output(name, device.type, _device_index(device))
        if any(x.is_cuda for x in inputs):
            # onnxruntime reads the inputs on its own stream: torch's writes must be done.
            torch.cuda.current_stream(inputs[0].device).synchronize()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        # Views of onnxruntime's buffers, which the DLPack capsules keep alive.
        return tuple(_ortvalue_to_torch(y) for y in binding.get_outputs())

    def __deepcopy__(self, memo):
        # Sessions cannot be copied; a copy shares it (it holds no mutable state of ours).
        return self


@dataclass
class ExportFolder:
    """An opened export: its metadata and the dense graph's session."""

    path: Path
    metadata: Dict
    dense: OnnxModule


def open_export(
    export_dir,
    *,
    expected_format: str,
    providers: Optional[Sequence[str]] = None,
    threads: Optional[int] = None,
    expected_outputs: Optional[List[str]] = None,
    check_metadata: Optional[Callable[[Path, Dict], None]] = None,
) -> ExportFolder:
    """Read ``export_dir``'s metadata, check it is a ``expected_format`` export and open its dense
    graph (``metadata["dense_graph"]``, default :data:`DENSE_ONNX`), whose outputs must be those
    the metadata lists (and ``expected_outputs``, when the model decides them).
    ``check_metadata(metadata_path, metadata)`` raises when the export does not fit the model in
    a way its design defines (called before the graph is opened).

    Every failure names the file and what to do.
    """
    export_dir = Path(export_dir)
    metadata_path = export_dir / METADATA_JSON
    if not metadata_path.exists():
        raise FileNotFoundError(
            f"{metadata_path} not found: export the model first (tools/deploy/export_model.py)"
        )
    metadata = json.loads(metadata_path.read_text())
    found = metadata.get("format")
    if found != expected_format:
        raise ValueError(
            f"{metadata_path} describes a {found!r} export, but this predictor reads "
            f"{expected_format!r} exports: export this model again"
        )
    if check_metadata is not None:
        check_metadata(metadata_path, metadata)
    dense_path = export_dir / metadata.get("dense_graph", DENSE_ONNX)
    dense = OnnxModule(create_session(dense_path, providers, threads), path=dense_path)
    if dense.output_names != metadata["dense_outputs"]:
        raise ValueError(
            f"{dense_path} outputs {dense.output_names}, but {metadata_path} lists "
            f"{metadata['dense_outputs']}"
        )
    if expected_outputs is not None and dense.output_names != list(expected_outputs):
        raise ValueError(
            f"{dense_path} has outputs {dense.output_names}, but this model needs "
            f"{list(expected_outputs)}: export this model's config again"
        )
    return ExportFolder(export_dir, metadata, dense)
