"""The one place that reads checkpoint files: nothing in a checkpoint can run code.

Python's pickle format can name any importable function and have it called while the file is
read, so a crafted checkpoint would run code on the machine that loads it. Every file is read
here, by format (the file's suffix):

* ``.pth`` / ``.pt`` / ``.pyth`` and anything else: ``torch.load(..., weights_only=True)``, torch's
  restricted unpickler (tensors, numbers, strings, lists, tuples, dicts, ``OrderedDict`` and a few
  torch types). Checkpoints written by this package's training hold only those.
* ``.pkl`` (detectron2 / Detectron model zoo files): :class:`RestrictedUnpickler`, which admits
  numpy arrays, numpy scalars and dtypes (and the functions that rebuild them), ``OrderedDict``
  and the built-in containers, strings and numbers, and nothing else.
* ``.safetensors``: the ``safetensors`` package (a header and raw tensor bytes, no code at all).

A file that names anything else fails with :class:`UnsafeCheckpointError`, naming the file and the
refused global; a damaged or unreadable file fails with :class:`CheckpointLoadError` naming the
file and the reason.
"""

import importlib
import os
import pickle
import re
from collections import OrderedDict
from typing import IO, Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

__all__ = [
    "CheckpointLoadError",
    "RestrictedUnpickler",
    "UnsafeCheckpointError",
    "load_checkpoint",
    "load_detectron2_checkpoint",
    "load_pickle",
    "load_safetensors",
    "load_state_dict_file",
    "load_torch",
    "save_safetensors",
]

PathOrFile = Union[str, "os.PathLike[str]"]


