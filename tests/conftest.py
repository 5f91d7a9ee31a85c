import os
from pathlib import Path

import pytest
import torch

from tests.support.devices import SyncCounter

# The parity references were produced in fp32 with 2 threads; keep TF32 off wherever we run.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytest.mark.usefixtures("one_thread")``): on a busy
    2-core machine a second thread mostly spins, and results do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def _synthetic_datasets_written(tmp_path_factory) -> Path:
    from centermask.data.synthetic import generate_synthetic
    from centermask.data.synthetic_scene import SceneConfig

    root = tmp_path_factory.mktemp("datasets")
    scene = SceneConfig(min_short_side=64, max_short_side=96, min_object_size=10)
    generate_synthetic(root / "synthetic", 12, 6, seed=0, scene=scene, progress=False)
    return root


@pytest.fixture(scope="module")
def synthetic_datasets(_synthetic_datasets_written) -> Path:
    """A small built-in synthetic data set (12 train / 6 val images of 64-96 px, seed 0), written
    once per session and registered for the module as ``synthetic_{train,val}[_rle]``. Returns
    the folder to use as ``DETECTRON2_DATASETS`` (it holds ``synthetic/``)."""
    from centermask.data import register_synthetic

    register_synthetic(_synthetic_datasets_written / "synthetic")
    return _synthetic_datasets_written


def _devices():
    """The devices the ``device`` fixture runs on: cpu, and cuda where a GPU is present."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_generate_tests(metafunc):
    # The cuda case exists only where a GPU does: on a CPU-only machine it is neither run nor
    # counted as skipped, and `pytest -m cuda` selects the CUDA cases where there are some.
    if "device" in metafunc.fixturenames:
        params = [
            pytest.param(name, marks=[pytest.mark.cuda] if name == "cuda" else [], id=name)
            for name in _devices()
        ]
        metafunc.parametrize("device", params)


@pytest.fixture
def count_syncs():
    """``with count_syncs() as syncs: ...`` then ``len(syncs)``: the device-waiting tensor
    operations run inside the block (:class:`tests.support.devices.SyncCounter`)."""
    return SyncCounter
