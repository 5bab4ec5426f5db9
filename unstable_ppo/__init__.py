"""unstable_ppo: Proximal Policy Optimization in Keras 3, on TensorFlow, JAX or PyTorch."""

__all__ = ["PPO", "use_compilation_cache", "__version__"]

from unstable_ppo import quiet  # noqa: E402
from unstable_ppo.version import __version__  # noqa: E402

quiet.install()  # TensorFlow's C++ start-up lines, off the console on every backend (see quiet.py)

from unstable_ppo.envs import memory_tasks  # noqa: E402,F401  registers CartPoleNoVel-v1, PendulumNoVel-v1 (no Keras import)


def __getattr__(name):
    # Importing PPO imports Keras, which fixes the backend for the process; the
    # runner must be able to set KERAS_BACKEND from its flags first.
    if name == "PPO":
        from unstable_ppo.ppo import PPO

        return PPO
    if name == "use_compilation_cache":
        from unstable_ppo.backend import use_compilation_cache

        return use_compilation_cache
    raise AttributeError(f"module 'unstable_ppo' has no attribute {name!r}")
