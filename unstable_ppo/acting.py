"""One acting step of the policy, and the conversions around it.

Every place that acts — the rollout, the value bootstrap, `PPO.predict`, evaluation —
goes through `policy_step`, so the recurrent case is written once. The network works
on packed float actions `(batch, action_size)`; the buffer stores them as ints or
floats (`buffer_actions`), the env takes them in its own format (`env_actions`).
"""

import numpy as np
from gymnasium import spaces

from unstable_ppo.normalize import NUMPY

DISCRETE_ENV_DTYPE = np.dtype(np.int64)  # a Discrete env's actions, whatever the space's own dtype says


def policy_step(model, act, obs, noise, state=None, starts=None):
    """One compiled acting call: `(actions, values, log_probs, next_state)`.

    A recurrent model reads the LSTM `state` and the episode `starts` (its state is
    zeroed where one begins); a feed-forward one returns `next_state=None`. `obs` is
    as the network sees it (normalized); the actions are the model's packed ones.
    """
    if model.recurrent:
        return act(obs, noise, state, starts)
    return (*act(obs, noise), None)


def draw_noise(rng, model, shape):
    """The sampling noise the compiled acting function turns into actions.

    Drawn in numpy from the run's RNG, so a seeded run acts the same on every backend:
    standard normals for a Gaussian policy, uniforms for the inverse-CDF of categorical ones.
    """
    if model.continuous:
        return rng.standard_normal(shape, dtype=np.float32)
    return rng.uniform(1e-6, 1.0 - 1e-6, shape).astype(np.float32)


def acting_noise(rng, model, n, deterministic):
    """Noise for one acting call of `n` rows outside the rollout: none is drawn for a deterministic
    action (the mode ignores it), so predicting or evaluating never moves a training run's RNG."""
    if deterministic:
        return np.zeros((n, model.noise_size), np.float32)
    return draw_noise(rng, model, (n, model.noise_size))


def obs_dtype(model):
    """The dtype observations are stored and fed in (uint8 pixels stay uint8)."""
    return np.dtype(model.obs_dtype)


def action_layout(action_space, model):
    """(shape, dtype) of one action as the rollout buffer stores it."""
    if isinstance(action_space, spaces.Discrete):
        return (), np.int32
    dtype = np.float32 if model.continuous else np.int32
    return (model.action_size,), dtype


def buffer_actions(action_space, model, packed_actions):
    """`(batch, action_size)` floats from the acting function -> the buffer's layout."""
    if isinstance(action_space, spaces.Discrete):
        return packed_actions[:, 0].astype(np.int32)
    if model.continuous:
        return packed_actions
    return packed_actions.astype(np.int32)


def env_action_dtype(action_space):
    """The dtype of the env's actions (`env_actions`, the exported graph's `action` output)."""
    return DISCRETE_ENV_DTYPE if isinstance(action_space, spaces.Discrete) else action_space.dtype


def env_actions(action_space, actions, xp=NUMPY):
    """Buffer actions -> what the env takes: bounds clipped, `start` offsets added, in the env's dtype.

    The one statement of this rule: acting runs it on numpy arrays (`normalize.NUMPY`); the exported graph
    runs it on TensorFlow tensors by passing as `xp` the same functions as TensorFlow ops
    (`export.graph.tensorflow_ops`).
    """
    space = action_space
    if isinstance(space, spaces.Discrete):
        return xp.asarray(actions, DISCRETE_ENV_DTYPE) + int(space.start)
    actions = xp.reshape(actions, (-1, *space.shape))
    if isinstance(space, spaces.Box):
        return xp.asarray(xp.clip(actions, space.low, space.high), space.dtype)
    actions = xp.asarray(actions, space.dtype)
    if isinstance(space, spaces.MultiDiscrete):
        return actions + space.start
    return actions


def predict(model, normalizer, observation_space, action_space, rng, obs, state=None, episode_start=None,
            deterministic=False):
    """`PPO.predict`: `(actions, state)` for one observation or a batch, in the env's format (checked inputs).

    As Stable-Baselines3's: a feed-forward model returns `state` None and ignores `episode_start`
    (so one loop serves both kinds); a recurrent one starts from zeros when `state` is None.
    """
    if not model.recurrent and state is not None:
        raise ValueError("this model is not recurrent: it has no state to pass (predict returns None for it)")
    obs, single = model.obs_layout.as_batch(obs)
    n = model.obs_layout.batch_size(obs)
    act = model.make_act_function(deterministic=deterministic)
    noise = acting_noise(rng, model, n, deterministic)
    if not model.recurrent:
        packed_actions = policy_step(model, act, normalizer.obs(obs), noise)[0]
        actions = env_actions(action_space, buffer_actions(action_space, model, packed_actions))
        return (actions[0] if single else actions), None
    if state is None:
        state = model.initial_state(1 if single else n)
        if single:
            state = state[0]
    state = np.asarray(state, np.float32)
    given_shape = state.shape
    if single and state.ndim == 1:
        state = state[None]
    if state.shape != (n, model.state_size):
        raise ValueError(f"state has shape {given_shape}; this model needs ({n}, "
                         f"{model.state_size}) for {n} observation(s)")
    starts = np.zeros(n, np.float32) if episode_start is None else (
        np.asarray(episode_start, np.float32).reshape(n))
    packed_actions, _, _, next_state = policy_step(model, act, normalizer.obs(obs), noise, state, starts)
    actions = env_actions(action_space, buffer_actions(action_space, model, packed_actions))
    return (actions[0] if single else actions), next_state.reshape(given_shape)
