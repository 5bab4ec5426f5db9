import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:  # the README has non-ASCII text: any locale
        return f.read()


# The version's one source is unstable_ppo/version.py (read, not imported: setup runs before the dependencies exist).
VERSION = re.search(r'^__version__ = "([^"]+)"', read(os.path.join("unstable_ppo", "version.py")), re.M).group(1)

# torch is pinned: 2.13.0 is the CPU build these machines install without a
# multi-GB CUDA download; any newer torch works if you install it yourself.
EXTRAS = {
    "jax": ["jax[cpu]>=0.4.30"],
    "torch": ["torch==2.13.0"],
    "plot": ["matplotlib>=3.7"],
    # NVIDIA GPUs: the CUDA 12 builds of jax and TensorFlow. torch's default wheel on PyPI is already
    # a CUDA build (install it without the "torch" extra, which pins the CPU build these machines use).
    "cuda": ["jax[cuda12]>=0.4.30", "tensorflow[and-cuda]>=2.16"],
    "mujoco": ["gymnasium[mujoco]"],  # HalfCheetah-v5 and the other MuJoCo tasks
    "box2d": ["gymnasium[box2d]"],  # LunarLander-v3, LunarLanderContinuous-v3, BipedalWalker-v3
    "minigrid": ["minigrid>=3.0"],  # MiniGrid envs: examples/minigrid_doorkey.py, benchmarks/dict_obs.py
    # PointMaze, Fetch and the other Gymnasium-Robotics envs. mujoco < 3.12: from 3.12 on, Gymnasium-Robotics
    # 1.4.2's Fetch tasks fail an assertion on joint types at gym.make (mujoco's joint-type enum no longer
    # equals numpy's int32; PointMaze and gymnasium's own MuJoCo tasks work with every version).
    "robotics": ["gymnasium-robotics>=1.4", "mujoco>=3.1,<3.12"],
    "video": ["moviepy>=1.0", "gymnasium[classic-control]"],  # mp4 writing; rendering classic-control envs
    "gymnax": ["gymnax>=1.0"],  # gymnax/<EnvId> ids: JAX-native classic control, MinAtar, bsuite
    "ray": ["ray>=2.9"],  # --ray_address: gathering workers as Ray actors, on one machine or a cluster
    "export": ["onnx>=1.15", "onnxruntime>=1.17", "tf2onnx>=1.16"],  # PPO.export; onnxruntime runs the .onnx
    "tune": ["optuna>=4.0", "psycopg2-binary>=2.9", "matplotlib>=3.7"],  # unstable_ppo.tune; PostgreSQL storage
    "test": [
        "pytest>=8", "scipy>=1.10", "hypothesis>=6",
        "matplotlib>=3.7", "moviepy>=1.0", "gymnasium[classic-control]",
        "ray>=2.9",  # tests/test_parallel.py starts a real local Ray instance
        "optuna>=4.0", "psycopg2-binary>=2.9",  # tests/test_tune.py (SQLite, and a real PostgreSQL if installed)
        "onnx>=1.15", "onnxruntime>=1.17", "tf2onnx>=1.16",  # tests/test_export.py
        "gymnax>=1.0",  # tests/test_gymnax.py, tests/test_compiled.py
        # tests/test_docs.py builds the site: the docs extra's packages
        "mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "ruff>=0.4",
    ],
    "benchmarks": ["stable-baselines3>=2.3", "sb3-contrib>=2.3", "matplotlib>=3.7"],
    # The docs site (mkdocs.yml, docs/): `mkdocs build --strict`, `mkdocs serve`; tests/test_docs.py builds it.
    # ruff: mkdocstrings formats the API reference's long signatures with it (or Black).
    "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "ruff>=0.4"],
}
EXTRAS["all"] = sorted({dep for name, deps in EXTRAS.items() if name != "cuda" for dep in deps})

setup(
    name="unstable_ppo",
    version=VERSION,
    description="Proximal Policy Optimization in Keras 3, on TensorFlow, JAX or PyTorch",
    long_description=read("README.md"),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Typing :: Typed",
    ],
    packages=find_packages(include=["unstable_ppo", "unstable_ppo.*"]),
    python_requires=">=3.10",
    install_requires=[
        "keras>=3.5",
        "tensorflow>=2.16",
        "numpy>=1.24",
        "gymnasium>=1.1",
        "ale-py>=0.10",  # Atari games, ROMs included
        "opencv-python-headless>=4",  # gymnasium's AtariPreprocessing (the --vec_env=sync/async Atari pipeline)
        "absl-py>=2.0",
        "tqdm>=4.60",
        "tensorboard>=2.16",  # the runner's event files (written without TensorFlow); tensorflow 2.21 no longer pulls it in
    ],
    package_data={"unstable_ppo": ["configs/*.flags", "py.typed"]},
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "unstable-ppo=unstable_ppo.run:entry_point",
            "unstable-ppo-play=unstable_ppo.play:entry_point",
            "unstable-ppo-plot=unstable_ppo.plot:entry_point",
            "unstable-ppo-export=unstable_ppo.export.cli:entry_point",
            "unstable-ppo-tune=unstable_ppo.tune.cli:entry_point",
        ]
    },
)
