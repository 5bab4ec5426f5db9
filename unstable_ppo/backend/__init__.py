"""Per-backend plumbing, chosen once from `keras.backend.backend()`.

Each module defines a `Trainer` mixin that only moves gradients and compiles
functions — the loss itself lives in `unstable_ppo.losses`:

- `train_step`: the Keras train step (what `fit()` calls), built on the PPO loss;
- `make_act_function()`: the compiled acting call of the rollout loop;
- `make_update_function()`: one epoch of minibatch updates over a rollout.
"""

import contextlib
import random
import sys

import keras
import numpy as np

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


def set_random_seed(seed):
    """`keras.utils.set_random_seed`, without importing TensorFlow on the other backends.

    Keras seeds TensorFlow whenever it is installed, and importing it costs a jax or
    torch run seconds of start-up; where it is not loaded, nothing can draw from it.
    """
    if BACKEND == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    try:  # what keras.utils.set_random_seed does, less `tf.random.set_seed`
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils import rng_utils
    except ImportError:  # a Keras whose internals moved: seed as Keras does, TensorFlow too
        keras.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    if BACKEND == "torch":
        import torch

        torch.manual_seed(seed)


@contextlib.contextmanager
def tensorflow_left_unloaded():
    """Keras's serializer asks whether each object is a TensorFlow one, importing TensorFlow
    to ask (seconds, on a jax or torch run). Nothing can be one while TensorFlow is not
    loaded, so inside this block Keras is told it is not there."""
    try:
        from keras.src.utils.module_utils import tensorflow
    except ImportError:  # a Keras whose internals moved: let it import TensorFlow
        tensorflow = None
    if tensorflow is None or "tensorflow" in sys.modules or tensorflow._available is not None:
        yield
        return
    tensorflow._available = False
    try:
        yield
    finally:
        tensorflow._available = None


__all__ = ["BACKEND", "Trainer", "set_random_seed", "tensorflow_left_unloaded", "use_compilation_cache"]
