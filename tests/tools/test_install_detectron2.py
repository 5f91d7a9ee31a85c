"""tools/setup/install_detectron2.py: no-op when installed, source installs, the offline v0.6 layout."""

import importlib.util
import io
import subprocess
import sys
import tarfile

import pytest

from tests.support.helpers import load_tool


@pytest.fixture
def installer():
    return load_tool("setup/install_detectron2")


def _refuse(*args, **kwargs):
    raise AssertionError(f"nothing may be installed when detectron2 imports, got {args}")


def test_already_installed_is_a_no_op(installer, monkeypatch, capsys):
    monkeypatch.setattr(installer, "run", _refuse)
    installer.main(["--source", "/does/not/matter"])
    out = capsys.readouterr().out
    assert "nothing to install" in out
    assert "compiled ops:" in out


def test_named_source_is_pip_installed_without_build_isolation(installer, monkeypatch):
    calls = []
    statuses = iter([None, ("0.6", "/somewhere/detectron2", True)])
    monkeypatch.setattr(installer, "detectron2_status", lambda: next(statuses))
    monkeypatch.setattr(installer, "run", lambda cmd, **kw: calls.append([str(c) for c in cmd]))
    installer.main(
        ["--source", "git+https://example.invalid/detectron2.git", "--constraints", "c.txt"]
    )
    assert len(calls) == 1
    assert calls[0][-5:] == [
        "install",
        "--no-build-isolation",
        "-c",
        "c.txt",
        "git+https://example.invalid/detectron2.git",
    ]


def test_placeholder_c_raises_a_clear_error(installer, tmp_path):
    path = tmp_path / "_C.py"
    path.write_text(installer.PLACEHOLDER_C)
    spec = importlib.util.spec_from_file_location("placeholder_C", path)
    placeholder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(placeholder)
    with pytest.raises(placeholder.CompiledOpsMissing) as err:
        placeholder.deform_conv_forward
    message = str(err.value)
    assert "installed without its compiled ops" in message
    assert "deform_conv_forward" in message
    assert "from source" in message and "rotated boxes" in message
    # detectron2.utils.collect_env asks for these three; they report the missing build.
    assert "without compiled ops" in placeholder.get_compiler_version()
    assert placeholder.has_cuda() is False


def _fake_sdist(path):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in {
            "pb1-detectron2-0.6/detectron2/__init__.py": '__version__ = "0.6"\n',
            "pb1-detectron2-0.6/detectron2/layers/__init__.py": "from detectron2 import _C\n",
            "pb1-detectron2-0.6/setup.py": "raise SystemExit('needs C++ sources')\n",
        }.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_offline_layout_installs_as_distribution_detectron2(installer, tmp_path):
    archive = tmp_path / "pb1-detectron2-0.6.tar.gz"
    _fake_sdist(archive)
    stage = installer.stage_sdist(archive, tmp_path / "stage")
    assert (stage / "detectron2" / "_C.py").read_text() == installer.PLACEHOLDER_C
    assert 'name="detectron2"' in (stage / "setup.py").read_text()
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(stage),
        ],
        check=True,
    )
    probe = (
        "import detectron2.layers, importlib.metadata as m; "
        "print(m.version('detectron2'), detectron2._C.PLACEHOLDER)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.6", "True"]
