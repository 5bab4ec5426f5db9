"""Which gymnasium spaces PPO accepts, and their JSON form for saved models."""

import numpy as np
from gymnasium import spaces


class UnsupportedSpaceError(ValueError):
    """A space the policy cannot consume or produce."""


def space_name(space):
    return f"{type(space).__name__}{_shape_suffix(space)}"


def _shape_suffix(space):
    shape = getattr(space, "shape", None)
    return f"{tuple(shape)}" if shape else ""


def is_image_space(space):
    """uint8 Box with three axes (HWC or CHW): pixels for the Nature CNN."""
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def vector_entry_keys(space):
    """Keys of a Dict/Tuple observation's float vector entries: those observation normalization applies to."""
    return [k for k, s in observation_entries(space).items() if isinstance(s, spaces.Box) and not is_image_space(s)]


def is_structured(space):
    """Dict and Tuple observations: several entries, each encoded by its own space."""
    return isinstance(space, (spaces.Dict, spaces.Tuple))


def observation_entries(space, prefix=""):
    """`{key: leaf space}` of a Dict or Tuple observation, in the space's order.

    Tuple entries are keyed "0", "1", ...; a nested entry joins its keys with a dot
    ("goal.position"). This flat dict is how a structured observation travels through
    the rollout buffer, the normalizer and the network.
    """
    items = space.spaces.items() if isinstance(space, spaces.Dict) else enumerate(space.spaces)
    entries = {}
    for key, sub in items:
        name = f"{prefix}{key}"
        if "." in str(key):
            raise UnsupportedSpaceError(f"observation key {name!r} contains a dot, which nested keys are joined with")
        if is_structured(sub):
            entries.update(observation_entries(sub, prefix=f"{name}."))
        else:
            entries[name] = sub
    if not entries:
        raise UnsupportedSpaceError(f"observation space {space_name(space)} has no entries")
    return entries


def is_leaf_space(space):
    """A space one network input or one action distribution takes: Discrete, MultiDiscrete, MultiBinary, or a
    Box with at least one axis."""
    return (isinstance(space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary))
            or (isinstance(space, spaces.Box) and len(space.shape) >= 1))


def check_observation_space(space):
    leaves = observation_entries(space).items() if is_structured(space) else [(None, space)]
    for key, leaf in leaves:
        if not is_leaf_space(leaf):
            where = f" (entry {key!r})" if key is not None else ""
            raise UnsupportedSpaceError(
                f"unsupported observation space {space_name(leaf)}{where}: use Box (vectors or images), Discrete, "
                "MultiDiscrete, MultiBinary, or a Dict or Tuple of them"
            )


def check_action_space(space):
    if not is_leaf_space(space):
        raise UnsupportedSpaceError(
            f"unsupported action space {space_name(space)}: "
            "use Discrete, MultiDiscrete, MultiBinary or Box"
        )


def _array_to_json(a):
    a = np.asarray(a)
    if a.size and np.all(a == a.flat[0]):
        return {"fill": _scalar(a.flat[0])}
    return {"values": [_scalar(v) for v in a.ravel()]}


def _scalar(v):
    v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return "inf" if v > 0 else "-inf"
    return v


def _array_from_json(d, shape, dtype):
    if "fill" in d:
        return np.full(shape, float(d["fill"]) if isinstance(d["fill"], str) else d["fill"], dtype)
    return np.array([float(v) if isinstance(v, str) else v for v in d["values"]], dtype).reshape(shape)


def space_to_json(space):
    """A JSON-able dict that `space_from_json` turns back into an equal space."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _array_to_json(space.low),
            "high": _array_to_json(space.high),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": np.asarray(space.nvec).tolist(),
            "start": np.asarray(space.start).tolist(),
        }
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Dict):  # [key, space] pairs: the entries' order is part of the space
        return {"type": "Dict", "spaces": [[str(k), space_to_json(v)] for k, v in space.spaces.items()]}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(v) for v in space.spaces]}
    raise UnsupportedSpaceError(f"cannot save space {space_name(space)}")


def space_from_json(d):
    kind = d.get("type")
    if kind == "Box":
        shape = tuple(d["shape"])
        dtype = np.dtype(d["dtype"])
        return spaces.Box(
            _array_from_json(d["low"], shape, dtype), _array_from_json(d["high"], shape, dtype),
            shape=shape, dtype=dtype,
        )
    if kind == "Discrete":
        return spaces.Discrete(d["n"], start=d.get("start", 0))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(d["nvec"], start=d.get("start"))
    if kind == "MultiBinary":
        return spaces.MultiBinary(d["n"])
    if kind == "Dict":
        return spaces.Dict({str(k): space_from_json(v) for k, v in d["spaces"]})
    if kind == "Tuple":
        return spaces.Tuple([space_from_json(v) for v in d["spaces"]])
    raise UnsupportedSpaceError(f"unknown space type {kind!r} in saved model")


def spaces_match(a, b):
    """Same type, shape and (for Box) bounds: a saved model can drive the env."""
    return space_to_json(a) == space_to_json(b)
