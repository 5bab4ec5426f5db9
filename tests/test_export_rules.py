"""The exported graph applies the very rules numpy acting does: `acting.env_actions` and `normalize.normalized_obs`
given TensorFlow ops (`export.graph.tensorflow_ops`) give what they give on numpy arrays, bit for bit, at and
beyond the bounds. test_export.py compares whole exported policies with `predict`; this tests the rules alone,
on the spaces and values a policy rarely reaches."""

import numpy as np
import pytest
from gymnasium import spaces

from unstable_ppo.acting import env_action_dtype, env_actions
from unstable_ppo.export.graph import tensorflow_ops
from unstable_ppo.normalize import CLIP_OBS, RunningMeanStd, normalized_obs

pytestmark = [pytest.mark.backend_independent, pytest.mark.quick]

Box = spaces.Box
ACTION_SPACES = {
    "discrete": spaces.Discrete(3, start=1),
    "discrete_int32": spaces.Discrete(4, start=-2, dtype=np.int32),  # the env still gets int64
    "multidiscrete": spaces.MultiDiscrete([2, 3, 4], start=[1, -1, 0]),
    "multidiscrete_2d": spaces.MultiDiscrete(np.array([[2, 3], [4, 5]]), dtype=np.int32),
    "multibinary": spaces.MultiBinary(3),
    "box": Box(np.array([-0.02, -1.0], np.float32), np.array([0.02, 1.0], np.float32)),
    "box_2d": Box(-2.0, 2.0, (2, 3), np.float32),
    "box_float64": Box(np.array([-0.1, -3.0]), np.array([0.3, 1e-3]), dtype=np.float64),
    "box_uint8": Box(0, 200, (3,), np.uint8),  # clipped as float32, then truncated
}


def tensorflow(fn, *args):
    """`fn(*args)` traced as the export traces it (a graph, numpy arrays as constant inputs)."""
    import tensorflow as tf

    return tf.function(fn, autograph=False)(*map(tf.constant, args)).numpy()


def buffer_actions(space, rng, n=64):
    """Actions as the buffer holds them: valid indices (int32), or floats at, near and far beyond the bounds."""
    if isinstance(space, spaces.Discrete):
        return rng.integers(0, space.n, n).astype(np.int32)
    if isinstance(space, spaces.MultiDiscrete):
        return rng.integers(0, space.nvec.reshape(-1), (n, space.nvec.size)).astype(np.int32)
    if isinstance(space, spaces.MultiBinary):
        return rng.integers(0, 2, (n, int(np.prod(space.shape)))).astype(np.int32)
    low, high = space.low.reshape(-1).astype(np.float32), space.high.reshape(-1).astype(np.float32)
    at = [low, high, np.nextafter(low, -np.inf), np.nextafter(high, np.inf), low - 1e3, high + 1e3,
          np.full_like(low, -np.inf), np.full_like(low, np.inf), (low + high) / 2]
    scale = float(np.max(np.abs(np.concatenate([low, high]))))
    return np.concatenate([np.stack(at), rng.normal(0.0, 2 * scale, (n, low.size))]).astype(np.float32)


@pytest.mark.parametrize("name", ACTION_SPACES)
def test_env_actions_in_the_graph_are_numpys(name):
    space = ACTION_SPACES[name]
    actions = buffer_actions(space, np.random.default_rng(0))
    expected = env_actions(space, actions)
    assert expected.dtype == env_action_dtype(space) and expected.shape == (len(actions), *space.shape)
    ops = tensorflow_ops()
    got = tensorflow(lambda a: env_actions(space, a, xp=ops), actions)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    if isinstance(space, spaces.Box):
        assert (expected == space.low).any() and (expected == space.high).any()  # the bounds were reached
    assert all(space.contains(a) for a in (expected if not isinstance(space, spaces.Discrete) else expected.tolist()))


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_normalized_obs_in_the_graph_are_numpys(dtype):
    rng = np.random.default_rng(1)
    rms = RunningMeanStd((4,))
    rms.update(rng.normal([0.0, 5.0, -3.0, 100.0], [1.0, 0.01, 4.0, 30.0], (50, 4)))
    obs = (rng.normal(rms.mean, 8.0 * np.sqrt(rms.var), (200, 4)) if dtype == np.float32
           else rng.integers(0, 256, (200, 4))).astype(dtype)
    ops = tensorflow_ops()
    for compute in (np.float64, np.float32):  # numpy acts in float64, the exported graph computes in float32
        expected = normalized_obs(obs, rms, dtype=compute)
        got = tensorflow(lambda o: normalized_obs(o, rms, xp=ops, dtype=compute), obs)
        assert got.dtype == expected.dtype == np.float32
        if compute == np.float64:
            np.testing.assert_array_equal(got, expected)
        else:  # Grappler (off: exact) rewrites the float32 division by the constant std: 1 ulp
            np.testing.assert_array_max_ulp(got, expected, maxulp=1)
    assert (np.abs(expected) == CLIP_OBS).any() and (np.abs(expected) < CLIP_OBS).any()  # clipped, and not
