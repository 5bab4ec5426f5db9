"""Env families: which env ids a family takes, and how it builds them.

Every env the package builds comes from an id, through the family that takes it: Atari games (ALE ids,
`unstable_ppo.envs.atari`) and, for every other id, Gymnasium's registry (`gym.make`; a `module:EnvId` id
imports its module first, Gymnasium's own syntax). A new family is one module with an `EnvFamily`
subclass, `register_family(...)`, and a flagfile in `configs/` if it has bundled settings. A family whose
ids carry a prefix uses `prefix/EnvId` with its own name as prefix (never `:`, which Gymnasium's
`module:EnvId` owns).
"""

import importlib
import os

import gymnasium as gym

from unstable_ppo.envs.monitor import Monitor

# gymnasium's optional simulators; this package's extra of the same name installs each (setup.py).
EXTRAS = ("mujoco", "box2d")


class EnvFamily:
    """Gymnasium's registered ids, built with `gym.make(id, **env_kwargs)`: the default family.

    A subclass overrides what differs: `takes`, `check`, `make_env`, a native vector env for a
    vectorization mode of its own (`native_modes`, `make_native_vector_env`), its bundled flagfile and
    the preprocessing an exported policy's env must do.
    """

    name = "gymnasium"
    description = "a Gymnasium env id"  # in errors: "vectorization_mode 'ale' needs an Atari env id, ..."
    native_modes = ()  # vectorization modes this family steps with a vector env of its own
    unsupervised_modes = ()  # native modes whose envs no Python code steps (nothing for a supervisor to restart)
    flagfile = None  # a flagfile in configs/ for every id of the family (configs/<id>.flags comes first)

    def takes(self, env_id: str) -> bool:
        return True

    def spec(self, env_id):
        """The id's `EnvSpec`: an unknown id fails here, in this process, with the family's own message."""
        return gym.spec(registered_id(env_id))

    def check(self, env_id, options, vectorization_mode, video_dir=None):
        """One-line `ValueError`s for what this family cannot build (before any env is made)."""

    def make_env(self, env_id, training, monitor_file, monitor_append, options) -> gym.Env:
        """One env with a `Monitor` on the raw env (the real episodes), before any generic wrapper."""
        return Monitor(make_env(env_id, **(options.env_kwargs or {})), monitor_file, append=monitor_append)

    def make_native_vector_env(self, env_id, num_envs, training, monitor_dir, monitor_append, max_episode_steps,
                               options):
        raise NotImplementedError(f"the {self.name} family has no vector env of its own")

    def preprocessing(self, env_id):
        """What an exported policy's env must do before the policy sees an observation (policy.json), or None."""
        return None


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


_FAMILIES = [EnvFamily()]  # the first that takes an id builds it; Gymnasium's, which takes every id, last


def register_family(family: EnvFamily) -> None:
    """Put `family` before the families registered earlier (Gymnasium's stays last)."""
    _FAMILIES.insert(0, family)


def family_of(env_id: str) -> EnvFamily:
    """The family that builds `env_id` (a `module:EnvId` id has its module imported first)."""
    name = registered_id(env_id)
    return next(family for family in _FAMILIES if family.takes(name))


def families():
    return list(_FAMILIES)


def family_needed(env_id, mode):
    """What a vectorization mode needs that `env_id` is not ("an Atari env id" for "ale"), or None if it fits:
    a family's own mode is for its ids only."""
    if mode in ("sync", "async") or (":" not in env_id and mode in family_of(env_id).native_modes):
        return None
    return next((f.description for f in _FAMILIES if mode in f.native_modes), None)


def config_file(config_dir, env_id):
    """The bundled flagfile for `env_id`: `configs/<id>.flags`, else its family's."""
    path = os.path.join(config_dir, env_id.replace("/", "_") + ".flags")
    if os.path.isfile(path):
        return path
    if ":" in env_id:  # a module:EnvId id has no bundled settings but its own file's
        return None
    flagfile = family_of(env_id).flagfile
    return os.path.join(config_dir, flagfile) if flagfile else None
