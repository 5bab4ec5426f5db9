"""Vector environments the way PPO wants them."""

import gymnasium as gym
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.wrappers.vector import RecordEpisodeStatistics


def make_vec_env(env_id, num_envs=1, vectorization_mode="sync", env_kwargs=None):
    """`num_envs` copies of `env_id`, SAME_STEP autoreset, episode statistics recorded.

    SAME_STEP autoreset means no step of the rollout is wasted on a reset; the
    final observation of an episode arrives in `info["final_obs"]`.
    """
    if vectorization_mode not in ("sync", "async"):
        raise ValueError(f"unknown vectorization_mode {vectorization_mode!r}: use 'sync' or 'async'")
    env = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode=vectorization_mode,
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP, "copy": False},
        **(env_kwargs or {}),
    )
    return RecordEpisodeStatistics(env)


def as_vector_env(env, num_envs, vectorization_mode="sync"):
    """An env id, a `gym.Env` or a `VectorEnv` -> `(VectorEnv, env_id or None)`."""
    if isinstance(env, str):
        return make_vec_env(env, num_envs, vectorization_mode), env
    if isinstance(env, VectorEnv):
        if "episode" not in _wrapper_names(env):
            env = RecordEpisodeStatistics(env)
        return env, _env_id(env)
    if isinstance(env, gym.Env):
        vec = gym.vector.SyncVectorEnv(
            [lambda: env], autoreset_mode=AutoresetMode.SAME_STEP, copy=False
        )
        return RecordEpisodeStatistics(vec), _env_id(env)
    raise TypeError(f"env must be an env id, a gymnasium.Env or a VectorEnv, not {type(env).__name__}")


def autoreset_mode(env):
    mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    return AutoresetMode(mode) if isinstance(mode, str) else mode


def _wrapper_names(env):
    names = set()
    while True:
        if isinstance(env, RecordEpisodeStatistics):
            names.add("episode")
        if not hasattr(env, "env") or env.env is env:
            return names
        env = env.env


def _env_id(env):
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else None
