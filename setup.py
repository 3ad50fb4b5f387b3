"""pip-installable form of the library, CLI and node, for use without colcon.

Without colcon the generated `eventful_perception.msg` is absent: the library and the
`eventful-perception` CLI work; the node needs the colcon (or `make build`) install.
"""
from setuptools import find_packages, setup

setup(
    name="eventful_perception",
    version="0.1.0",
    description="Eventful Transformer object detection for ROS 2 robots",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["eventful_perception", "eventful_perception.*"]),
    package_data={"eventful_perception": ["default_model/*", "default_model/reuse/*/*", "training/*.json"]},
    install_requires=[
        "torch>=2.1",
        "numpy",
        "safetensors",
        "onnx",
        "opencv-python-headless",
        "rosbags",
        "rosbags-image",
        "psutil",
        "tqdm",
        "matplotlib",
        "pyyaml",
    ],
    entry_points={
        "console_scripts": [
            "eventful-perception = eventful_perception.cli:main",
            "eventful_detector = eventful_perception.ros.node:main",
        ],
    },
)
