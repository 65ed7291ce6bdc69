"""pip-installable pure-Python parts of lnn_control (no ROS needed).

On a robot, build the package with colcon (CMakeLists.txt: ament_cmake + rosidl).
``pip install .`` gives the liquid-network and BarrierNet libraries and the
training / analysis tools for offline work on any machine.
"""

from setuptools import find_packages, setup

setup(
    name="lnn_control",
    version="0.1.0",
    description="Liquid neural network policies with a BarrierNet safety filter",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["lnn_control", "lnn_control.*", "barriernet", "barriernet.*"]),
    package_data={"lnn_control": ["py.typed"], "barriernet": ["py.typed"]},
    install_requires=[
        "torch>=2.1",
        "numpy>=1.26",
        "scipy>=1.11",
        "pyyaml>=6",
        "cvxpy>=1.9",
        "daqp>=0.6",
        "tqdm>=4.66",
        "matplotlib>=3.8",
    ],
    extras_require={
        "sim": ["mujoco>=3.1"],
        "bags": ["mcap>=1.1", "mcap-ros2-support>=0.5"],
        "analysis": ["scikit-learn>=1.3"],
        "export": ["onnx>=1.15", "onnxruntime>=1.17"],
        "jit": ["numba>=0.60"],
        "test": ["pytest>=8", "pytest-timeout>=2.2", "hypothesis>=6.90", "ncps==1.0.1"],
    },
    entry_points={"console_scripts": ["lnn-control = lnn_control.cli:main"]},
)
