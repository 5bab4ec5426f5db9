"""`PPO.save` and `PPO.load`: a model directory is `model.keras` plus `ppo.json`.

`model.keras` holds the architecture, weights and optimizer state, loaded back in
Keras's safe mode; `ppo.json` holds everything else a run needs to continue (the
settings, spaces, counters, the sampling RNG's state, the normalizer's statistics).
Nothing in either file can run code. Each file is written under a temporary name and
renamed into place (`checkpoint.write_atomically`); every field read back is checked,
so a damaged file is a one-line error that names it, not a traceback deep in Keras.
"""

import math
import os
import zipfile

import keras
import numpy as np

from unstable_ppo.version import __version__
from unstable_ppo.backend import BACKEND, tensorflow_left_unloaded
from unstable_ppo.checkpoint import (
    FORMAT_VERSION,
    META_FILE,
    MODEL_FILE,
    _metadata_field,
    _one_line,
    read_metadata,
    resolve_checkpoint,
    write_atomically,
    write_json_atomically,
)
from unstable_ppo.faults import check_finite_weights
from unstable_ppo.model import ActorCritic
from unstable_ppo.spaces import check_action_space, check_observation_space, space_from_json, space_to_json, spaces_match


def save(ppo, path, extra=None):
    """Write `path/model.keras` and `path/ppo.json` (see `PPO.save`); returns `path`."""
    check_finite_weights(ppo.model)
    os.makedirs(path, exist_ok=True)
    with tensorflow_left_unloaded():
        write_atomically(os.path.join(path, MODEL_FILE), ppo.model.save, suffix=".keras")
    meta = {
        "format": "unstable_ppo",
        "format_version": FORMAT_VERSION,
        "unstable_ppo_version": __version__,
        "keras_backend": BACKEND,
        "env_id": ppo.env_id,
        "seed": ppo.seed,
        "observation_space": space_to_json(ppo.observation_space),
        "action_space": space_to_json(ppo.action_space),
        "hyperparameters": ppo.hp.to_json(),
        "num_timesteps": ppo.num_timesteps,
        "num_updates": ppo.num_updates,
        "rng_state": _jsonable(ppo.rng.bit_generator.state),
        "normalizer": ppo.normalizer.to_json() if ppo.normalizer.active else None,
        "kl_adaptation": {"kl_beta": ppo.kl_beta, "lr_multiplier": ppo.lr_multiplier},
        "run": extra or {},
    }
    write_json_atomically(os.path.join(path, META_FILE), meta)
    return path


