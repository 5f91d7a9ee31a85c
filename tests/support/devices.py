"""Test helpers that observe what would wait for a CUDA device, on any device: device-waiting
tensor operations (:class:`SyncCounter`, the ``count_syncs`` fixture) and host-to-device copies
(:class:`DeviceCopies`)."""

import torch


class SyncCounter:
    """Counts the tensor operations that wait for the device: reading values on the host
    (``item``, ``tolist``, ``int()``/``float()``/``bool()``, ``cpu``, ``numpy``) and the ones whose
    output size depends on the values (``nonzero``, ``unique``, boolean-mask indexing). On CUDA each
    is a device-to-host synchronisation; counting them on the CPU shows where they happen."""

    _METHODS = (
        "item",
        "tolist",
        "__int__",
        "__float__",
        "__bool__",
        "__index__",
        "cpu",
        "numpy",
        "nonzero",
    )

    def __init__(self, monkeypatch):
        self.calls = []
        self._monkeypatch = monkeypatch

    def _wrap(self, owner, name, counts):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            if counts(*args, **kwargs):
                self.calls.append(name)
            return original(*args, **kwargs)

        self._monkeypatch.setattr(owner, name, wrapper)

    @staticmethod
    def _bool_index(index) -> bool:
        parts = index if isinstance(index, tuple) else (index,)
        return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)

    def __enter__(self):
        for name in self._METHODS:
            self._wrap(torch.Tensor, name, lambda *a, **k: True)
        self._wrap(torch, "nonzero", lambda *a, **k: True)
        self._wrap(torch, "unique", lambda *a, **k: True)
        self._wrap(torch.Tensor, "__getitem__", lambda t, i: self._bool_index(i))
        self._wrap(torch.Tensor, "__setitem__", lambda t, i, v: self._bool_index(i))
        self._wrap(
            torch.Tensor,
            "to",
            lambda t, *a, **k: any(str(x) == "cpu" for x in (*a, k.get("device"))),
        )
        return self

    def __exit__(self, *exc):
        self._monkeypatch.undo()

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
