"""The safe loader: crafted checkpoints run nothing and name the file; real layouts still load."""

import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from centermask.checkpoint import CenterMaskCheckpointer
from centermask.checkpoint.loading import (
    CheckpointLoadError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_detectron2_checkpoint,
    save_safetensors,
)


class _CreatesMarker:
    """Unpickling it runs ``exec`` on code that creates ``marker``: the file appears if it runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _payload(marker):
    return {"model": {"weight": _CreatesMarker(marker)}, "__author__": "x"}


def _write_pickle(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_crafted_pkl_runs_nothing_and_names_the_file_and_global(tmp_path, protocol):
    marker, path = tmp_path / "marker", tmp_path / "download.pkl"
    _write_pickle(path, _payload(marker), protocol)
    with pytest.raises(UnsafeCheckpointError, match=r"download\.pkl.*builtins\.exec") as info:
        load_checkpoint(path)
    assert info.value.refused == "builtins.exec"
    assert not marker.exists()


def test_crafted_pth_runs_nothing_and_names_the_file_and_global(tmp_path):
    marker, path = tmp_path / "marker", tmp_path / "download.pth"
    torch.save(_payload(marker), path)
    with pytest.raises(UnsafeCheckpointError, match=r"download\.pth.*builtins\.exec"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_plain_pickle_under_another_suffix_runs_nothing(tmp_path, suffix):
    marker, path = tmp_path / "marker", tmp_path / f"download{suffix}"
    _write_pickle(path, _payload(marker), protocol=4)
    with pytest.raises(CheckpointLoadError, match=f"download\\{suffix}"):
        load_checkpoint(path)
    assert not marker.exists()


def test_crafted_pkl_through_the_checkpointer_runs_nothing(tmp_path):
    marker, path = tmp_path / "marker", tmp_path / "weights.pkl"
    _write_pickle(path, _payload(marker))
    with pytest.raises(UnsafeCheckpointError, match="weights.pkl"):
        CenterMaskCheckpointer(nn.Linear(2, 2)).load(str(path))
    assert not marker.exists()


def _published_layout(model: nn.Module) -> dict:
    """A detectron2 model zoo .pkl: numpy arrays under "model", with its two markers."""
    weights = OrderedDict((k, np.asarray(v.numpy() + 1)) for k, v in model.state_dict().items())
    return {"model": weights, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_published_detectron2_pkl_layout_loads(tmp_path, protocol):
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    path = tmp_path / "model_final_abc.pkl"
    _write_pickle(path, _published_layout(model), protocol)
    expected = {k: torch.as_tensor(v) for k, v in _published_layout(model)["model"].items()}
    CenterMaskCheckpointer(model).load(str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key].to(value.dtype)), key


def test_caffe2_blob_pkl_drops_momentum_and_uses_matching_heuristics(tmp_path):
    path = tmp_path / "R-50.pkl"
    blobs = {"conv1_w": np.ones((2, 2), np.float32), "conv1_w_momentum": np.zeros(1)}
    _write_pickle(path, {"blobs": blobs, "meta": np.float32(1.0)})
    loaded = load_detectron2_checkpoint(path)
    assert list(loaded["model"]) == ["conv1_w"]
    assert loaded["__author__"] == "Caffe2" and loaded["matching_heuristics"] is True


def test_safetensors_round_trip_through_the_checkpointer(tmp_path):
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    path = tmp_path / "weights.safetensors"
    save_safetensors(source.state_dict(), path, metadata={"__author__": "test"})
    loaded = load_checkpoint(path)
    assert loaded["__author__"] == "test" and set(loaded["model"]) == {"weight", "bias"}
    CenterMaskCheckpointer(target).load(str(path))
    assert torch.equal(target.weight, source.weight) and torch.equal(target.bias, source.bias)


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty"), (b"not a checkpoint", "not a")],
)
@pytest.mark.parametrize("suffix", [".pth", ".pkl", ".safetensors"])
def test_damaged_files_name_the_file_and_the_reason(tmp_path, suffix, content, reason):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(content)
    with pytest.raises(CheckpointLoadError, match=f"{path}.*{reason}"):
        load_checkpoint(path)


def test_truncated_pth_names_the_file(tmp_path):
    path = tmp_path / "model_0000009.pth"
    torch.save({"model": {"w": torch.ones(100)}}, path)
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(CheckpointLoadError, match="model_0000009.pth.*damaged"):
        load_checkpoint(path)


def test_missing_file_names_the_file_and_errno(tmp_path):
    with pytest.raises(CheckpointLoadError, match=r"absent\.pth.*errno 2"):
        load_checkpoint(tmp_path / "absent.pth")
