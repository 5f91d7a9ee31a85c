"""One training run per output folder: the lock file, its owner, stale locks, who takes it."""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from centermask.engine import defaults
from centermask.engine.output_lock import (
    LOCK_FILE,
    OutputFolderLocked,
    OutputLock,
    lock_output_dir,
    release_output_locks,
    unlock_output_dir,
)
from tests.support.helpers import QUICK_CONFIGS, ROOT

HOLD = (
    "import sys, time; from centermask.engine.output_lock import lock_output_dir; "
    "lock_output_dir(sys.argv[1]); print('locked', flush=True); "
    "time.sleep(float(sys.argv[2]))"
)


def _holder(folder, seconds: float = 60.0) -> subprocess.Popen:
    """Another process that takes the lock of ``folder`` and then sleeps ``seconds``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_fails_at_once_naming_the_folder_and_the_owner(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(OutputFolderLocked) as info:
            OutputLock(str(tmp_path)).acquire()
        message = str(info.value)
        assert str(tmp_path) in message and f"process {holder.pid}" in message
        assert socket.gethostname() in message
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_of_a_killed_run_is_taken_over(tmp_path):
    holder = _holder(tmp_path)
    holder.send_signal(signal.SIGKILL)  # no chance to remove its lock
    holder.wait()
    assert (tmp_path / LOCK_FILE).exists()
    lock = OutputLock(str(tmp_path)).acquire()
    owner = json.loads((tmp_path / LOCK_FILE).read_text())
    assert owner["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_lock_is_released_when_the_run_exits(tmp_path):
    holder = _holder(tmp_path, seconds=0.0)
    assert holder.wait(timeout=60) == 0
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    record = {"host": "some-other-node", "pid": 1, "started": 0}
    (tmp_path / LOCK_FILE).write_text(json.dumps(record))
    with pytest.raises(OutputFolderLocked, match=r"some-other-node.*delete .*\.centermask_train"):
        OutputLock(str(tmp_path)).acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text()) == record


def test_an_unreadable_lock_is_not_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text("")
    with pytest.raises(OutputFolderLocked, match="unknown owner"):
        OutputLock(str(tmp_path)).acquire()


def test_the_same_process_may_take_its_own_lock_again(tmp_path):
    try:
        first = lock_output_dir(str(tmp_path))
        assert lock_output_dir(str(tmp_path)) is first
    finally:
        release_output_locks()
    assert not (tmp_path / LOCK_FILE).exists()


def _args(output_dir, eval_only: bool) -> argparse.Namespace:
    config = QUICK_CONFIGS / "centermask_lite_V_19_slim_dw_synthetic_instant_test.yaml"
    return argparse.Namespace(
        config_file=str(config), opts=["OUTPUT_DIR", str(output_dir)], eval_only=eval_only,
        resume=False, dataset=[], num_gpus=1, num_machines=1,
    )  # fmt: skip


@pytest.mark.parametrize("eval_only", [False, True])
def test_setup_locks_the_output_folder_for_training_only(tmp_path, eval_only):
    holder = _holder(tmp_path)
    try:
        if eval_only:
            defaults.setup(_args(tmp_path, eval_only=True))
        else:
            with pytest.raises(OutputFolderLocked, match=str(tmp_path)):
                defaults.setup(_args(tmp_path, eval_only=False))
            assert not (tmp_path / "config.yaml").exists(), "wrote into a locked folder"
    finally:
        holder.kill()
        holder.wait()
        release_output_locks()


def test_unlock_releases_the_folder_for_another_run(tmp_path):
    lock_output_dir(str(tmp_path))
    unlock_output_dir(str(tmp_path))
    assert not (tmp_path / LOCK_FILE).exists()
    holder = _holder(tmp_path, seconds=0.0)  # another process can take it now
    assert holder.wait(timeout=60) == 0
