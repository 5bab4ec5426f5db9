"""Observation encoders and torsos: raw observations -> the features the actor-critic's heads read.

    obs -> ObservationEncoder -> torso (MLP | Nature CNN)    (the rest: `networks.ActorCriticNetwork`)

`ObservationEncoder` turns any supported observation into float features (one-hot indices,
1/255 pixels, a CNN per image entry of a Dict or Tuple observation); a user-defined Keras layer
can take its place (`encoder=`, or `policy_encoder=` and `value_encoder=`), checked here so that
saving and loading work. The torsos (`mlp_torso`, `nature_cnn_torso`, `small_cnn_torso`) follow.

Every layer's initial weights are drawn with numpy (`SeededOrthogonal`), seeds from one stream
per network (`seed_stream`), so a seed means the same weights on every backend. Orthogonal
initialisation with the gains of the PPO reference code: sqrt(2) in the torso (`HIDDEN_GAIN`).

Plain Keras: nothing here knows the loss or a backend's trainer.
"""

import importlib
import math

import keras
import numpy as np
from keras import initializers, layers, ops

from unstable_ppo.spaces import is_image_space, is_structured, observation_entries
from gymnasium import spaces

HIDDEN_GAIN = math.sqrt(2.0)


@keras.saving.register_keras_serializable(package="unstable_ppo")
class SeededOrthogonal(initializers.Initializer):
    """Orthogonal initialisation (Saxe et al., 2014) drawn with numpy.

    Keras's own initialisers draw from each backend's RNG, so one seed gives three
    different networks. Drawing with numpy makes a seed mean the same initial
    weights — and so, up to float rounding, the same run — on every backend.
    """

    def __init__(self, gain=1.0, seed=None):
        self.gain = float(gain)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def __call__(self, shape, dtype=None):
        rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
        a = self._rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))  # a uniform draw over orthogonal matrices
        if rows < cols:
            q = q.T
        return ops.convert_to_tensor((self.gain * q).reshape(shape), dtype=dtype or "float32")

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


def seeded_dense(units, gain, seeds, activation=None, name=None):
    """A dense layer, orthogonal kernel (`gain`, the next seed of `seeds`), zero bias."""
    return layers.Dense(
        units,
        activation=activation,
        kernel_initializer=SeededOrthogonal(gain, seed=next(seeds)),
        bias_initializer="zeros",
        name=name,
    )


def seed_stream(seed):
    """Distinct initialiser seeds, one per layer, all following from `seed`."""
    rng = np.random.default_rng(seed)
    while True:
        yield int(rng.integers(2**31))


class ObservationEncoder(layers.Layer):
    """Raw env observations -> float features: one-hot for Discrete, 1/255 and HWC for pixels.

    A Dict or Tuple observation (a dict of entries, `observations.ObservationLayout`) is encoded
    entry by entry, each as its space calls for, and the flattened features concatenated:
    vector Box as is, uint8 images by a CNN of their own (the Nature CNN, or `small_cnn` below its
    36x36 minimum), Discrete and MultiDiscrete one-hot, MultiBinary as is.
    """

    def __init__(self, observation_space, seeds=None, **kwargs):
        super().__init__(**kwargs)
        self.space = observation_space
        self.entries = observation_entries(observation_space) if is_structured(observation_space) else None
        self.image = self.entries is None and is_image_space(observation_space)
        # Frame-stacked Atari is (4, 84, 84): the channel axis is the short one.
        self.channels_first = self.image and _channels_first(observation_space)
        self.cnns = {}
        if self.entries is not None:
            for key, space in self.entries.items():
                if is_image_space(space):
                    name = f"cnn_{len(self.cnns)}"
                    hwc = _hwc_shape(space)
                    self.cnns[key] = (nature_cnn_torso(seeds, name) if min(hwc[:2]) >= NATURE_CNN_MIN_SIZE
                                      else small_cnn_torso(seeds, name))

    def build(self, input_shape):
        for key, cnn in self.cnns.items():
            cnn.build((None, *_hwc_shape(self.entries[key])))
        self.built = True

    def call(self, obs):
        if self.entries is None:
            return _encode_entry(self.space, obs, self.channels_first)
        features = []
        for key, space in self.entries.items():
            x = _encode_entry(space, obs[key], is_image_space(space) and _channels_first(space))
            if key in self.cnns:
                x = self.cnns[key](x)
            features.append(ops.reshape(x, (-1, _feature_size(space) if key not in self.cnns else x.shape[-1])))
        return ops.concatenate(features, axis=-1) if len(features) > 1 else features[0]

    def compute_output_shape(self, input_shape):
        space = self.space
        if self.entries is not None:
            size = sum(self.cnns[k].compute_output_shape((None, *_hwc_shape(s)))[-1] if k in self.cnns
                       else _feature_size(s) for k, s in self.entries.items())
            return (None, size)
        if isinstance(space, spaces.Discrete):
            return (input_shape[0], int(space.n))
        if isinstance(space, spaces.MultiDiscrete):
            return (input_shape[0], _feature_size(space))
        if self.channels_first:
            return (input_shape[0], *input_shape[2:], input_shape[1])
        return tuple(input_shape)


