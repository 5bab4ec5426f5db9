"""Vector environments the way PPO wants them."""

import functools
import importlib
import os

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import concatenate, iterate
from gymnasium.wrappers import RecordVideo, TimeLimit
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from unstable_ppo.faults import SupervisedVectorEnv, TagEnvErrors, tagged
from unstable_ppo.monitor import Monitor

VECTORIZATION_MODES = ("sync", "async", "ale")


def make_vec_env(env_id, num_envs=1, vectorization_mode="sync", env_kwargs=None, monitor_dir=None,
                 training=True, monitor_append=False, max_episode_steps=None, video_dir=None, video_episodes=None,
                 max_env_restarts=None, env_timeout=60.0):
    """`num_envs` copies of `env_id`, SAME_STEP autoreset, every episode recorded.

    SAME_STEP autoreset means no step of the rollout is wasted on a reset; the
    final observation of an episode arrives in `info["final_obs"]`. Each env sits on
    a `Monitor`, which reports finished episodes in `info["episode"]` and, with
    `monitor_dir`, writes them to `{monitor_dir}/{i}.monitor.csv`. Atari ids get the
    standard preprocessing (`unstable_ppo.atari`); `training=False` builds the
    evaluation variant (real score, whole games). `vectorization_mode`: "sync"
    (in-process), "async" (one subprocess per env) or "ale" (ale-py's C++ vector
    env, Atari only). `max_episode_steps` adds a time limit (in agent steps).
    `video_dir` records the first `video_episodes` (default: every) episode of env 0
    as mp4 (needs `render_mode="rgb_array"` in `env_kwargs`, and moviepy).
    With `max_env_restarts` set, a failing env (an exception, a dead or silent worker
    after `env_timeout` s) is rebuilt up to that many times (`faults.SupervisedVectorEnv`).
    """
    from unstable_ppo.atari import is_atari, make_ale_vector_env

    if vectorization_mode not in VECTORIZATION_MODES:
        raise ValueError(
            f"unknown vectorization_mode {vectorization_mode!r}: use one of {', '.join(VECTORIZATION_MODES)}"
        )
    atari = is_atari(registered_id(env_id))  # registers the ALE games too
    spec = gym.spec(registered_id(env_id))  # an unknown id fails here, in this process, with gymnasium's message
    if vectorization_mode == "ale":
        if not atari:
            raise ValueError(f"vectorization_mode 'ale' needs an Atari env id, not {env_id!r}")
        if env_kwargs or video_dir:
            raise ValueError("vectorization_mode 'ale' takes no env_kwargs or video_dir: use 'sync'")

    def build(rebuilt=False):
        append = monitor_append or rebuilt  # a rebuilt env continues its Monitor CSV
        if vectorization_mode == "ale":
            return make_ale_vector_env(env_id, num_envs, training, monitor_dir, append, max_episode_steps)
        env_fns = [
            functools.partial(
                _make_env, env_id, i, env_kwargs or {}, monitor_dir, atari, training, append,
                max_episode_steps, video_dir if i == 0 else None, video_episodes,
            )
            for i in range(num_envs)
        ]
        if vectorization_mode == "sync":
            env = SyncEnvs(env_fns)
        else:
            env = gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP, copy=False)
        env.spec = spec
        env.records_episodes = True  # each env's Monitor puts its episodes in info["episode"]
        return env

    if max_env_restarts is None:
        return build()
    return SupervisedVectorEnv(build, max_restarts=max_env_restarts, timeout=env_timeout)


def _make_env(env_id, index, env_kwargs, monitor_dir, atari, training, monitor_append, max_episode_steps,
              video_dir, video_episodes):
    filename = None if monitor_dir is None else os.path.join(monitor_dir, f"{index}.monitor.csv")
    if atari:
        from unstable_ppo.atari import make_atari_env

        env = make_atari_env(env_id, training, filename, monitor_append, **env_kwargs)
    else:
        env = Monitor(gym.make(env_id, **env_kwargs), filename, append=monitor_append)
    if max_episode_steps is not None:
        env = TimeLimit(env, max_episode_steps)
    if video_dir is not None:
        env = RecordVideo(
            env, video_dir, disable_logger=True,
            episode_trigger=lambda episode: video_episodes is None or episode < video_episodes,
        )
    return TagEnvErrors(env, index)


