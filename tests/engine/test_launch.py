"""CPU launch with gloo: ranks, the local process group and gathers work as in NCCL runs."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
from detectron2.utils import comm

from centermask.engine import choose_backend, launch, setup_local_process_group
from centermask.engine.launch import _leave_process_group

# The module (``centermask.engine.launch`` is the function on the package).
launch_module = importlib.import_module("centermask.engine.launch")


def _report(out_dir):
    gathered = comm.all_gather(comm.get_rank())
    info = {
        "rank": comm.get_rank(),
        "world": comm.get_world_size(),
        "local_rank": comm.get_local_rank(),
        "local_size": comm.get_local_size(),
        "gathered": gathered,
        "threads": torch.get_num_threads(),
    }
    with open(f"{out_dir}/rank{comm.get_rank()}.json", "w") as f:
        json.dump(info, f)


def test_choose_backend_uses_gloo_for_cpu(monkeypatch):
    assert choose_backend("cpu") == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_backend("cuda") == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_backend("cuda") == "nccl" and choose_backend("cpu") == "gloo"


def test_nccl_workers_get_the_parent_death_cleanup_first(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(launch_module, "_exit_with_parent", lambda: events.append("cleanup"))

    def fake_d2_launch(main_func, num_gpus, **kwargs):
        # detectron2 runs main_func(*args) in each spawned process; once is enough here.
        events.append(("spawn", num_gpus))
        main_func(*kwargs["args"])

    monkeypatch.setattr(launch_module, "d2_launch", fake_d2_launch)
    launch(lambda x: events.append(("main", x)), 2, args=(7,), backend="nccl")
    assert events == [("spawn", 2), "cleanup", ("main", 7)]


def test_nccl_with_more_processes_than_gpus_fails_naming_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="1 visible.*gloo"):
        launch(_report, 2, args=("",), backend="nccl")


def test_single_process_runs_in_place(tmp_path):
    launch(_report, 1, args=(str(tmp_path),), backend="gloo")
    info = json.loads((tmp_path / "rank0.json").read_text())
    assert info["world"] == 1 and info["gathered"] == [0]


@pytest.mark.slow
def test_two_gloo_workers_share_a_local_group(tmp_path):
    launch(_report, 2, dist_url="auto", args=(str(tmp_path),), backend="gloo")
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, info in enumerate(infos):
        assert info["rank"] == info["local_rank"] == rank
        assert info["world"] == info["local_size"] == 2
        assert info["gathered"] == [0, 1]
        # Each worker gets its share of the machine's cores (at least one).
        assert info["threads"] == max(1, (os.cpu_count() or 1) // 2)


def test_multi_machine_gloo_needs_an_explicit_url():
    with pytest.raises(ValueError, match="dist-url"):
        launch(_report, 2, num_machines=2, dist_url="auto", args=("",), backend="gloo")


def test_leaving_drops_the_local_group_so_no_gloo_context_outlives_the_worker(tmp_path):
    # A local group still referenced at interpreter exit made workers abort after a good run.
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    setup_local_process_group(1)
    assert comm._LOCAL_PROCESS_GROUP is not None and comm.get_local_size() == 1
    _leave_process_group()
    assert not dist.is_initialized()
    assert comm._LOCAL_PROCESS_GROUP is None


_LAUNCHER = """
import os, sys, time
from pathlib import Path
from centermask.engine import launch

def record_pid_and_wait(folder):
    Path(folder, str(os.getpid())).touch()
    time.sleep(120)

if __name__ == "__main__":
    launch(record_pid_and_wait, 2, dist_url="auto", args=(sys.argv[1],), backend="gloo")
"""


def test_workers_exit_when_their_launcher_is_killed(tmp_path):
    script = tmp_path / "launcher.py"
    script.write_text(_LAUNCHER)
    pids = tmp_path / "pids"
    pids.mkdir()
    launcher = subprocess.Popen([sys.executable, str(script), str(pids)])
    try:
        deadline = time.time() + 120
        while len(list(pids.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.2)
        workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2, "the workers did not start"
    finally:
        launcher.kill()
        launcher.wait()

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie (exited, not yet reaped by init) counts as gone.
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"

    deadline = time.time() + 30
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    survivors = [pid for pid in workers if alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"workers {survivors} outlived their launcher"
