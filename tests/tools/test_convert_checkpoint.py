"""tools/convert/convert_checkpoint.py: any loadable checkpoint to .safetensors or .pth, through
the safe loader (a crafted input runs nothing)."""

import pickle

import pytest
import torch
from torch import nn

from centermask.checkpoint import CenterMaskCheckpointer, UnsafeCheckpointError, load_checkpoint
from tests.support.helpers import load_tool


def _tool():
    return load_tool("convert/convert_checkpoint")


@pytest.mark.parametrize("output", ["weights.safetensors", "weights.pth"])
def test_a_published_pkl_converts_and_loads(tmp_path, output):
    source_model, target = nn.Linear(3, 2), nn.Linear(3, 2)
    weights = {k: v.numpy() for k, v in source_model.state_dict().items()}
    source = tmp_path / "model_final.pkl"
    with open(source, "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo",
                     "matching_heuristics": True}, f, protocol=2)  # fmt: skip
    assert _tool().main([str(source), str(tmp_path / output)]) == 0
    converted = load_checkpoint(tmp_path / output)
    assert converted["__author__"] == "Detectron2 Model Zoo (converted by centermask)"
    assert converted["matching_heuristics"] is True
    CenterMaskCheckpointer(target).load(str(tmp_path / output))
    assert torch.equal(target.weight, source_model.weight)


def test_a_crafted_input_runs_nothing(tmp_path):
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    source = tmp_path / "evil.pkl"
    source.write_bytes(pickle.dumps({"model": {"w": Payload()}}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="evil.pkl"):
        _tool().main([str(source), str(tmp_path / "out.safetensors")])
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_an_unknown_output_suffix_is_refused(tmp_path):
    source = tmp_path / "w.pth"
    torch.save({"model": {"w": torch.ones(2)}}, source)
    with pytest.raises(ValueError, match=r"out\.bin: the output must end with"):
        _tool().convert(str(source), str(tmp_path / "out.bin"))
