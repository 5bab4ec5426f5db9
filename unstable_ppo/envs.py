"""Vector environments the way PPO wants them."""

import functools
import importlib
import os

import gymnasium as gym
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.wrappers import RecordVideo, TimeAwareObservation, TimeLimit
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from unstable_ppo.atari import is_atari, make_ale_vector_env, make_atari_env
from unstable_ppo.config import VECTORIZATION_MODES, check_split
from unstable_ppo.faults import SupervisedVectorEnv, TagEnvErrors
from unstable_ppo.gather import GatherVectorEnv, split_envs
from unstable_ppo.monitor import Monitor



def make_vec_env(env_id: str, num_envs: int = 1, vectorization_mode: str = "sync", env_kwargs: dict | None = None,
                 monitor_dir: str | os.PathLike | None = None, training: bool = True, monitor_append: bool = False,
                 max_episode_steps: int | None = None, video_dir: str | os.PathLike | None = None,
                 video_episodes: int | None = None, max_env_restarts: int | None = None, env_timeout: float = 60.0,
                 gather_per_worker: int = 1, first_index: int = 0, time_feature: bool = False) -> VectorEnv:
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
    `gather_per_worker=M` > 1 steps the envs in M worker processes of num_envs/M envs
    each (`gather.GatherVectorEnv`, on top of `vectorization_mode` "sync"). `first_index`
    numbers the envs from there (Monitor files, error messages): a Ray actor's share.
    `time_feature` appends the elapsed fraction of the time limit to each (vector) observation.
    """
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
    if time_feature and atari:
        raise ValueError(f"time_feature appends the time to vector observations: {env_id}'s are Atari frames")
    if gather_per_worker != 1 and vectorization_mode != "sync":
        raise ValueError(f"gather_per_worker={gather_per_worker} steps 'sync' vector envs in worker processes: "
                         f"it cannot be combined with vectorization_mode {vectorization_mode!r}")
    blocks = None
    if gather_per_worker != 1:
        check_split(num_envs, gather_per_worker)
        blocks = [[first_index + i for i in block] for block in split_envs(num_envs, gather_per_worker)]

    def build(rebuilt=False):
        append = monitor_append or rebuilt  # a rebuilt env continues its Monitor CSV
        if vectorization_mode == "ale":
            return make_ale_vector_env(env_id, num_envs, training, monitor_dir, append, max_episode_steps)
        settings = (env_id, env_kwargs or {}, monitor_dir, atari, training, append, max_episode_steps, video_dir,
                    video_episodes, time_feature)
        if blocks is not None:
            env = GatherVectorEnv(
                [functools.partial(_vector_of, "sync", block, *settings) for block in blocks], blocks,
                functools.partial(_make_env, env_id, first_index, env_kwargs or {}, None, atari, training, False,
                                  max_episode_steps, None, None, time_feature),
                timeout=env_timeout,
            )
        else:
            env = _vector_of(vectorization_mode, range(first_index, first_index + num_envs), *settings)
        env.spec = spec
        env.records_episodes = True  # each env's Monitor puts its episodes in info["episode"]
        return env

    if max_env_restarts is None:
        return build()
    return SupervisedVectorEnv(build, max_restarts=max_env_restarts, timeout=env_timeout)


def _vector_of(vectorization_mode, indices, env_id, env_kwargs, monitor_dir, atari, training, append,
               max_episode_steps, video_dir, video_episodes, time_feature):
    """A SAME_STEP Sync/AsyncVectorEnv of the envs `indices` (env 0 alone records video).

    It may run in a fresh gathering worker process, so it registers the env id first.
    """
    is_atari(registered_id(env_id))  # registers the ALE games (and imports a "module:Env" id's module)
    vector_env = gym.vector.SyncVectorEnv if vectorization_mode == "sync" else gym.vector.AsyncVectorEnv
    return vector_env(
        [
            functools.partial(
                _make_env, env_id, i, env_kwargs, monitor_dir, atari, training, append,
                max_episode_steps, video_dir if i == 0 else None, video_episodes, time_feature,
            )
            for i in indices
        ],
        autoreset_mode=AutoresetMode.SAME_STEP,
        copy=False,
    )


# gymnasium's optional simulators; this package's extra of the same name installs each (setup.py).
EXTRAS = ("mujoco", "box2d")


def make_env(env_id, **env_kwargs):
    """`gym.make`, with a missing MuJoCo or Box2D named by the extra that installs it."""
    try:
        return gym.make(env_id, **env_kwargs)
    except TypeError as e:
        if not env_kwargs:
            raise
        raise ValueError(f"{env_id} does not take these env_kwargs: {e}") from None
    except gym.error.DependencyNotInstalled as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        extra = next((x for x in EXTRAS if x in message.lower()), None)
        if extra is None:
            raise
        raise gym.error.DependencyNotInstalled(
            f"{env_id} needs the {extra} extra: pip install -e \".[{extra}]\" (gymnasium says: {message})"
        ) from None


def _make_env(env_id, index, env_kwargs, monitor_dir, atari, training, monitor_append, max_episode_steps,
              video_dir, video_episodes, time_feature):
    filename = None if monitor_dir is None else os.path.join(monitor_dir, f"{index}.monitor.csv")
    if atari:
        env = make_atari_env(env_id, training, filename, monitor_append, **env_kwargs)
    else:
        env = Monitor(make_env(env_id, **env_kwargs), filename, append=monitor_append)
    if time_feature:
        env = with_time_feature(env, env_id)
    if max_episode_steps is not None:
        env = TimeLimit(env, max_episode_steps)
    if video_dir is not None:
        env = RecordVideo(
            env, video_dir, disable_logger=True,
            episode_trigger=lambda episode: video_episodes is None or episode < video_episodes,
        )
    return TagEnvErrors(env, index)


def with_time_feature(env, env_id=None):
    """`env` with the elapsed fraction of its time limit, t / max_episode_steps in [0, 1], appended to its
    vector observation (gymnasium's `TimeAwareObservation`; the RL Zoo's TimeFeatureWrapper gives 1 - t/T).

    Without it, a time-out looks to the value function like any other state (Pardo et al., 2018).
    """
    name = env_id or getattr(env.spec, "id", None) or type(env.unwrapped).__name__
    space = env.observation_space
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        raise ValueError(f"time_feature appends the time to a vector observation: {name}'s observation space "
                         f"{space} is not a 1-D Box")
    try:
        return TimeAwareObservation(env, flatten=True, normalize_time=True)
    except ValueError:  # gymnasium: no TimeLimit and no spec.max_episode_steps
        raise ValueError(f"time_feature needs a time limit, and {name} has none: register it with "
                         f"max_episode_steps, or wrap it in gymnasium's TimeLimit") from None


def as_vector_env(env, num_envs, vectorization_mode="sync", time_feature=False, **make_kwargs):
    """An env id, a `gym.Env` or a `VectorEnv` -> `(VectorEnv, env_id or None)`.

    `make_kwargs` (env_kwargs, monitor_dir, training, ...) go to `make_vec_env` for env ids; an env
    already built is used as it is (the model's observation-space check catches a mismatch). `time_feature`
    wraps an id's envs and a `gym.Env`; a `VectorEnv` must bring the time in its observations itself
    (the model's observation space is checked against it).
    """
    if isinstance(env, str):
        return make_vec_env(env, num_envs, vectorization_mode, time_feature=time_feature, **make_kwargs), env
    if isinstance(env, VectorEnv):
        if "episode" not in _wrapper_names(env):
            env = RecordEpisodeStatistics(env)
        return env, _env_id(env)
    if isinstance(env, gym.Env):
        env = Monitor(env)
        if time_feature:
            env = with_time_feature(env)
        vec = gym.vector.SyncVectorEnv(
            [lambda: env], autoreset_mode=AutoresetMode.SAME_STEP, copy=False
        )
        return vec, _env_id(env)
    raise TypeError(f"env must be an env id, a gymnasium.Env or a VectorEnv, not {type(env).__name__}")


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
