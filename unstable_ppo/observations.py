"""Observations as PPO stores and feeds them: one array, or a flat dict of arrays for Dict and Tuple spaces.

A structured observation travels as `{key: array}` (`spaces.observation_entries`: the space's order,
Tuple entries "0", "1", ..., nested keys joined with a dot), each entry in the dtype its encoder
takes. Every place that stores, slices, stacks or feeds observations — the rollout buffer, the
normalizer, the collectors, `predict`, evaluation — goes through an `ObservationLayout`, so a plain
space keeps its single array (and its saved bytes) and a Dict gets the same handling entry by entry.
"""

import numpy as np
from gymnasium import spaces

from unstable_ppo.spaces import is_image_space, is_structured, observation_entries, vector_entry_keys


def entry_dtype(space):
    """The dtype an observation (entry) is stored and fed in: uint8 pixels stay uint8, indices int32."""
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return np.dtype(np.int32)
    return np.dtype(np.uint8) if is_image_space(space) else np.dtype(np.float32)


def entry_shape(space):
    return tuple(space.shape) if space.shape is not None else ()


class ObservationLayout:
    """How observations of `space` are held in numpy: `entries` is `{key: space}`, or None for a plain space."""

    def __init__(self, space):
        self.space = space
        self.entries = observation_entries(space) if is_structured(space) else None
        self.structured = self.entries is not None

    # -- what there is -------------------------------------------------------------

    def dtypes(self):
        if not self.structured:
            return entry_dtype(self.space)
        return {k: entry_dtype(s) for k, s in self.entries.items()}

    def shapes(self):
        if not self.structured:
            return entry_shape(self.space)
        return {k: entry_shape(s) for k, s in self.entries.items()}

    def vector_entries(self):
        """Keys of the float vector entries: those observation normalization applies to."""
        return vector_entry_keys(self.space) if self.structured else []

    def normalizer_shape(self):
        """What `Normalizer` keeps statistics of: the space's shape, or `{key: shape}` of the vector entries."""
        if not self.structured:
            return self.space.shape
        return {k: entry_shape(self.entries[k]) for k in self.vector_entries()}

    # -- numpy helpers ---------------------------------------------------------------

    def map(self, fn, *observations):
        """`fn` applied to the array, or to each entry (of several observations alike)."""
        if not self.structured:
            return fn(*observations)
        return {k: fn(*(o[k] for o in observations)) for k in self.entries}

    def convert(self, obs):
        """An env's (batched) observation -> this layout, in the stored dtypes (a Tuple, nested dicts: flattened)."""
        if not self.structured:
            return np.asarray(obs, entry_dtype(self.space))
        flat = _flatten(self.space, obs)
        return {k: np.asarray(flat[k], entry_dtype(s)) for k, s in self.entries.items()}

    def stack(self, rows):
        """Single observations (as `info["final_obs"]` holds them) -> one batch."""
        if not self.structured:
            return np.asarray(rows, entry_dtype(self.space))
        flat = [_flatten(self.space, row) for row in rows]
        return {k: np.asarray([f[k] for f in flat], entry_dtype(s)) for k, s in self.entries.items()}

    def zeros(self, prefix):
        """Storage for `prefix` (e.g. `(num_steps, num_envs)`) observations."""
        return self.map(lambda shape, dtype: np.zeros(tuple(prefix) + shape, dtype), self.shapes(), self.dtypes())

    def batch_size(self, obs):
        return len(obs if not self.structured else next(iter(obs.values())))

    def float_arrays(self, obs):
        """The float arrays of an observation: the ones that can hold NaN."""
        arrays = [obs] if not self.structured else list(obs.values())
        return [a for a in arrays if a.dtype.kind == "f"]

    def as_batch(self, obs):
        """`predict`'s input -> `(batch, single)`: one observation or a batch of them, checked against the space."""
        if not self.structured:
            shape = entry_shape(self.space)
            obs = np.asarray(obs, entry_dtype(self.space))
            if obs.shape == shape:
                return obs[None], True
            if obs.shape[1:] != shape:
                raise ValueError(f"observation shape {obs.shape} does not match the model's observation space "
                                 f"{shape} (or a batch of it)")
            return obs, False
        if not isinstance(obs, (dict, tuple, list)):
            raise ValueError(f"this model takes {type(self.space).__name__} observations, "
                             f"not {type(obs).__name__}")
        try:
            flat = _flatten(self.space, obs)
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(f"observation does not fit the model's space {self.space}: missing entry {e}") from None
        arrays = {k: np.asarray(flat[k], entry_dtype(s)) for k, s in self.entries.items()}
        single = None
        for k, s in self.entries.items():
            shape = entry_shape(s)
            one = arrays[k].shape == shape
            if not one and arrays[k].shape[1:] != shape:
                raise ValueError(f"observation entry {k!r} has shape {arrays[k].shape}; the model's space "
                                 f"is {shape} (or a batch of it)")
            if single is not None and one != single:
                raise ValueError("observation entries mix a single observation and a batch")
            single = one
        if single:
            arrays = {k: a[None] for k, a in arrays.items()}
        sizes = {len(a) for a in arrays.values()}
        if len(sizes) > 1:
            raise ValueError(f"observation entries have different batch sizes {sorted(sizes)}")
        return arrays, single


def _flatten(space, obs, prefix=""):
    """A gymnasium Dict/Tuple observation (nested dicts and tuples) -> `{key: value}` as `observation_entries`."""
    items = ((k, obs[k]) for k in space.spaces) if isinstance(space, spaces.Dict) else enumerate(obs)
    subspaces = space.spaces if isinstance(space, spaces.Dict) else dict(enumerate(space.spaces))
    if isinstance(space, spaces.Tuple) and len(obs) != len(space.spaces):
        raise IndexError(f"{len(space.spaces)} entries expected, got {len(obs)}")
    flat = {}
    for key, value in items:
        sub = subspaces[key]
        name = f"{prefix}{key}"
        if is_structured(sub):
            flat.update(_flatten(sub, value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat
