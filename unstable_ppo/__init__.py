"""unstable_ppo: Proximal Policy Optimization in Keras 3, on TensorFlow, JAX or PyTorch."""

__version__ = "0.1.0"

from unstable_ppo.ppo import PPO  # noqa: E402

__all__ = ["PPO", "__version__"]
