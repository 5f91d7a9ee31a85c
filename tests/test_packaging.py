"""``pip install .`` gives the ``centermask`` command and the config files: the wheel built from
the checkout holds the console-script entry point and every YAML of configs/ inside the
package."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.support.helpers import ROOT

SOURCES = ["setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel of a copy of the checkout (the build writes build/ and *.egg-info/ into the
    tree it builds)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("centermask", "configs"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    proc = subprocess.run(
        [*cmd, "-w", str(out), str(source)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("centermask-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_the_wheel_declares_the_centermask_command(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[console_scripts]" in text and "centermask = centermask.cli.main:main" in text


def test_the_wheel_carries_every_config_inside_the_package(wheel):
    shipped = {
        n[len("centermask/model_zoo/configs/") :]
        for n in wheel.namelist()
        if n.startswith("centermask/model_zoo/configs/")
    }
    expected = {str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml")}
    assert expected and shipped == expected
    assert "centermask/cli/main.py" in wheel.namelist()
