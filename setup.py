#!/usr/bin/env python
"""Packaging for knet_d2 (K-Net as a Detectron2 extension).

detectron2 has no official PyPI release, so it is not listed in ``install_requires``;
``tools/install_deps.sh`` (run by ``make``) installs a working build. See README.md.

These are ranges for library users, who bring their own torch (CUDA build) and detectron2: an
upper bound appears only where a break is known, with the reason next to it. The exact versions
the test suite passed with are in ``requirements/lock.txt`` (what ``make`` installs).
"""
from setuptools import find_packages, setup

setup(
    name="knet_d2",
    version="0.1.0",
    description="K-Net (NeurIPS 2021) unified image segmentation as a Detectron2 extension",
    packages=find_packages(exclude=("tests", "tests.*", "configs", "benchmarks")),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "fvcore",
        "pycocotools",
        "scipy",
        # detectron2 0.7.2 declares numpy<2; under numpy 2 its SemSegEvaluator fails
        # (np.array(..., copy=False) on a PIL image).
        "numpy<2",
        # opencv-python-headless 5 requires numpy>=2 (see numpy above).
        "opencv-python-headless<5",
    ],
    extras_require={"dev": ["pytest", "pytest-timeout", "pytest-xdist", "ruff", "hypothesis"]},
)