def as_vector_env(env, num_envs, vectorization_mode="sync", **make_kwargs):
    """An env id, a `gym.Env` or a `VectorEnv` -> `(VectorEnv, env_id or None)`.

    `make_kwargs` (monitor_dir, training, ...) go to `make_vec_env` for env ids.
    """
    if isinstance(env, str):
        return make_vec_env(env, num_envs, vectorization_mode, **make_kwargs), env
    if isinstance(env, VectorEnv):
        if "episode" not in _wrapper_names(env):
            env = RecordEpisodeStatistics(env)
        return env, _env_id(env)
    if isinstance(env, gym.Env):
        env = Monitor(env)
        return SyncEnvs([lambda: env]), _env_id(env)
    raise TypeError(f"env must be an env id, a gymnasium.Env or a VectorEnv, not {type(env).__name__}")


class SyncEnvs(gym.vector.SyncVectorEnv):
    """gymnasium's `SyncVectorEnv` with SAME_STEP autoreset and no copies, stepped more cheaply.

    The results, the info layout (`final_obs`, `final_info`, `_key` masks) and the
    errors are the same; a vector step skips what gymnasium spends on generality:
    Box observations are written straight into the batch array (no `concatenate`),
    empty info dicts are not merged, the autoreset branches of other modes are not
    tested per env, and an env under `TagEnvErrors` is stepped below it, with its
    errors tagged here in the same way. About 10% of the vector step for 8 CartPole
    envs (benchmarks/README.md, "The env layer").
    """

    def __init__(self, env_fns):
        super().__init__(env_fns, copy=False, autoreset_mode=AutoresetMode.SAME_STEP)
        tagged_envs = [isinstance(env, TagEnvErrors) for env in self.envs]
        self._steps = [env.env.step if tag else env.step for env, tag in zip(self.envs, tagged_envs)]
        self._tags = [env.index if tag else None for env, tag in zip(self.envs, tagged_envs)]
        self._obs_rows = isinstance(self.single_observation_space, spaces.Box)

    def step(self, actions):
        actions = iterate(self.action_space, actions)
        infos = {}
        env_obs, rewards = self._env_obs, self._rewards
        terminations, truncations = self._terminations, self._truncations
        rows = self._observations if self._obs_rows else None
        for i, (step, action) in enumerate(zip(self._steps, actions, strict=True)):
            try:
                obs, reward, terminated, truncated, info = step(action)
            except Exception as e:
                if self._tags[i] is None:
                    raise
                raise tagged(e, self._tags[i]) from e
            rewards[i], terminations[i], truncations[i] = reward, terminated, truncated
            if terminated or truncated:
                infos = self._add_info(infos, {"final_obs": obs, "final_info": info}, i)
                obs, info = self.envs[i].reset()
            env_obs[i] = obs
            if rows is not None:
                rows[i] = obs
            if info:
                infos = self._add_info(infos, info, i)
        if rows is None:
            self._observations = concatenate(self.single_observation_space, env_obs, self._observations)
        self._autoreset_envs = terminations | truncations
        return self._observations, rewards.copy(), terminations.copy(), truncations.copy(), infos


def registered_id(env_id):
    """`"package.module:Env-v0"` (gymnasium's `make` syntax) imports the module that registers the env."""
    if ":" not in env_id:
        return env_id
    module, name = env_id.split(":", 1)
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"env id {env_id!r}: cannot import {module!r} to register it ({e})") from None
    return name


def autoreset_mode(env):
    mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    return AutoresetMode(mode) if isinstance(mode, str) else mode


def _wrapper_names(env):
    names = set()
    while True:
        if isinstance(env, RecordEpisodeStatistics) or vars(env).get("records_episodes"):
            names.add("episode")
        if not hasattr(env, "env") or env.env is env:
            return names
        env = env.env


def _env_id(env):
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else None
