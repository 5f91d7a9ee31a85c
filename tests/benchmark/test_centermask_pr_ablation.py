import json
import math
import os
import subprocess
import sys

import pytest

from centermask.benchmark.centermask_pr_ablation import (
    ARMS,
    METRICS,
    arm_opts,
    markdown_table,
    parse_args,
    summarize,
)
from tests.support.helpers import ROOT


def test_arms_set_the_mask_keys_of_the_five_variants():
    def keys(arm):
        opts = arm_opts(arm, 0, 100, 8, "out")
        return dict(zip(opts[::2], opts[1::2]))

    pr = "MODEL.CENTERMASK_PR."
    assert keys("local")[pr + "MASK_MODE"] == "local"
    assert keys("global_agn")[pr + "CLASS_SPECIFIC_SALIENCY"] == "False"
    assert keys("global_cls")[pr + "SALIENCY_LOSS_WEIGHT"] == "1.0"
    assert keys("both_cls")[pr + "MASK_MODE"] == "both"
    # The same schedule and data for every arm.
    common = [{k: v for k, v in keys(a).items() if not k.startswith(pr)} for a in ARMS]
    assert all(c == common[0] for c in common)
    assert common[0]["SOLVER.MAX_ITER"] == "100" and common[0]["SOLVER.STEPS"] == "(80,93,)"
    with pytest.raises(ValueError, match="arm"):
        arm_opts("neither", 0, 100, 8, "out")


def test_config_overrides_may_follow_the_list_options():
    key = "MODEL.CENTERMASK_PR.SHAPE_SIZE"
    args = parse_args(["--seeds", "0", "1", "--arms", "local", "both_agn", key, "8"])
    assert args.seeds == [0, 1] and args.arms == ["local", "both_agn"]
    assert args.opts == [key, "8"]
    args = parse_args(["--arms", "local", "--", "SEED", "3"])
    assert args.arms == ["local"] and args.opts == ["SEED", "3"]
    assert parse_args(["--jobs", "1"]).opts == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--arms", "local", "SOLVER.MAX_ITER"], "KEY VALUE pairs"),
        (["SOLVER.MAX_ITER", "10", "--jobs", "1"], "options go before"),
    ],
)
def test_malformed_overrides_are_refused_by_name(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_summary_gives_the_mean_and_spread_over_seeds():
    def run(arm, seed, iou):
        metrics = {m: 0.5 for _, m in METRICS}
        return {
            "arm": arm,
            "seed": seed,
            "crowd": {**metrics, "iou_crowded": iou},
            "sparse": metrics,
        }

    table = summarize([run("local", 0, 0.4), run("local", 1, 0.6), run("both_cls", 0, 0.8)])
    assert table["local"]["crowd/iou_crowded"] == pytest.approx({"mean": 0.5, "spread": 0.2})
    assert table["both_cls"]["crowd/iou_crowded"] == {"mean": 0.8, "spread": 0.0}
    text = markdown_table(table, [0, 1])
    assert "| local | 0.500 (0.200) |" in text


def test_smoke_ablation_writes_a_table_of_five_arms_and_a_picture(tmp_path):
    out = tmp_path / "ablation"
    script = ROOT / "tools" / "analysis" / "centermask_pr_ablation.py"
    command = [sys.executable, str(script), "--smoke", "--jobs", "1", "--output", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "ablation.json").read_text())
    assert list(summary["table"]) == list(ARMS)
    for arm, row in summary["table"].items():
        for split, metric in METRICS:
            value = row[f"{split}/{metric}"]["mean"]
            assert value is not None and math.isfinite(value) and 0.0 <= value <= 1.0, (arm, metric)
    assert all(r["crowd"]["num_crowded"] > 0 for r in summary["runs"])
    table = (out / "ablation.md").read_text()
    assert all(f"| {arm} |" in table for arm in ARMS)
    assert (out / "ablation.png").stat().st_size > 0

    # Run again: every finished run is reused, and the outputs are written again from them.
    (out / "ablation.png").unlink()
    again = subprocess.run(command, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done earlier, reused") == len(ARMS)
    assert json.loads((out / "ablation.json").read_text())["table"] == summary["table"]
    assert (out / "ablation.png").is_file()
