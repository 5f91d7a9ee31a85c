"""Atomic checkpoints: an interrupted save leaves the previous checkpoint and pointer intact."""

import os

import pytest
import torch
from torch import nn

from centermask.checkpoint import AtomicCheckpointer
from centermask.utils.file_io import atomic_write


def _model(value: float) -> nn.Module:
    model = nn.Linear(3, 2)
    nn.init.constant_(model.weight, value)
    return model


def test_save_writes_checkpoint_and_pointer(tmp_path):
    checkpointer = AtomicCheckpointer(_model(1.0), str(tmp_path))
    checkpointer.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    model = _model(0.0)
    loaded = AtomicCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert loaded["iteration"] == 9
    assert torch.all(model.weight == 1.0)  # the saved weights, not the new model's
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_save_killed_midway_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    AtomicCheckpointer(_model(1.0), str(tmp_path)).save("model_0000004", iteration=4)
    good = (tmp_path / "model_0000004.pth").read_bytes()

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b"partial checkpoint bytes")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dies_midway)
    checkpointer = AtomicCheckpointer(_model(2.0), str(tmp_path))
    for name in ("model_0000004", "model_0000009"):  # overwrite, and a new file
        with pytest.raises(KeyboardInterrupt):
            checkpointer.save(name, iteration=9)
    monkeypatch.undo()

    assert (tmp_path / "model_0000004.pth").read_bytes() == good
    assert not (tmp_path / "model_0000009.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    model = _model(0.0)
    extra = AtomicCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 4 and torch.all(model.weight == 1.0)


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "last_checkpoint"
    atomic_write(str(path), lambda f: f.write("model_a.pth"), mode="w")

    def fails(f):
        f.write("model_b")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(str(path), fails, mode="w")
    assert path.read_text() == "model_a.pth"
    assert os.listdir(tmp_path) == ["last_checkpoint"]
