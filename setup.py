"""duc-hdc: DUC-HDC semantic segmentation (Wang et al., WACV 2018) on MXNet/Gluon."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "duc_hdc", "__init__.py")) as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

setup(
    name="duc-hdc",
    version=VERSION,
    description="Dense Upsampling Convolution + Hybrid Dilated Convolution (WACV 2018) on MXNet/Gluon",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.8",
    packages=find_packages(exclude=("tests", "tests.*", "bench", "tools")),
    package_data={"duc_hdc": ["configs/*.yaml", "evaluation/report.html"]},
    include_package_data=True,
    install_requires=[
        "gluoncv==0.10.5.post0",
        # download locks (GluonCV's model store uses it too)
        "portalocker",
        # mxnet 1.9.1 uses np.bool, removed in numpy 1.24
        "numpy==1.23.5",
        # opencv 4.12 requires numpy 2
        "opencv-python<4.12",
        "pyyaml",
        "tqdm",
        "matplotlib",
        # VOC palette PNGs keep their indices only through Pillow (OpenCV maps them to colours)
        "Pillow",
        # SBD's .mat label files
        "scipy",
    ],
    extras_require={
        "cpu": ["mxnet==1.9.1"],
        "gpu": ["mxnet-cu112==1.9.1"],
        "test": ["pytest", "onnx==1.16.2", "onnxruntime==1.19.2", "cityscapesscripts==2.3.0"],
    },
    entry_points={"console_scripts": ["duc-hdc=duc_hdc.cli:main"]},
)