# The Nature CNN's 8x8/4, 4x4/2, 3x3/1 windows need at least 36 pixels a side.
NATURE_CNN_MIN_SIZE = 36


def _channels_first(space):
    return space.shape[0] < space.shape[-1]


def _hwc_shape(space):
    shape = tuple(space.shape)
    return (*shape[1:], shape[0]) if _channels_first(space) else shape


def _feature_size(space):
    """Features of one encoded (non-image) entry: one-hot widths for indices, else its size."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    return int(np.prod(space.shape))


def _encode_entry(space, obs, channels_first=False):
    """One observation (entry) -> float features, before any CNN."""
    if isinstance(space, spaces.Discrete):
        return ops.one_hot(ops.cast(obs, "int32") - int(space.start), int(space.n))
    if isinstance(space, spaces.MultiDiscrete):
        nvec, start = np.ravel(space.nvec), np.ravel(space.start)
        flat = ops.reshape(ops.cast(obs, "int32"), (-1, len(nvec)))
        return ops.concatenate([ops.one_hot(flat[:, i] - int(start[i]), int(n)) for i, n in enumerate(nvec)], axis=-1)
    x = ops.cast(obs, "float32")
    if is_image_space(space):
        x = x / 255.0
        if channels_first:
            x = ops.transpose(x, (0, 2, 3, 1))
    return x


def mlp_torso(hidden_sizes, activation, seeds, name):
    return keras.Sequential(
        [layers.Flatten()] + [seeded_dense(h, HIDDEN_GAIN, seeds, activation) for h in hidden_sizes],
        name=name,
    )


def nature_cnn_torso(seeds, name):
    """Mnih et al. (2015): three convolutions and a 512-unit layer, all ReLU."""

    def conv(filters, kernel, stride):
        return layers.Conv2D(
            filters, kernel, strides=stride, activation="relu",
            kernel_initializer=SeededOrthogonal(HIDDEN_GAIN, seed=next(seeds)),
        )

    return keras.Sequential(
        [conv(32, 8, 4), conv(64, 4, 2), conv(64, 3, 1), layers.Flatten(),
         seeded_dense(512, HIDDEN_GAIN, seeds, "relu")],
        name=name,
    )


def small_cnn_torso(seeds, name):
    """For images below the Nature CNN's minimum (MiniGrid's 7x7 views): three 3x3 'same' convolutions,
    the last two with stride 2, and a 128-unit layer, all ReLU."""

    def conv(filters, stride):
        return layers.Conv2D(
            filters, 3, strides=stride, padding="same", activation="relu",
            kernel_initializer=SeededOrthogonal(HIDDEN_GAIN, seed=next(seeds)),
        )

    return keras.Sequential(
        [conv(16, 1), conv(32, 2), conv(64, 2), layers.Flatten(), seeded_dense(128, HIDDEN_GAIN, seeds, "relu")],
        name=name,
    )


def user_encoders(encoder, policy_encoder, value_encoder):
    """`(encoder, value_encoder)`: the policy's (or shared) user-defined encoder and a separate value one, each
    a Keras layer whose class saves and loads (else a one-line error now, not at the first save)."""
    if encoder is not None and (policy_encoder is not None or value_encoder is not None):
        raise ValueError("pass either encoder= (one encoder for both networks) or policy_encoder= and "
                         "value_encoder=, not both")
    if (policy_encoder is None) != (value_encoder is None):
        raise ValueError("policy_encoder= and value_encoder= go together (encoder= shares one)")
    if policy_encoder is not None:
        encoder = policy_encoder
    return tuple(None if e is None else load_encoder(e) if isinstance(e, dict) else check_encoder(e)
                 for e in (encoder, value_encoder))


def check_encoder(layer):
    """A user-defined encoder: a Keras layer whose class is registered and whose configuration rebuilds it."""
    if not isinstance(layer, layers.Layer):
        raise ValueError(f"an encoder must be a Keras layer, not {type(layer).__name__}")
    cls = type(layer)
    builtin = cls.__module__.split(".")[0] == "keras"
    if not builtin and keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is not cls:
        raise ValueError(
            f"encoder class {cls.__name__} (module {cls.__module__}) is not registered: decorate it with "
            "@keras.saving.register_keras_serializable(package=...) so model.keras can save and load it")
    try:
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer), safe_mode=True)
    except Exception as e:  # noqa: BLE001 - whatever breaks the round trip breaks saving
        raise ValueError(f"encoder {cls.__name__} cannot be rebuilt from its configuration (get_config and "
                         f"__init__ must match; no Lambda layers): {str(e).splitlines()[0] if str(e) else e!r}"
                         ) from None
    return layer


def load_encoder(config):
    """A saved encoder's configuration -> the layer. Its module is imported if its class is not registered yet
    (as `--env_id=module:Name` imports the env's); one line names what is missing."""
    name = config.get("registered_name") or config.get("class_name")
    module = config.get("module")
    if keras.saving.get_registered_object(name) is None and module and module.split(".")[0] != "keras":
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"the model's encoder {name} comes from module {module}, which cannot be imported "
                             f"({e}): install it or put it on PYTHONPATH") from None
        if keras.saving.get_registered_object(name) is None:
            raise ValueError(f"module {module} does not register the model's encoder {name} "
                             "(@keras.saving.register_keras_serializable)")
    # Built by the network on symbolic observations: Keras's own `build_from_config` would call a `build`
    # the layer may not define.
    return keras.saving.deserialize_keras_object({k: v for k, v in config.items() if k != "build_config"})


def encoder_output_shape(encoder, obs_layout, space):
    """Build `encoder` on symbolic observations (`obs_layout`'s, of `space`); the shape of its features, checked."""
    dtypes, shapes = obs_layout.dtypes(), obs_layout.shapes()
    if isinstance(shapes, dict):
        inputs = {k: keras.KerasTensor((None, *shapes[k]), dtype=str(dtypes[k])) for k in shapes}
    else:
        inputs = keras.KerasTensor((None, *shapes), dtype=str(dtypes))
    try:
        out = encoder(inputs)
    except Exception as e:  # noqa: BLE001 - any failure of the user's layer is theirs to see, in one line
        raise ValueError(f"encoder {type(encoder).__name__} fails on this env's observations "
                         f"({space}): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(out, keras.KerasTensor) or len(out.shape) != 2 or out.shape[-1] is None:
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"encoder {type(encoder).__name__} must return one (batch, features) tensor "
                         f"with a known feature size, not {shape}")
    return tuple(out.shape)
