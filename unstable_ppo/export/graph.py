"""The deterministic policy of a `PPO` as TensorFlow ops, built from its network (TensorFlow backend only).

`policy_function` is the one graph every format is written from (`writers`); `signature` names its
inputs and outputs, which `policy.json` describes.
"""

import numpy as np
from gymnasium import spaces

from unstable_ppo.acting import obs_dtype
from unstable_ppo.normalize import CLIP_OBS
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
    dtype = "int64" if isinstance(space, spaces.Discrete) else str(space.dtype)  # as `acting.env_actions`
    outputs = [("action", (None, *space.shape), dtype)]
    if model.recurrent:
        inputs += [("state", (None, model.state_size), "float32"), ("episode_start", (None,), "float32")]
        outputs += [("next_state", (None, model.state_size), "float32")]
    return inputs, outputs


def policy_function(ppo):
    """`(fn, input_signature)`: the deterministic policy of `ppo` in TensorFlow ops, weights as variables.

    Each step is the one `acting.predict` takes, in the same order: `Normalizer.obs` (frozen
    statistics as constants), the network (its encoder scales pixels and one-hot encodes Discrete
    observations), the distribution's mode, then `acting.env_actions`.
    """
    import tensorflow as tf  # late: TensorFlow loads only to build an artifact

    model, space = ppo.model, ppo.action_space
    rms = ppo.normalizer.obs_rms if ppo.normalizer is not None else None
    inputs, _ = signature(ppo)
    input_signature = [tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in inputs]

    def observations(obs):
        if rms is None:
            return obs
        # float32 here, float64 in numpy: equal to rounding (the tests allow 1e-5 on continuous actions).
        normalized = (tf.cast(obs, tf.float32) - rms.mean.astype(np.float32)) / rms.std.astype(np.float32)
        return tf.clip_by_value(normalized, -CLIP_OBS, CLIP_OBS)

    def action(params):
        return env_actions(space, mode(model.distribution(params)))

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


def env_actions(space, actions):
    """`acting.env_actions(space, acting.buffer_actions(...))` for the network's mode, in TensorFlow ops."""
    import tensorflow as tf  # late: TensorFlow loads only to build an artifact

    if isinstance(space, spaces.Discrete):
        return tf.cast(actions, tf.int64) + int(space.start)
    actions = tf.reshape(actions, (-1, *space.shape))
    if isinstance(space, spaces.Box):  # numpy's clip of the float32 mean by the space's bounds, then its dtype
        actions = tf.cast(actions, space.dtype)
        return tf.minimum(tf.maximum(actions, space.low), space.high)
    actions = tf.cast(actions, space.dtype)
    if isinstance(space, spaces.MultiDiscrete):
        actions += np.asarray(space.start, space.dtype)
    return actions
