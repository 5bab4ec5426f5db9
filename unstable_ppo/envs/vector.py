"""Vector environments the way PPO wants them: SAME_STEP autoreset, a Monitor on every env, built by
the family that takes the id (`unstable_ppo.envs.families`) with the run's `EnvOptions`."""

import dataclasses
import functools
import os

import gymnasium as gym
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.wrappers import RecordVideo, TimeAwareObservation, TimeLimit
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from unstable_ppo.config import VECTORIZATION_MODES, EnvOptions, check_split
from unstable_ppo.envs.families import EnvFamily, family_needed, family_of
from unstable_ppo.envs.gather import GatherVectorEnv, split_envs
from unstable_ppo.envs.monitor import Monitor
from unstable_ppo.envs.supervisor import SupervisedVectorEnv, TagEnvErrors


def make_vec_env(env_id: str, num_envs: int = 1, vectorization_mode: str = "sync", options: EnvOptions | None = None,
                 monitor_dir: str | os.PathLike | None = None, training: bool = True, monitor_append: bool = False,
                 max_episode_steps: int | None = None, video_dir: str | os.PathLike | None = None,
                 video_episodes: int | None = None, max_env_restarts: int | None = None, env_timeout: float = 60.0,
                 gather_per_worker: int = 1, first_index: int = 0) -> VectorEnv:
    """`num_envs` copies of `env_id`, SAME_STEP autoreset, every episode recorded.

    SAME_STEP autoreset means no step of the rollout is wasted on a reset; the
    final observation of an episode arrives in `info["final_obs"]`. Each env sits on
    a `Monitor`, which reports finished episodes in `info["episode"]` and, with
    `monitor_dir`, writes them to `{monitor_dir}/{i}.monitor.csv`. The id's family
    builds each env (Atari ids get the standard preprocessing, `unstable_ppo.envs.atari`);
    `training=False` builds the evaluation variant (real score, whole games). `options`
    (`EnvOptions`: gymnasium.make's `env_kwargs`, the time feature) apply to every env.
    `vectorization_mode`: "sync" (in-process), "async" (one subprocess per env) or a
    family's own vector env ("ale": ale-py's C++ vector env, Atari only).
    `max_episode_steps` adds a time limit (in agent steps). `video_dir` records the first
    `video_episodes` (default: every) episode of env 0 as mp4 (needs
    `render_mode="rgb_array"` in `env_kwargs`, and moviepy).
    With `max_env_restarts` set, a failing env (an exception, a dead or silent worker
    after `env_timeout` s) is rebuilt up to that many times (`supervisor.SupervisedVectorEnv`).
    `gather_per_worker=M` > 1 steps the envs in M worker processes of num_envs/M envs
    each (`gather.GatherVectorEnv`, on top of `vectorization_mode` "sync"). `first_index`
    numbers the envs from there (Monitor files, error messages): a Ray actor's share.
    """
    options = options or EnvOptions()
    if vectorization_mode not in VECTORIZATION_MODES:
        raise ValueError(
            f"unknown vectorization_mode {vectorization_mode!r}: use one of {', '.join(VECTORIZATION_MODES)}"
        )
    family = family_of(env_id)  # registers the ALE games too
    spec = family.spec(env_id)  # an unknown id fails here, in this process, with gymnasium's message
    needed = family_needed(env_id, vectorization_mode)
    if needed:
        raise ValueError(f"vectorization_mode {vectorization_mode!r} needs {needed}, not {env_id!r}")
    family.check(env_id, options, vectorization_mode, video_dir)
    if gather_per_worker != 1 and vectorization_mode != "sync":
        raise ValueError(f"gather_per_worker={gather_per_worker} steps 'sync' vector envs in worker processes: "
                         f"it cannot be combined with vectorization_mode {vectorization_mode!r}")
    blocks = None
    if gather_per_worker != 1:
        check_split(num_envs, gather_per_worker)
        blocks = [[first_index + i for i in block] for block in split_envs(num_envs, gather_per_worker)]
    builder = EnvBuilder(env_id, family, options, monitor_dir, training, monitor_append, max_episode_steps,
                         video_dir, video_episodes)

    def build(rebuilt=False):
        make = dataclasses.replace(builder, monitor_append=True) if rebuilt else builder  # continue its CSVs
        if vectorization_mode in family.native_modes:
            return family.make_native_vector_env(env_id, num_envs, training, monitor_dir, make.monitor_append,
                                                 max_episode_steps, options)
        if blocks is not None:
            spaces_only = dataclasses.replace(make, monitor_dir=None, monitor_append=False, video_dir=None,
                                              video_episodes=None)
            env = GatherVectorEnv(
                [functools.partial(_vector_of, "sync", block, make) for block in blocks], blocks,
                functools.partial(spaces_only.make, first_index),
                timeout=env_timeout,
            )
        else:
            env = _vector_of(vectorization_mode, range(first_index, first_index + num_envs), make)
        env.spec = spec
        env.records_episodes = True  # each env's Monitor puts its episodes in info["episode"]
        return env

    if max_env_restarts is None or vectorization_mode in family.unsupervised_modes:
        return build()
    return SupervisedVectorEnv(build, max_restarts=max_env_restarts, timeout=env_timeout)


