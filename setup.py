#!/usr/bin/env python
"""centermask: CenterMask (VoVNetV2 + FCOS + SAG-Mask + MaskIoU) as a Detectron2 extension.

detectron2 itself is not on PyPI: install it first (see README.md), or let ``make install`` do it.
"""
from pathlib import Path

from setuptools import find_packages, setup


def read_version() -> str:
    for line in Path(__file__).with_name("centermask").joinpath("__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip("\"'")
    raise RuntimeError("centermask/__init__.py has no __version__")


setup(
    name="centermask",
    version=read_version(),
    description="CenterMask: real-time anchor-free instance segmentation, as a Detectron2 project",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["centermask", "centermask.*"]),
    install_requires=[
        "torch>=2.0",
        "torchvision>=0.15",
        "numpy",
        "fvcore>=0.1.5",
        "iopath>=0.1.7",
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
        "dev": ["pytest", "black", "isort", "onnx", "onnxruntime", "timm", "faster-coco-eval>=1.6"],
    },
)
