#!/usr/bin/env python
"""Install detectron2 into the running Python environment, the way this project needs it.

Three cases, in order:

1. ``import detectron2`` already works: nothing is installed.
2. A source is named (``--source`` or the ``D2_SOURCE`` environment variable: a local checkout, a
   ``git+https://...`` URL or an archive): ``pip install --no-build-isolation <source>``. This is the
   normal path on a machine with internet access (upstream git, compiled ops included).
3. Otherwise (offline machines, CI): detectron2 v0.6's Python sources are taken from the registry
   sdist ``pb1-detectron2==0.6`` (byte-identical to upstream v0.6's Python files, without the C++
   sources) and installed as the distribution ``detectron2`` *without* the compiled extension. A
   placeholder module ``detectron2/_C.py`` takes the extension's place so that detectron2's
   import-time ``from detectron2 import _C`` works; using any compiled op raises a clear error.
   This path also pins ``Pillow<10`` (v0.6 uses ``Image.LINEAR``) and ``setuptools<81`` (v0.6 uses
   ``pkg_resources``).

centermask itself never needs detectron2's compiled ops: it uses torchvision.ops instead.
Finally the script prints what is in use: version, location, compiled ops yes or no.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

SDIST_REQUIREMENT = "pb1-detectron2==0.6"
FALLBACK_PINS = ["Pillow<10", "setuptools<81"]
# Requirements of detectron2 v0.6 (from its setup.py) except its exact ``black`` pin, which only
# formats saved LazyConfig files and would conflict with current formatters.
V06_REQUIREMENTS = [
    "Pillow>=7.1",
    "matplotlib",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "pydot",
    "omegaconf>=2.1",
    "hydra-core>=1.1",
]

PLACEHOLDER_C = '''\
"""Placeholder for detectron2's compiled extension (installed by centermask's
tools/setup/install_detectron2.py, without the C++/CUDA sources).

detectron2 imports this module at import time; any use of a compiled op raises CompiledOpsMissing.
The three informational functions used by detectron2.utils.collect_env report the missing build.
"""

PLACEHOLDER = True
MESSAGE = (
    "detectron2 was installed without its compiled ops (placeholder detectron2._C from "
    "centermask's tools/setup/install_detectron2.py), so '{name}' is not available. centermask does not "
    "need them; install detectron2 from source (D2_SOURCE=/path/or/git-url make install, or "
    "'pip install --no-build-isolation git+https://github.com/facebookresearch/detectron2.git') "
    "for rotated boxes or detectron2's own deformable conv."
)


class CompiledOpsMissing(RuntimeError):
    """A detectron2 compiled op was requested but detectron2 was installed without them."""


def get_compiler_version():
    return "none (detectron2 installed without compiled ops)"


def get_cuda_version():
    return "none (detectron2 installed without compiled ops)"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    raise CompiledOpsMissing(MESSAGE.format(name=name))
'''

SETUP_PY = """\
from setuptools import find_packages, setup

setup(
    name="detectron2",
    version="0.6",
    description="detectron2 v0.6 Python sources (from pb1-detectron2==0.6), without compiled ops",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={{"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]}},
    include_package_data=True,
    python_requires=">=3.6",
    install_requires={requirements!r},
)
"""


def run(cmd, **kwargs):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.check_call([str(c) for c in cmd], **kwargs)


def pip(*args):
    return [sys.executable, "-m", "pip", *args]


def detectron2_status():
    """Return (version, location, has_compiled_ops) or None when detectron2 does not import."""
    probe = textwrap.dedent("""
        import os, detectron2
        try:
            from detectron2 import _C
            compiled = not getattr(_C, "PLACEHOLDER", False)
        except ImportError:
            compiled = False
        print(detectron2.__version__)
        print(os.path.dirname(detectron2.__file__))
        print("yes" if compiled else "no")
        """)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    version, location, compiled = proc.stdout.strip().splitlines()[-3:]
    return version, location, compiled == "yes"


def install_from_source(source, constraints):
    extra = ["-c", constraints] if constraints else []
    run(pip("install", "--no-build-isolation", *extra, source))


def download_sdist(workdir: Path) -> Path:
    """Download the ``pb1-detectron2==0.6`` sdist from the configured package index."""
    download = workdir / "download"
    # --no-build-isolation: the sdist's setup.py imports torch to compute its metadata.
    run(
        pip(
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-build-isolation",
            SDIST_REQUIREMENT,
            "-d",
            download,
        )
    )
    archives = sorted(download.glob("*.tar.gz"))
    if not archives:
        raise SystemExit(f"pip did not download {SDIST_REQUIREMENT} into {download}")
    return archives[0]


def stage_sdist(archive: Path, stage: Path) -> Path:
    """Lay out an installable ``detectron2`` project from the sdist's Python files in ``stage``.

    The project holds the sdist's ``detectron2/`` package unchanged, plus the placeholder
    ``detectron2/_C.py`` and a setup.py that installs it as the distribution ``detectron2``.
    """
    unpacked = stage.parent / (stage.name + "-unpacked")
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    roots = [p for p in unpacked.iterdir() if (p / "detectron2" / "__init__.py").exists()]
    if not roots:
        raise SystemExit(f"{archive} holds no detectron2 package")
    shutil.copytree(roots[0] / "detectron2", stage / "detectron2")
    (stage / "detectron2" / "_C.py").write_text(PLACEHOLDER_C)
    (stage / "setup.py").write_text(SETUP_PY.format(requirements=V06_REQUIREMENTS))
    return stage


def install_v06_without_ops(constraints, workdir: Path):
    """Install v0.6's Python files from the registry sdist, with a placeholder ``_C``."""
    extra = ["-c", constraints] if constraints else []
    stage = stage_sdist(download_sdist(workdir), workdir / "stage")
    # Pins first, so that the build below already runs with the setuptools v0.6 needs.
    run(pip("install", *extra, *FALLBACK_PINS))
    run(pip("install", "--no-build-isolation", *extra, str(stage)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--source",
        default=os.environ.get("D2_SOURCE", ""),
        help="detectron2 source for pip (default: $D2_SOURCE)",
    )
    parser.add_argument("--constraints", default="", help="pip constraints file to respect")
    args = parser.parse_args(argv)

    status = detectron2_status()
    if status is None:
        if args.source:
            install_from_source(args.source, args.constraints)
        else:
            with tempfile.TemporaryDirectory(prefix="d2-install-") as tmp:
                install_v06_without_ops(args.constraints, Path(tmp))
        status = detectron2_status()
        if status is None:
            raise SystemExit("detectron2 still does not import after installation")
    else:
        print("detectron2 already importable: nothing to install")
    version, location, compiled = status
    print(f"detectron2 {version} at {location}; compiled ops: {'yes' if compiled else 'no'}")


if __name__ == "__main__":
    main()
