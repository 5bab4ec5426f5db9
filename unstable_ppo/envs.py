"""Vector environments the way PPO wants them."""

import functools
import os

import gymnasium as gym
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from unstable_ppo.monitor import Monitor


def make_vec_env(env_id, num_envs=1, vectorization_mode="sync", env_kwargs=None, monitor_dir=None):
    """`num_envs` copies of `env_id`, SAME_STEP autoreset, episode statistics recorded.

    SAME_STEP autoreset means no step of the rollout is wasted on a reset; the
    final observation of an episode arrives in `info["final_obs"]`. With
    `monitor_dir`, env `i` writes its episodes to `{monitor_dir}/{i}.monitor.csv`.
    """
    if vectorization_mode not in ("sync", "async"):
        raise ValueError(f"unknown vectorization_mode {vectorization_mode!r}: use 'sync' or 'async'")
    spec = gym.spec(env_id)  # an unknown id fails here, in this process, with gymnasium's message
    vector_env = gym.vector.SyncVectorEnv if vectorization_mode == "sync" else gym.vector.AsyncVectorEnv
    env = vector_env(
        [functools.partial(_make_env, env_id, i, env_kwargs or {}, monitor_dir) for i in range(num_envs)],
        autoreset_mode=AutoresetMode.SAME_STEP,
        copy=False,
    )
    env.spec = spec
    return RecordEpisodeStatistics(env)


def _make_env(env_id, index, env_kwargs, monitor_dir):
    env = gym.make(env_id, **env_kwargs)
    if monitor_dir is not None:
        env = Monitor(env, os.path.join(monitor_dir, f"{index}.monitor.csv"))
    return env


def as_vector_env(env, num_envs, vectorization_mode="sync", monitor_dir=None):
    """An env id, a `gym.Env` or a `VectorEnv` -> `(VectorEnv, env_id or None)`.

    `monitor_dir` applies to env ids, whose envs this function builds.
    """
    if isinstance(env, str):
        return make_vec_env(env, num_envs, vectorization_mode, monitor_dir=monitor_dir), env
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
