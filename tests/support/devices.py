"""Test helpers that observe, on any device, what would wait for a CUDA device: device-waiting
tensor operations (:class:`SyncCounter`, the ``count_syncs`` fixture) and host-to-device copies
(:class:`DeviceCopies`)."""

import torch
from torch.overrides import TorchFunctionMode

# Read values on the host, or size their output by the values: on CUDA each waits for the device.
_HOST_READS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__bool__,
    torch.Tensor.__index__,
    torch.Tensor.cpu,
    torch.Tensor.numpy,
    torch.Tensor.nonzero,
    torch.nonzero,
    torch.argwhere,
    torch.Tensor.unique,
    torch.unique,
    torch.unique_consecutive,
    torch.masked_select,
    torch.Tensor.masked_select,
}


def _bool_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


def _to_cpu(args, kwargs) -> bool:
    return any(str(x) == "cpu" for x in (*args[1:], kwargs.get("device")))


class SyncCounter(TorchFunctionMode):
    """Counts (``len()``, names in ``calls``) the tensor operations run in its ``with`` block that
    wait for the device: reading values on the host (``item``, ``tolist``, ``int()``/
    ``float()``/``bool()``, ``cpu``, ``to("cpu")``, ``numpy``) and the ones whose output size
    depends on the values (``nonzero``, ``unique``, ``masked_select``, boolean-mask indexing). On
    CUDA each is a device-to-host synchronisation; counting them on the CPU shows where they
    happen. Operations inside a counted one are not counted again."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (
            func in _HOST_READS
            or (
                func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__)
                and _bool_index(args[1])
            )
            or (func is torch.Tensor.to and _to_cpu(args, kwargs))
        ):
            self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.calls)


class DeviceCopies:
    """Records the dtype in which ``Tensor.to`` moves each tensor to another device (``with
    DeviceCopies(monkeypatch) as copies``; ``copies.dtypes``): the result's dtype, since a
    conversion asked for in the same call is made on the host before a host-to-device copy."""

    def __init__(self, monkeypatch):
        self.dtypes = []
        self._monkeypatch = monkeypatch

    def __enter__(self):
        original = torch.Tensor.to

        def to(tensor, *args, **kwargs):
            moved = original(tensor, *args, **kwargs)
            if moved.device != tensor.device:
                self.dtypes.append(moved.dtype)
            return moved

        self._monkeypatch.setattr(torch.Tensor, "to", to)
        return self

    def __exit__(self, *exc):
        self._monkeypatch.undo()
