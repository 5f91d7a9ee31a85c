"""--resume when the newest checkpoint is damaged: the newest one that loads is used."""

import logging

import pytest
import torch
from torch import nn

from centermask.checkpoint import (
    AtomicCheckpointer,
    CenterMaskCheckpointer,
    NoLoadableCheckpointError,
)


def _model(value: float) -> nn.Module:
    model = nn.Linear(3, 2)
    nn.init.constant_(model.weight, value)
    return model


def _save(folder, iteration: int) -> None:
    AtomicCheckpointer(_model(float(iteration)), str(folder)).save(
        f"model_{iteration:07d}", iteration=iteration
    )


DAMAGES = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:200]),
    "zero bytes": lambda path: path.write_bytes(b""),
    "wrong content": lambda path: path.write_text("<html>503 Service Unavailable</html>"),
    "no weights": lambda path: torch.save({"iteration": 5}, path),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_resume_skips_a_damaged_newest_checkpoint(tmp_path, caplog, damage):
    for iteration in (1, 3, 5):
        _save(tmp_path, iteration)
    DAMAGES[damage](tmp_path / "model_0000005.pth")
    model = _model(0.0)
    with caplog.at_level(logging.WARNING):
        extra = CenterMaskCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 3 and torch.all(model.weight == 3.0)
    assert "Skipping checkpoint" in caplog.text and "model_0000005.pth" in caplog.text


def test_resume_without_pointer_takes_the_newest_checkpoint(tmp_path):
    for iteration in (1, 3):
        _save(tmp_path, iteration)
    (tmp_path / "last_checkpoint").unlink()
    model = _model(0.0)
    extra = CenterMaskCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 3 and torch.all(model.weight == 3.0)


def test_resume_when_nothing_loads_names_every_file(tmp_path):
    for iteration in (1, 3):
        _save(tmp_path, iteration)
    (tmp_path / "model_0000003.pth").write_bytes(b"")
    (tmp_path / "model_0000001.pth").write_bytes(b"\x00" * 64)
    checkpointer = CenterMaskCheckpointer(_model(0.0), str(tmp_path))
    with pytest.raises(NoLoadableCheckpointError) as info:
        checkpointer.resume_or_load("", resume=True)
    message = str(info.value)
    assert "model_0000003.pth (the file is empty" in message
    assert "model_0000001.pth (" in message


def test_resume_in_an_empty_folder_loads_the_given_weights(tmp_path):
    source = tmp_path / "weights" / "w.pth"
    source.parent.mkdir()
    torch.save({"model": _model(7.0).state_dict()}, source)
    model = _model(0.0)
    CenterMaskCheckpointer(model, str(tmp_path / "out")).resume_or_load(str(source), resume=True)
    assert torch.all(model.weight == 7.0)
