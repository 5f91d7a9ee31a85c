"""A full disk or a read-only folder while writing a checkpoint, its pointer or the metrics: an
error naming the file and errno; the previous checkpoint and pointer intact; no partial file."""

import errno
import os

import pytest
import torch
from detectron2.utils.events import EventStorage, JSONWriter
from torch import nn

import centermask.utils.file_io as file_io
from centermask.checkpoint import AtomicCheckpointer
from centermask.engine.hooks import NamedWriteErrors


def _model(value: float) -> nn.Module:
    model = nn.Linear(3, 2)
    nn.init.constant_(model.weight, value)
    return model


def _fail_write_of(monkeypatch, target: str, where: str, code: int) -> None:
    """Make the atomic write of the file named ``target`` fail at ``where`` with ``code``."""
    error = OSError(code, os.strerror(code))
    real_mkstemp, real_replace, real_write = (
        file_io.tempfile.mkstemp,
        file_io.os.replace,
        file_io._RecordingFile.write,
    )

    target_fds = set()

    def mkstemp(prefix="", suffix="", dir=None):
        if where == "create" and target in prefix:
            raise error
        fd, path = real_mkstemp(prefix=prefix, suffix=suffix, dir=dir)
        if target in prefix:
            target_fds.add(fd)
        return fd, path

    def write(self, data):
        if where == "write" and self._file.fileno() in target_fds:  # the disk fills up midway
            self._file.write(data[: len(data) // 2])
            self.error = error
            raise error
        return real_write(self, data)

    def replace(source, destination):
        if where == "rename" and os.path.basename(destination) == target:
            raise error
        return real_replace(source, destination)

    monkeypatch.setattr(file_io.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(file_io._RecordingFile, "write", write)
    monkeypatch.setattr(file_io.os, "replace", replace)


@pytest.mark.parametrize("where", ["create", "write", "rename"])
@pytest.mark.parametrize("target", ["model_0000009.pth", "last_checkpoint"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_failed_write_names_the_file_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, where, target, code
):
    AtomicCheckpointer(_model(1.0), str(tmp_path)).save("model_0000004", iteration=4)
    good = (tmp_path / "model_0000004.pth").read_bytes()
    _fail_write_of(monkeypatch, target, where, code)
    with pytest.raises(OSError) as info:
        AtomicCheckpointer(_model(2.0), str(tmp_path)).save("model_0000009", iteration=9)
    monkeypatch.undo()

    assert info.value.errno == code
    assert f"Cannot write {tmp_path / target}: {os.strerror(code)}" in str(info.value)
    assert str(info.value).count("Cannot write") == 1
    assert (tmp_path / "model_0000004.pth").read_bytes() == good
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    if target == "model_0000009.pth":
        assert not (tmp_path / "model_0000009.pth").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    model = _model(0.0)
    extra = AtomicCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 4 and torch.all(model.weight == 1.0)


def test_a_failed_metrics_write_names_the_file_and_errno(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    writer = NamedWriteErrors(JSONWriter(str(path)), str(tmp_path))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with EventStorage(0) as storage:
        storage.put_scalar("total_loss", 1.0)
        monkeypatch.setattr(writer.writer._file_handle, "write", full)
        with pytest.raises(OSError, match=f"Cannot write {path}: No space left on device") as info:
            writer.write()
    assert info.value.errno == errno.ENOSPC
