#!/usr/bin/env python
"""centermask: CenterMask (VoVNetV2 + FCOS + SAG-Mask + MaskIoU) as a Detectron2 extension.

detectron2 itself is not on PyPI: install it first (see README.md), or let ``make install`` do it.
``pip install .`` provides the ``centermask`` command (centermask.cli.main) and ships configs/
inside the package (centermask/model_zoo/configs): config names work without the source checkout.
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def read_version() -> str:
    for line in (
        Path(__file__).with_name("centermask").joinpath("__init__.py").read_text().splitlines()
    ):
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip("\"'")
    raise RuntimeError("centermask/__init__.py has no __version__")


class BuildPyWithConfigs(build_py):
    """build_py plus a copy of configs/ (the YAML files) as centermask/model_zoo/configs in the
    build folder, which the wheel packs; the source tree is left alone (an editable install reads
    configs/ itself, see centermask.model_zoo.model_zoo.configs_root)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "centermask" / "model_zoo" / "configs"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(
            ROOT / "configs",
            target,
            ignore=lambda folder, names: [
                n for n in names if not (n.endswith(".yaml") or Path(folder, n).is_dir())
            ],
        )


setup(
    name="centermask",
    version=read_version(),
    description="CenterMask: real-time anchor-free instance segmentation, as a Detectron2 project",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["centermask", "centermask.*"]),
    cmdclass={"build_py": BuildPyWithConfigs},
    entry_points={"console_scripts": ["centermask = centermask.cli.main:main"]},
    install_requires=[
        "torch>=2.0",
        "torchvision>=0.15",
        "numpy",
        "fvcore>=0.1.5",
        "iopath>=0.1.7",
        "safetensors>=0.4",
        "pycocotools>=2.0.2",
        "opencv-python-headless",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        "export": ["onnx", "onnxruntime"],
        "timm": ["timm"],
        # C++ COCOeval for box and mask AP (centermask.evaluation.coco_evaluation)
        "eval": ["faster-coco-eval>=1.6"],
        # setuptools: tests/test_packaging.py builds the wheel without build isolation
        "dev": [
            "pytest",
            "black",
            "isort",
            "setuptools>=70.1",
            "onnx",
            "onnxruntime",
            "timm",
            "faster-coco-eval>=1.6",
        ],
    },
)
