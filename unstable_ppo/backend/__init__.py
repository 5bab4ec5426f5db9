"""Per-backend plumbing, chosen once from `keras.backend.backend()`.

Each module defines a `Trainer` mixin that only moves gradients and compiles
functions — the loss itself lives in `unstable_ppo.losses`:

- `train_step`: the Keras train step (what `fit()` calls), built on the PPO loss;
- `make_act_function()`: the compiled acting call of the rollout loop;
- `make_update_function()`: one epoch of minibatch updates over a rollout.
"""

import keras

BACKEND = keras.backend.backend()

if BACKEND == "jax":
    from unstable_ppo.backend.jax import JAXTrainer as Trainer
elif BACKEND == "tensorflow":
    from unstable_ppo.backend.tensorflow import TensorFlowTrainer as Trainer
elif BACKEND == "torch":
    from unstable_ppo.backend.torch import TorchTrainer as Trainer
else:
    raise ImportError(
        f"unstable_ppo supports the Keras backends jax, tensorflow and torch, not {BACKEND!r}"
    )


def use_compilation_cache(path):
    """Cache compiled programs in the directory `path`, so a later run with the same shapes skips compiling.

    JAX only: it is XLA's persistent compilation cache. Loading from it runs the
    machine code stored there, so `path` must be a directory only you can write to.
    """
    if BACKEND != "jax":
        raise ValueError(f"a compilation cache needs the jax backend (XLA's persistent cache); "
                         f"{BACKEND} has none")
    from unstable_ppo.backend.jax import use_compilation_cache as use  # imports jax: only on the jax backend

    use(path)


__all__ = ["BACKEND", "Trainer", "use_compilation_cache"]