@dataclasses.dataclass(frozen=True)
class EnvBuilder:
    """How to build env `index` of a vector env: picklable, so gathering workers and async envs build their own."""

    env_id: str
    family: EnvFamily
    options: EnvOptions
    monitor_dir: str | os.PathLike | None
    training: bool
    monitor_append: bool
    max_episode_steps: int | None
    video_dir: str | os.PathLike | None
    video_episodes: int | None

    def make(self, index):
        filename = None if self.monitor_dir is None else os.path.join(self.monitor_dir, f"{index}.monitor.csv")
        env = self.family.make_env(self.env_id, self.training, filename, self.monitor_append, self.options)
        if self.options.time_feature:
            env = with_time_feature(env, self.env_id)
        if self.max_episode_steps is not None:
            env = TimeLimit(env, self.max_episode_steps)
        if self.video_dir is not None and index == 0:
            episodes = self.video_episodes
            env = RecordVideo(env, self.video_dir, disable_logger=True,
                              episode_trigger=lambda episode: episodes is None or episode < episodes)
        return TagEnvErrors(env, index)


def _vector_of(vectorization_mode, indices, builder):
    """A SAME_STEP Sync/AsyncVectorEnv of the envs `indices` (env 0 alone records video).

    It may run in a fresh gathering worker process, so it registers the env id first.
    """
    family_of(builder.env_id)  # registers the ALE games (and imports a "module:Env" id's module)
    vector_env = gym.vector.SyncVectorEnv if vectorization_mode == "sync" else gym.vector.AsyncVectorEnv
    return vector_env(
        [functools.partial(builder.make, i) for i in indices],
        autoreset_mode=AutoresetMode.SAME_STEP,
        copy=False,
    )


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


def as_vector_env(env, num_envs, vectorization_mode="sync", options: EnvOptions | None = None, **make_kwargs):
    """An env id, a `gym.Env` or a `VectorEnv` -> `(VectorEnv, env_id or None)`.

    `make_kwargs` (monitor_dir, training, ...) go to `make_vec_env` for env ids; an env already built is
    used as it is (the model's observation-space check catches a mismatch). Of the `options`, the time
    feature wraps a `gym.Env` too; a `VectorEnv` must bring the time in its observations itself (the
    model's observation space is checked against it).
    """
    options = options or EnvOptions()
    if isinstance(env, str):
        return make_vec_env(env, num_envs, vectorization_mode, options, **make_kwargs), env
    if isinstance(env, VectorEnv):
        if "episode" not in _wrapper_names(env):
            env = RecordEpisodeStatistics(env)
        return env, _env_id(env)
    if isinstance(env, gym.Env):
        env = Monitor(env)
        if options.time_feature:
            env = with_time_feature(env)
        vec = gym.vector.SyncVectorEnv(
            [lambda: env], autoreset_mode=AutoresetMode.SAME_STEP, copy=False
        )
        return vec, _env_id(env)
    raise TypeError(f"env must be an env id, a gymnasium.Env or a VectorEnv, not {type(env).__name__}")


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
