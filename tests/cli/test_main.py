"""The ``centermask`` command (centermask.cli.main): every command's help with a working example,
short real runs through the console entry, and a user's mistake reported in one line."""

import os
import re
import socket
import sys

import pytest

import centermask.cli.main as main_module
from centermask.cli.main import COMMANDS, main
from centermask.model_zoo import PUBLISHED_MODELS, resolve_config_file
from tests.support.helpers import QUICK_CONFIGS, ROOT

CONFIG = QUICK_CONFIGS / "centermask_lite_V_19_slim_dw_synthetic_instant_test.yaml"
EVAL_OPTS = ["MODEL.FCOS.INFERENCE_TH_TEST", "0.0"]
# A config path or a model-zoo name after --config-file (the prose around says "takes a path").
EXAMPLE_CONFIG = re.compile(
    r"--config-file (configs/\S+|centermask://\S+|(?:centermask|condinst)/\S+)"
)


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_the_command_lists_every_subcommand_and_an_example(capsys):
    text = _help(capsys)
    for name in ("train", "eval", "demo", "export", "benchmark", "quickstart", "zoo"):
        assert re.search(rf"^\s+{name}\s", text, re.M), name
    assert "Examples:" in text and "centermask demo --config-file centermask://" in text


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_subcommand_help_shows_an_example_of_itself(capsys, command):
    text = _help(capsys, command)
    assert text.startswith(f"usage: centermask {command} ")
    examples = text.split("Examples:", 1)[1]
    assert f"centermask {command}" in examples
    assert "--debug" in text


@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_examples_name_config_files_and_models_that_exist(capsys, command):
    """Every --config-file of the examples resolves, as a path from the checkout or a name."""
    examples = _help(capsys, command).split("Examples:", 1)[1]
    values = EXAMPLE_CONFIG.findall(examples)
    assert values
    for value in values:
        path = ROOT / value if value.startswith("configs/") else value
        config_file, _ = resolve_config_file(str(path))
        assert config_file.endswith(".yaml")


def test_zoo_list_prints_every_published_model_with_its_ap_and_the_weight_terms(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for name, model in PUBLISHED_MODELS.items():
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert f"{model.box_ap:.1f}" in row and f"{model.mask_ap:.1f}" in row
    assert "non-commercial" in out and "do not allow commercial use" in out


def _closed_port_mirror(monkeypatch, tmp_path):
    """Downloads fail as they do offline: the mirror is a port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("CENTERMASK_MIRROR", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CENTERMASK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CENTERMASK_DEBUG", raising=False)
    return port


def test_zoo_fetch_offline_names_the_url_and_the_cache_file_in_one_line(
    monkeypatch, tmp_path, capsys
):
    port = _closed_port_mirror(monkeypatch, tmp_path)
    assert main(["zoo", "fetch", "centermask_lite_V_39_eSE_FPN_ms_4x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    file = "centermask2-lite-V-39-eSE-FPN-ms-4x.pth"
    assert err.startswith("centermask zoo: error: Could not download ")
    assert f"http://127.0.0.1:{port}/{file}" in err and str(tmp_path / "cache" / file) in err


def test_a_missing_config_file_is_one_line_without_traceback(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("CENTERMASK_DEBUG", raising=False)
    argv = ["demo", "--config-file", str(tmp_path / "missing.yaml"), "--input", "x.jpg"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"centermask demo: error: --config-file '{tmp_path / 'missing.yaml'}'")


def test_debug_shows_the_traceback(monkeypatch, tmp_path):
    monkeypatch.delenv("CENTERMASK_DEBUG", raising=False)
    argv = ["--config-file", str(tmp_path / "missing.yaml"), "--input", "x.jpg"]
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        main(["demo", "--debug", *argv])
    monkeypatch.setenv("CENTERMASK_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        main(["demo", *argv])


def test_an_unknown_config_key_and_a_wrong_value_are_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("CENTERMASK_DEBUG", raising=False)
    common = ["export", "--config-file", str(CONFIG), "--synthetic-weights", "--output"]
    assert main([*common, str(tmp_path), "MODEL.NO_SUCH_KEY", "1"]) == 2
    assert (
        capsys.readouterr().err == "centermask export: error: Non-existent key: MODEL.NO_SUCH_KEY\n"
    )
    assert main([*common, str(tmp_path), "SOLVER.MAX_ITER", "many"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("centermask export: error: Type mismatch") and "SOLVER.MAX_ITER" in err


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.delenv("CENTERMASK_DEBUG", raising=False)

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr("centermask.cli.zoo.command", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["zoo", "list"])


@pytest.mark.slow
def test_export_runs_through_the_command(tmp_path, capsys):
    out = tmp_path / "ts"
    argv = ["export", "--config-file", str(CONFIG), "--synthetic-weights", "--format"]
    argv += ["torchscript", "--height", "64", "--width", "64", "--output", str(out)]
    assert main(argv) == 0
    assert (out / "dense.ts").is_file()
    assert f"wrote {out / 'dense.ts'}" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_train_then_eval_through_the_command(synthetic_datasets, tmp_path):
    out = tmp_path / "train"
    argv = ["--config-file", str(CONFIG), "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(out)]
    assert main(["train", *argv]) == 0
    weights = out / "model_final.pth"
    assert weights.is_file()
    argv = ["--config-file", str(CONFIG), "MODEL.WEIGHTS", str(weights), *EVAL_OPTS]
    assert main(["eval", *argv, "OUTPUT_DIR", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "inference" / "eval_results.json").is_file()


def test_quickstart_restarts_its_process_with_sleeping_openmp_threads(monkeypatch):
    """OpenMP reads OMP_WAIT_POLICY when ``import centermask`` loads torch: the command restarts
    itself with it (the same command line), once."""
    calls = []
    monkeypatch.setattr(main_module.os, "execv", lambda *args: calls.append(args))
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    main_module._restart_with_omp_environment(["quickstart", "--processes", "2"])
    assert calls == [
        (
            sys.executable,
            [sys.executable, "-m", "centermask.cli.main", "quickstart", "--processes", "2"],
        )
    ]
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    main_module._restart_with_omp_environment(["quickstart"])  # set now: no second restart
    assert len(calls) == 1