def load(cls, path, env=None, seed=None, verbose=0, best=False, tensorboard_log=None):
    """A `cls` (a `PPO`) from a model directory (see `PPO.load`)."""
    path = resolve_checkpoint(path, best=best)
    meta_path = os.path.join(path, META_FILE)
    model_path = os.path.join(path, MODEL_FILE)
    for p in (meta_path, model_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"not an unstable_ppo model directory: {p} is missing")
    meta = read_metadata(meta_path)
    for key in ("hyperparameters", "observation_space", "action_space"):
        if key not in meta:
            raise ValueError(f"corrupt model metadata {meta_path}: {key!r} is missing")
    model = load_actor_critic(model_path)

    def field(name):
        return _metadata_field(meta_path, name)

    with field("seed"):
        saved_seed = meta.get("seed")
        if saved_seed is not None and (isinstance(saved_seed, bool) or not isinstance(saved_seed, int)):
            raise ValueError(f"{saved_seed!r} is not an integer")
    with field("hyperparameters"):
        hp = meta["hyperparameters"]
        if not isinstance(hp, dict):
            raise ValueError(f"expected an object, got {type(hp).__name__}")
        # How the saved run split its work is no part of the model: this machine may have fewer devices.
        hp = {k: v for k, v in hp.items() if k not in ("gather_per_worker", "worker_num")}
        ppo = cls(None, seed=seed if seed is not None else saved_seed, verbose=verbose,
                  tensorboard_log=tensorboard_log, **hp)
    ppo.model = model
    for name, attribute in (("observation_space", "observation_space"), ("action_space", "action_space")):
        with field(name):
            if not isinstance(meta[name], dict):
                raise ValueError(f"expected an object, got {type(meta[name]).__name__}")
            space = space_from_json(meta[name])
            (check_observation_space if name == "observation_space" else check_action_space)(space)
            if not spaces_match(space, getattr(model, attribute)):
                raise ValueError(f"{space} does not match the {getattr(model, attribute)} of {model_path}")
            setattr(ppo, attribute, space)
    with field("hyperparameters"):
        ppo.hp.check_spaces(ppo.observation_space, ppo.action_space)
        for name in ("recurrent", "hidden_layer_size", "shared_lstm", "lstm_head_sizes"):
            if ppo.hp.recurrent and getattr(ppo.hp, name) != getattr(model, name):
                raise ValueError(f"{name}={getattr(ppo.hp, name)!r} does not match the model's "
                                 f"{getattr(model, name)!r} in {model_path}")
        if ppo.hp.recurrent != model.recurrent:
            raise ValueError(f"recurrent={ppo.hp.recurrent!r} does not match the model's "
                             f"{model.recurrent!r} in {model_path}")
    with field("env_id"):
        ppo.env_id = meta.get("env_id")
        if ppo.env_id is not None and not isinstance(ppo.env_id, str):
            raise ValueError(f"{ppo.env_id!r} is not a string")
    for name in ("num_timesteps", "num_updates"):
        with field(name):
            value = meta.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{value!r} is not a count")
            setattr(ppo, name, value)
    with field("run"):
        ppo.run_info = meta.get("run") or {}
        if not isinstance(ppo.run_info, dict):
            raise ValueError(f"expected an object, got {type(ppo.run_info).__name__}")
    with field("kl_adaptation"):
        kl_adaptation = meta.get("kl_adaptation") or {}
        ppo.lr_multiplier = float(kl_adaptation.get("lr_multiplier", 1.0))
        if not (math.isfinite(ppo.lr_multiplier) and ppo.lr_multiplier > 0):
            raise ValueError(f"lr_multiplier {ppo.lr_multiplier!r} is not a positive number")
    rng_state = meta.get("rng_state")
    if seed is None and rng_state is not None:
        with field("rng_state"):
            if not isinstance(rng_state, dict):
                raise ValueError(f"expected an object, got {type(rng_state).__name__}")
            # A state of another bit generator (another numpy's default) is ignored: the fresh one is kept.
            if rng_state.get("bit_generator") == type(ppo.rng.bit_generator).__name__:
                ppo.rng.bit_generator.state = rng_state
    if env is not None:
        try:
            ppo.set_env(env)
        except ValueError as e:
            raise ValueError(f"cannot use the model in {path} on this env: {e}") from None
    ppo._make_normalizer()
    with field("normalizer"):
        data = meta.get("normalizer")
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"expected an object, got {type(data).__name__}")
        if ppo.normalizer.active:
            if not data:
                raise ValueError("missing, but normalize_obs or normalize_reward is on")
            ppo.normalizer.load_json(data, ppo.model.obs_layout.normalizer_shape())
    return ppo


def load_actor_critic(model_path):
    """The ActorCritic in a `.keras` file, deserialized in Keras's safe mode (no Python code, no pickle)."""
    if not zipfile.is_zipfile(model_path):
        raise ValueError(f"corrupt or foreign model file {model_path}: not a .keras (zip) archive, "
                         f"or a truncated one")
    try:
        model = keras.models.load_model(
            model_path, custom_objects={"ActorCritic": ActorCritic}, safe_mode=True
        )
    except Exception as e:  # Keras raises many types for a bad archive
        raise ValueError(f"corrupt or foreign model file {model_path}: {_one_line(e)}") from None
    if not isinstance(model, ActorCritic):
        raise ValueError(f"{model_path} holds a {type(model).__name__}, not an unstable_ppo ActorCritic")
    return model


def _jsonable(state):
    """numpy's bit-generator state, as plain JSON types."""
    if isinstance(state, dict):
        return {k: _jsonable(v) for k, v in state.items()}
    if isinstance(state, np.integer):
        return int(state)
    return state
