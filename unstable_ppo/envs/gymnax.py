"""The gymnax family: JAX-native envs (classic control, MinAtar, bsuite...) as `gymnax/<EnvId>` ids.

gymnax (the `gymnax` extra) writes its envs as pure JAX functions, `reset(key, params)` and
`step(key, state, action, params)`, so that a compiled trainer can step them inside one XLA program.
Here each one is also a `gymnasium.Env` (`GymnaxEnv`), so that everything the Python-stepped path
does (training on every backend, evaluation, play, the runner, export's checks) takes a gymnax id as it
takes a Gymnasium id. The prefix is the family's name, `gymnax/CartPole-v1`: Gymnasium's
`module:EnvId` syntax keeps its colon.

`env_kwargs` set fields of the env's `EnvParams` (for example `max_steps_in_episode`). The episode's
time limit is the env's own (`EnvParams.max_steps_in_episode`), reported as truncation.

`vectorization_mode="compiled"` (`--vec_env=compiled`) is the family's own mode: the compiled trainer
(`unstable_ppo/compiled.py`, jax backend) steps the envs inside its XLA program. Its vector env is then
the Gymnasium copies (for evaluation, play and the spaces) plus the Monitor CSVs the trainer writes.
"""

import functools
import os

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

from unstable_ppo.envs.families import EnvFamily, register_family
from unstable_ppo.envs.monitor import Monitor, MonitorFile

PREFIX = "gymnax/"


def _gymnax():
    try:
        import gymnax
    except ImportError:
        raise ValueError('gymnax ids need the gymnax extra: pip install -e ".[gymnax]"') from None
    return gymnax


def gymnax_name(env_id):
    """`gymnax/CartPole-v1` -> `CartPole-v1`, checked against gymnax's registry (a one-line error names it)."""
    name = env_id[len(PREFIX):]
    gymnax = _gymnax()
    if name not in gymnax.registered_envs:
        raise ValueError(f"unknown gymnax env {name!r} in {env_id!r}; gymnax has: {', '.join(gymnax.registered_envs)}")
    return name


def make_jax_env(env_id, env_kwargs=None):
    """`(env, params)`: the gymnax env of `env_id` and its `EnvParams` with `env_kwargs` applied."""
    env, params = _gymnax().make(gymnax_name(env_id))
    env_kwargs = dict(env_kwargs or {})
    unknown = sorted(set(env_kwargs) - set(vars(params)))
    if unknown:
        raise ValueError(f"{env_id} does not take these env_kwargs: {', '.join(unknown)} (its EnvParams fields: "
                         f"{', '.join(vars(params))})")
    return env, params.replace(**env_kwargs)


def to_gymnasium_space(space):
    from gymnax.environments.spaces import gymnax_space_to_gym_space

    try:
        return gymnax_space_to_gym_space(space)
    except NotImplementedError as e:
        raise ValueError(f"unsupported gymnax space: {e}") from None


@functools.cache
def _compiled(env_id):
    """Jitted reset and step of a gymnax env, shared by all copies (its params are an argument)."""
    import jax

    env, _ = make_jax_env(env_id)

    def step(key, state, action, params):
        obs, state, reward, terminated, info = env.step_env(key, state, action, params)
        return obs, state, reward, terminated, env.is_truncated(state, params)

    return jax.jit(env.reset_env), jax.jit(step)


class GymnaxEnv(gym.Env):
    """A gymnax env as a `gymnasium.Env`: no auto-reset, `terminated` and `truncated` apart, numpy out.

    The env's randomness comes from a JAX key drawn from the `seed` of `reset` (else from numpy's
    entropy), split at every reset and step.
    """

    metadata = {"render_modes": []}

    def __init__(self, env_id, **env_kwargs):
        import jax

        self._jax = jax
        self.env, self.params = make_jax_env(env_id, env_kwargs)
        self.observation_space = to_gymnasium_space(self.env.observation_space(self.params))
        self.action_space = to_gymnasium_space(self.env.action_space(self.params))
        self._reset, self._step = _compiled(env_id)
        self._key = None
        self._state = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None or self._key is None:
            self._key = self._jax.random.key(int(self.np_random.integers(2**31)) if seed is None else seed)
        self._key, key = self._jax.random.split(self._key)
        obs, self._state = self._reset(key, self.params)
        return np.asarray(obs), {}

    def step(self, action):
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        self._key, key = self._jax.random.split(self._key)
        obs, self._state, reward, terminated, truncated = self._step(key, self._state, np.asarray(action),
                                                                     self.params)
        return np.asarray(obs), float(reward), bool(terminated), bool(truncated), {}


class GymnaxFamily(EnvFamily):
    """`gymnax/<EnvId>`: gymnax's JAX-native envs, stepped one by one as Gymnasium envs here."""

    name = "gymnax"
    description = "a gymnax env id (gymnax/<EnvId>)"
    native_modes = ("compiled",)
    unsupervised_modes = ("compiled",)  # the compiled trainer steps its envs inside XLA

    def takes(self, env_id):
        return env_id.startswith(PREFIX)

    def spec(self, env_id):
        env, params = make_jax_env(env_id)
        return EnvSpec(id=env_id, entry_point=GymnaxEnv, kwargs={"env_id": env_id},
                       max_episode_steps=getattr(params, "max_steps_in_episode", None))

    def check(self, env_id, options, vectorization_mode, video_dir=None):
        gymnax_name(env_id)
        if video_dir is not None:
            raise ValueError(f"{env_id}: gymnax envs do not render, so no video can be recorded")
        if vectorization_mode == "compiled" and options.time_feature:
            raise ValueError("time_feature is not supported by the compiled trainer yet: use vectorization_mode "
                             "'sync'")

    def make_env(self, env_id, training, monitor_file, monitor_append, options):
        env = GymnaxEnv(env_id, **(options.env_kwargs or {}))
        env.spec = self.spec(env_id)
        return Monitor(env, monitor_file, append=monitor_append)


    def make_native_vector_env(self, env_id, num_envs, training, monitor_dir, monitor_append, max_episode_steps,
                               options):
        """The Gymnasium copies, which the compiled trainer does not step (evaluation does), with the Monitor
        CSVs of the training envs, which it writes (`monitor_files`)."""
        def make():
            env = GymnaxEnv(env_id, **(options.env_kwargs or {}))
            env.spec = self.spec(env_id)
            env = Monitor(env, None)
            return gym.wrappers.TimeLimit(env, max_episode_steps) if max_episode_steps else env

        files = None
        if training and monitor_dir is not None:
            files = [MonitorFile(os.path.join(monitor_dir, f"{i}.monitor.csv"), env_id, monitor_append)
                     for i in range(num_envs)]
        vec = CompiledVectorEnv([make for _ in range(num_envs)], env_id, files)
        vec.spec = self.spec(env_id)
        return vec


class CompiledVectorEnv(gym.vector.SyncVectorEnv):
    """A gymnax id's vector env in the compiled mode: Gymnasium copies for evaluation and the spaces; the
    compiled trainer steps its own copies and writes their episodes to `monitor_files` (one per env, or None)."""

    def __init__(self, env_fns, env_id, monitor_files=None):
        super().__init__(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        self.records_episodes = True  # each copy's Monitor puts its episodes in info["episode"]
        self.compiled_env_id = env_id
        self.monitor_files = monitor_files

    def close_extras(self, **kwargs):
        for f in self.monitor_files or ():
            f.close()
        super().close_extras(**kwargs)


register_family(GymnaxFamily())
