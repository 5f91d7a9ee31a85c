"""The onnxruntime session behind every predictor: providers and I/O binding."""

import pytest
import torch
from torch import nn

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from centermask.export.common import OnnxModule, create_session  # noqa: E402


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, images):
        features = self.conv(images)
        return features, features.amax(dim=(2, 3))


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx_session") / "two_outputs.onnx"
    torch.manual_seed(0)
    torch.onnx.export(
        TwoOutputs().eval(),
        (torch.randn(1, 3, 8, 8),),
        str(path),
        input_names=["images"],
        output_names=["features", "peaks"],
        dynamic_axes={"images": {0: "batch", 2: "h", 3: "w"}, "features": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path


class WithoutPlainRun:
    """A session whose numpy ``run`` is off limits: only the I/O-binding path can use it."""

    def __init__(self, session):
        self._session = session

    def __getattr__(self, name):
        if name == "run":
            raise AssertionError("the numpy path ran")
        return getattr(self._session, name)


def test_io_binding_run_equals_the_numpy_run(graph):
    session = create_session(graph, ["CPUExecutionProvider"], threads=1)
    bound = OnnxModule(WithoutPlainRun(session), io_binding=True)
    plain = OnnxModule(session)
    assert not plain.io_binding  # the CPU default
    images = torch.randn(2, 3, 16, 24)[:, :, :, 4:20]  # a non-contiguous view
    for ours, theirs in zip(bound(images), plain(images)):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.float32
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_asking_for_cuda_without_the_gpu_package_names_it(graph):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(RuntimeError) as error:
        create_session(graph, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    message = str(error.value)
    assert "onnxruntime-gpu" in message and f"onnxruntime {ort.__version__}" in message
    assert str(graph) in message