class CheckpointLoadError(RuntimeError):
    """A checkpoint file that cannot be read (damaged, truncated, empty or not a checkpoint)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"Cannot load checkpoint {path}: {reason}")
        self.path = path
        self.reason = reason


class UnsafeCheckpointError(CheckpointLoadError):
    """A checkpoint that names a Python global outside what weights need; nothing was run."""

    def __init__(self, path: str, refused: str):
        super().__init__(
            path,
            f"it refers to the Python global {refused!r}, which a weights file does not need "
            "and which could run code, so it was not loaded. If you trust the file's origin, "
            "load it in a separate Python session and save its tensors as .safetensors or .pth "
            "(torch.save of a dict of tensors).",
        )
        self.refused = refused


def _numpy_attribute(module: str, name: str) -> Any:
    """``module.name`` for the numpy modules a pickle may name: numpy 1 wrote ``numpy.core.*``,
    numpy 2 writes ``numpy._core.*``; either is looked up in the numpy that is installed."""
    if module.startswith("numpy.core."):
        module = "numpy._core." + module[len("numpy.core.") :]
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:  # numpy 1: no numpy._core
        legacy = "numpy.core." + module[len("numpy._core.") :]
        return getattr(importlib.import_module(legacy), name)


# (module, name) a weights pickle may name. The numpy functions only rebuild arrays, scalars and
# dtypes from their bytes; _codecs.encode turns a str into bytes (pickle protocol 2 writes bytes
# that way).
_NUMPY_GLOBALS = {
    (prefix + suffix, name)
    for prefix in ("numpy.core.", "numpy._core.")
    for suffix, name in (
        ("multiarray", "_reconstruct"),
        ("multiarray", "scalar"),
        ("numeric", "_frombuffer"),
    )
}
_PLAIN_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): __import__("_codecs").encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals of weights files (numpy arrays and
    their reconstruction, ``OrderedDict``); any other global raises :class:`UnsafeCheckpointError`
    before it is imported, so nothing it names is ever called.

    Args:
        file: the open binary file.
        path: the name used in errors.
    """

    def __init__(self, file: IO[bytes], path: str, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[(module, name)]
        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_attribute(module, name)
        module = "builtins" if module == "__builtin__" else module  # Python 2 name
        raise UnsafeCheckpointError(self.path, f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(self.path, f"persistent id {pid!r}")


def _read_error(path: str, error: BaseException) -> CheckpointLoadError:
    if isinstance(error, OSError) and error.errno is not None:
        return CheckpointLoadError(path, f"{error.strerror} (errno {error.errno})")
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return CheckpointLoadError(
        path, f"damaged or not a checkpoint ({type(error).__name__}: {reason})"
    )


def _check_not_empty(path: str) -> None:
    if os.path.getsize(path) == 0:
        raise CheckpointLoadError(path, "the file is empty (0 bytes)")


def load_pickle(path: PathOrFile) -> Any:
    """The object of a weights ``.pkl`` file (detectron2 model zoo layout: numpy arrays), read by
    :class:`RestrictedUnpickler` (latin-1 for the Python 2 pickles of the Detectron model zoo)."""
    path = os.fspath(path)
    try:
        _check_not_empty(path)
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, path, encoding="latin1").load()
    except CheckpointLoadError:
        raise
    except Exception as e:  # truncated streams, bad opcodes, numpy reconstruction errors, ...
        raise _read_error(path, e) from e


# torch names a refused global "GLOBAL module.name" (or "Unsupported class module.name").
_TORCH_REFUSED = re.compile(r"(?:GLOBAL|Unsupported class)\s+([\w.]+)")
# Its other refusals (e.g. "Unsupported operand 149": a pickle instruction it does not accept).
_TORCH_UNSUPPORTED = re.compile(r"(Unsupported [^\n]*)")


def load_torch(path: PathOrFile, map_location: Any = "cpu") -> Any:
    """The object of a ``torch.save`` file, read with ``weights_only=True``."""
    path = os.fspath(path)
    try:
        _check_not_empty(path)
        return torch.load(path, map_location=map_location, weights_only=True)
    except CheckpointLoadError:
        raise
    except pickle.UnpicklingError as e:
        refused = _TORCH_REFUSED.search(str(e))
        if refused:
            name = refused.group(1)  # torch writes builtins without their module
            raise UnsafeCheckpointError(path, name if "." in name else f"builtins.{name}") from e
        unsupported = _TORCH_UNSUPPORTED.search(str(e))
        if unsupported:
            raise CheckpointLoadError(
                path,
                f"torch's weights-only loader refused it ({unsupported.group(1).strip()}): it is "
                "not a torch.save file of tensors; nothing in it was run",
            ) from e
        raise _read_error(path, e) from e
    except Exception as e:  # truncated zip archives, wrong magic numbers, ...
        raise _read_error(path, e) from e


def load_safetensors(path: PathOrFile, device: str = "cpu") -> Dict[str, Any]:
    """``{"model": {name: tensor}, ...}`` of a ``.safetensors`` file; the file's string metadata
    (``__author__``, ``matching_heuristics`` as saved by :func:`save_safetensors`) is added."""
    from safetensors import safe_open

    path = os.fspath(path)
    try:
        _check_not_empty(path)
        with safe_open(path, framework="pt", device=device) as f:
            tensors = OrderedDict((key, f.get_tensor(key)) for key in f.keys())
            metadata = f.metadata() or {}
    except CheckpointLoadError:
        raise
    except Exception as e:  # OSError, SafetensorError (a damaged header), ...
        raise _read_error(path, e) from e
    checkpoint: Dict[str, Any] = {"model": tensors}
    if "__author__" in metadata:
        checkpoint["__author__"] = metadata["__author__"]
    if "matching_heuristics" in metadata:
        checkpoint["matching_heuristics"] = metadata["matching_heuristics"] == "True"
    return checkpoint


def save_safetensors(
    weights: Mapping[str, Any], path: PathOrFile, metadata: Optional[Mapping[str, str]] = None
) -> None:
    """Write ``weights`` (name -> tensor or numpy array) to a ``.safetensors`` file, atomically.

    Tensors are made contiguous and given their own storage (safetensors refuses shared ones).
    ``metadata`` (strings) is stored in the header; :func:`load_safetensors` reads
    ``__author__`` and ``matching_heuristics`` back.
    """
    from safetensors.torch import save as save_bytes

    from centermask.utils.file_io import atomic_write

    tensors = {}
    for key, value in weights.items():
        tensor = torch.as_tensor(value) if isinstance(value, np.ndarray) else value
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{key!r} is a {type(value).__name__}, not a tensor: cannot be saved")
        tensors[key] = tensor.detach().cpu().contiguous().clone()
    data = save_bytes(tensors, metadata={k: str(v) for k, v in (metadata or {}).items()})
    atomic_write(os.fspath(path), lambda f: f.write(data))


_LOADERS: Dict[str, Callable[[str], Any]] = {
    ".pkl": load_pickle,
    ".safetensors": load_safetensors,
}


def load_checkpoint(path: PathOrFile) -> Any:
    """The content of the checkpoint file ``path`` (a local file), read by the loader of its
    format: ``.pkl`` restricted unpickling, ``.safetensors`` (returned as ``{"model": ...}``),
    anything else ``torch.load(weights_only=True)``. Errors name the file (and a refused global).
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    return _LOADERS.get(suffix, load_torch)(path)


def load_state_dict_file(path: PathOrFile) -> Mapping[str, Any]:
    """The weights of a published weight file (``path``, read by :func:`load_checkpoint`): its
    ``state_dict`` or ``model`` entry when it has one, else its top level."""
    loaded = load_checkpoint(path)
    return loaded.get("state_dict", loaded.get("model", loaded))


def _from_detectron_pickle(data: Any, path: str) -> Dict[str, Any]:
    """detectron2's reading of a ``.pkl``: the detectron2 model zoo layout (``model`` and
    ``__author__``) as it is, anything else as a Caffe2 / Detectron blob dict (``blobs`` for
    detection models, the top level for ImageNet ones; ``*_momentum`` entries dropped)."""
    if not isinstance(data, dict):
        raise CheckpointLoadError(
            path, f"a .pkl checkpoint holds a dict, not a {type(data).__name__}"
        )
    if "model" in data and "__author__" in data:
        return data
    blobs = data.get("blobs", data)
    blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
    return {"model": blobs, "__author__": "Caffe2", "matching_heuristics": True}


def _from_pycls(data: Any, path: str) -> Dict[str, Any]:
    """A pycls ``.pyth`` checkpoint (``model_state``) in detectron2's layout."""
    if not isinstance(data, dict) or "model_state" not in data:
        raise CheckpointLoadError(path, "pycls checkpoints (.pyth) must contain 'model_state'")
    state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
    return {"model": state, "__author__": "pycls", "matching_heuristics": True}


def load_detectron2_checkpoint(path: PathOrFile) -> Dict[str, Any]:
    """:func:`load_checkpoint` in detectron2's checkpoint layout, ``{"model": weights, ...}``, read
    as detectron2's ``DetectionCheckpointer`` reads each format: ``.pkl`` in the detectron2 model
    zoo layout as it is, other ``.pkl`` as Caffe2 / Detectron blobs; ``.pyth`` from pycls; a
    plain state dict wrapped under ``model``."""
    path = os.fspath(path)
    data = load_checkpoint(path)
    if path.endswith(".pkl"):
        return _from_detectron_pickle(data, path)
    if path.endswith(".pyth"):
        return _from_pycls(data, path)
    if not isinstance(data, dict):
        raise CheckpointLoadError(path, f"a checkpoint holds a dict, not a {type(data).__name__}")
    return data if "model" in data else {"model": data}
