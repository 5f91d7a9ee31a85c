"""SIGTERM during training: a checkpoint after the current iteration, a distinct exit status, and
--resume continues to the same end; a second signal exits at once."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from detectron2.data import build_detection_train_loader
from detectron2.data.samplers import TrainingSampler

from centermask.checkpoint.loading import load_checkpoint
from centermask.engine.preemption import PREEMPTED_EXIT_CODE, skip_consumed_indices
from tests.support.helpers import QUICK_CONFIGS, ROOT

CONFIG = QUICK_CONFIGS / "centermask_lite_V_19_slim_dw_synthetic_instant_test.yaml"
MAX_ITER = 40


def _train_net(datasets_root, output_dir, log: Path, *args) -> subprocess.Popen:
    """tools/train_net.py in a new process, its output into ``log`` (a pipe could fill up)."""
    env = {**os.environ, "DETECTRON2_DATASETS": str(datasets_root), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    cmd = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file", str(CONFIG), *args,
           "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.CHECKPOINT_PERIOD", "100",
           "OUTPUT_DIR", str(output_dir)]  # fmt: skip
    with open(log, "w") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)


def _wait_for_training(output_dir: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until the run has written its first metrics (training is under way)."""
    end = time.monotonic() + timeout
    metrics = output_dir / "metrics.json"
    while not (metrics.is_file() and metrics.stat().st_size > 0):
        assert proc.poll() is None, "training ended before the signal"
        assert time.monotonic() < end, "training did not start"
        time.sleep(0.05)


def _iteration(path: Path) -> int:
    return load_checkpoint(path)["iteration"]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_checkpoints_exits_75_and_resume_reaches_the_same_end(
    synthetic_datasets, tmp_path, processes
):
    extra = ["--num-gpus", str(processes)] if processes > 1 else []
    # metrics.json appears at the 20th iteration (detectron2's writer period).
    log = tmp_path.parent / f"{tmp_path.name}_first.log"
    proc = _train_net(synthetic_datasets, tmp_path, log, *extra)
    _wait_for_training(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    output = log.read_text()
    assert proc.returncode == PREEMPTED_EXIT_CODE, output[-3000:]
    pointer = (tmp_path / "last_checkpoint").read_text()
    stopped_at = _iteration(tmp_path / pointer)
    assert pointer == f"model_{stopped_at:07d}.pth" and stopped_at < MAX_ITER - 1
    assert f"Training stopped by SIGTERM after iteration {stopped_at}" in output
    assert str(tmp_path / pointer) in output
    assert not (tmp_path / "model_final.pth").exists()
    assert not (tmp_path / "inference").exists(), "evaluated an unfinished run"
    assert not list(tmp_path.glob(".*.tmp"))

    log = tmp_path.parent / f"{tmp_path.name}_resumed.log"
    resumed = _train_net(synthetic_datasets, tmp_path, log, "--resume", *extra)
    resumed.wait(timeout=600)
    output = log.read_text()
    assert resumed.returncode == 0, output[-3000:]
    assert f"Loading from {tmp_path / pointer}" in output.replace("[Checkpointer] ", "")
    final = load_checkpoint(tmp_path / "model_final.pth")  # weights-only loadable
    assert final["iteration"] == MAX_ITER - 1 and final["trainer"]["iteration"] == MAX_ITER - 1
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())


SECOND_SIGNAL = textwrap.dedent("""
    import os, signal, sys, types
    from centermask.engine.preemption import PreemptionHook
    hook = PreemptionHook(checkpointer=None)
    hook.trainer = types.SimpleNamespace(iter=0, max_iter=10)
    hook.before_train()
    os.kill(os.getpid(), signal.SIGTERM)  # the first: recorded, training would go on
    print("still running", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # the second: exit at once
    print("not reached", flush=True)
    """)


def test_a_second_signal_exits_at_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SECOND_SIGNAL], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 128 + signal.SIGTERM
    assert "still running" in proc.stdout and "not reached" not in proc.stdout
    assert "SIGTERM received: stopping after this iteration" in proc.stderr


def _first_batches(count: int, skip: int = 0):
    dataset = [{"index": i} for i in range(10)]
    loader = build_detection_train_loader(
        dataset=dataset, mapper=lambda d: d["index"], sampler=TrainingSampler(10, seed=3),
        total_batch_size=2, aspect_ratio_grouping=False, num_workers=0,
    )  # fmt: skip
    if skip:
        assert skip_consumed_indices(loader, skip * 2)
    batches = iter(loader)
    return [next(batches) for _ in range(count)]


def test_resumed_data_continues_the_index_stream_of_the_uninterrupted_run():
    uninterrupted = _first_batches(8)
    assert _first_batches(3, skip=5) == uninterrupted[5:8]
