"""The deterministic policy of a `PPO` as TensorFlow ops, built from its network (TensorFlow backend only).

`policy_function` is the one graph every format is written from (`writers`); `signature` names its
inputs and outputs, which `policy.json` describes.
"""

import types

import numpy as np

from unstable_ppo.acting import env_action_dtype, env_actions, obs_dtype
from unstable_ppo.normalize import normalized_obs
from unstable_ppo.spaces import is_structured


def check_exportable(ppo):
    if is_structured(ppo.observation_space):
        raise ValueError(f"export takes one observation array; this model's {type(ppo.observation_space).__name__} "
                         "observations are not supported yet")


def signature(ppo):
    """`[(name, shape, dtype)]` of the policy's inputs and outputs, batch axis `None` first."""
    model = ppo.model
    inputs = [("obs", (None, *ppo.observation_space.shape), str(obs_dtype(model)))]
    space = ppo.action_space
    outputs = [("action", (None, *space.shape), str(env_action_dtype(space)))]
    if model.recurrent:
        inputs += [("state", (None, model.state_size), "float32"), ("episode_start", (None,), "float32")]
        outputs += [("next_state", (None, model.state_size), "float32")]
    return inputs, outputs


def policy_function(ppo):
    """`(fn, input_signature)`: the deterministic policy of `ppo` in TensorFlow ops, weights as variables.

    Each step is the one `acting.predict` takes, in the same order: `normalize.normalized_obs` (frozen
    statistics as constants), the network (its encoder scales pixels and one-hot encodes Discrete
    observations), the distribution's mode, then `acting.env_actions` — the very functions acting calls,
    given TensorFlow ops (`tensorflow_ops`) for numpy's.
    """
    import tensorflow as tf  # late: TensorFlow loads only to build an artifact

    model, space = ppo.model, ppo.action_space
    rms = ppo.normalizer.obs_rms if ppo.normalizer is not None else None
    inputs, _ = signature(ppo)
    input_signature = [tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in inputs]
    ops = tensorflow_ops()

    def observations(obs):
        if rms is None:
            return obs
        # float32 here, float64 in numpy: equal to rounding (the tests allow 1e-5 on continuous actions).
        return normalized_obs(obs, rms, xp=ops, dtype=np.float32)

    def action(params):
        return env_actions(space, mode(model.distribution(params)), xp=ops)

    if model.recurrent:
        def policy(obs, state, episode_start):
            params, _, next_state = model((observations(obs), state, episode_start))
            return {"action": action(params), "next_state": next_state}
    else:
        def policy(obs):
            params, _ = model(observations(obs))
            return {"action": action(params)}

    return policy, input_signature


def mode(dist):
    """`dist.mode()`, but with an argmax ONNX can express.

    Keras's TensorFlow argmax finds -0.0 by bit-casting (`Bitcast`, `BitwiseAnd`: no ONNX op);
    this finds it as `1/x == -inf` and ranks it below +0.0 as Keras does, so ties break alike.
    """
    from unstable_ppo.distributions import Categorical, MultiCategorical  # late: imports Keras

    if isinstance(dist, Categorical):
        return argmax(dist.logits)
    if isinstance(dist, MultiCategorical):
        import tensorflow as tf  # late: TensorFlow loads only to build an artifact

        return tf.stack([argmax(part.logits) for part in dist.parts], axis=-1)
    return dist.mode()


def argmax(x):
    import tensorflow as tf  # late: TensorFlow loads only to build an artifact

    negative_zero = tf.logical_and(tf.equal(x, 0.0), tf.less(tf.math.reciprocal(x), 0.0))
    x = tf.where(negative_zero, -np.finfo(np.float32).tiny, x)
    return tf.argmax(x, axis=-1, output_type=tf.int32)


def tensorflow_ops():
    """The numpy functions `acting.env_actions` and `normalize.normalized_obs` call (their `xp`), as TensorFlow
    ops, with numpy's semantics: `asarray(x, dtype)` casts, `clip` computes in numpy's promoted dtype."""
    import tensorflow as tf  # late: TensorFlow loads only to build an artifact

    def clip(x, low, high):  # np.clip: maximum then minimum, bounds numpy constants
        dtype = np.result_type(x.dtype.as_numpy_dtype, low, high)
        x = tf.cast(x, dtype)
        return tf.minimum(tf.maximum(x, np.asarray(low, dtype)), np.asarray(high, dtype))

    return types.SimpleNamespace(asarray=tf.cast, reshape=tf.reshape, clip=clip)
