"""The network zoo: observation encoders, torsos and the actor-critic network.

    obs -> ObservationEncoder -> torso (MLP | Nature CNN) [-> LSTM -> MLP] -> policy head -> distribution params
                                 torso (own or shared)    [-> LSTM -> MLP] -> value head  -> V(s)

With `recurrent=True` an LSTM sits between each torso and its head (one LSTM shared
by both heads by default), optionally followed by dense layers of its own per head
(`lstm_head_sizes`, as sb3-contrib's RecurrentPPO has after its LSTM). Recurrent models take `(obs, state, episode_starts)`:
rows ordered sequence by sequence, `sequence_length` steps each, the state zeroed
before every step that starts an episode — in acting (sequences of one step) and in
training alike, so both compute the same thing.

Orthogonal initialisation with the gains of the PPO reference code: sqrt(2) in the
torso, 0.01 on the policy head (near-uniform first policy), 1 on the value head. With
`ortho_init=False` the dense and convolution layers instead start as PyTorch's defaults do
(kernel and bias uniform in ±1/sqrt(fan_in)), Stable-Baselines3's `ortho_init=False`,
which some of the RL Zoo's tuned settings rely on.

Plain Keras: nothing here knows the loss or a backend's trainer. The trainable PPO
model, `unstable_ppo.model.ActorCritic`, is this network with both mixed in.
"""

import importlib
import math

import keras
import numpy as np
from keras import initializers, layers, ops

from unstable_ppo.distributions import make_distribution, param_size
from unstable_ppo.observations import ObservationLayout
from unstable_ppo.spaces import (
    check_action_space,
    check_observation_space,
    is_image_space,
    is_structured,
    observation_entries,
    space_from_json,
    space_to_json,
)
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


def _dense(units, gain, seeds, activation=None, name=None):
    return layers.Dense(
        units,
        activation=activation,
        kernel_initializer=SeededOrthogonal(gain, seed=next(seeds)),
        bias_initializer="zeros",
        name=name,
    )


def _seed_stream(seed):
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
        [layers.Flatten()] + [_dense(h, HIDDEN_GAIN, seeds, activation) for h in hidden_sizes],
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
         _dense(512, HIDDEN_GAIN, seeds, "relu")],
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
        [conv(16, 1), conv(32, 2), conv(64, 2), layers.Flatten(), _dense(128, HIDDEN_GAIN, seeds, "relu")],
        name=name,
    )


def _lstm_cell(units, seeds, name):
    """An LSTM cell, orthogonal kernels (gain 1) drawn by numpy, forget-gate bias 1."""
    return layers.LSTMCell(
        units,
        kernel_initializer=SeededOrthogonal(1.0, seed=next(seeds)),
        recurrent_initializer=SeededOrthogonal(1.0, seed=next(seeds)),
        unit_forget_bias=True,
        name=name,
    )


def run_lstm(cell, features, h, c, episode_starts):
    """Unroll `cell` over `features` (batch, time, F) from state `(h, c)`.

    The input projection of every step is one matmul up front; only the recurrent one
    runs in the time loop, an `ops.scan` (a Python loop unrolled into the graph compiles
    for tens of seconds on XLA). Before step t the state is zeroed where
    `episode_starts[:, t]` is 1. Returns the outputs (batch, time, units) and the final `(h, c)`.
    """
    steps, units = features.shape[1], cell.units
    z_inputs = ops.matmul(ops.reshape(features, (-1, features.shape[-1])), cell.kernel) + cell.bias
    z_inputs = ops.transpose(ops.reshape(z_inputs, (-1, steps, 4 * units)), (1, 0, 2))  # time first
    recurrent_kernel = cell.recurrent_kernel

    def step(carry, inputs):
        h, c = carry
        z_input, start = inputs
        keep = 1.0 - start[:, None]
        h, c = h * keep, c * keep
        z = z_input + ops.matmul(h, recurrent_kernel)
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)  # Keras's gate order
        c = cell.recurrent_activation(z_f) * c + cell.recurrent_activation(z_i) * cell.activation(z_c)
        h = cell.recurrent_activation(z_o) * cell.activation(c)
        # The per-step outputs mirror the carry: Keras's TensorFlow `scan` (3.15) assumes they match.
        return (h, c), (h, c)

    starts = ops.transpose(episode_starts)
    if steps == 1:  # acting: no loop (a TensorFlow while_loop alone costs more than the step)
        (h, c), _ = step((h, c), (z_inputs[0], starts[0]))
        return h[:, None], h, c
    (h, c), (outputs, _) = ops.scan(step, (h, c), (z_inputs, starts))
    return ops.transpose(outputs, (1, 0, 2)), h, c


@keras.saving.register_keras_serializable(package="unstable_ppo")
class ActorCriticNetwork(keras.Model):
    """Policy and value networks in one Keras model.

    `call(obs)` returns `(flat_params, value)`: the distribution parameters the
    action distribution is built from, and V(obs). Gaussian policies carry a
    state-independent `log_std` variable unless `nn_std` asks the head for it, or
    `use_sde` for gSDE's (features, actions) matrix `sde_log_std` (`StateDependentNoise`).

    A recurrent model's `call((obs, state, episode_starts), sequence_length=L)` also
    returns the state after each sequence. `state` is one float array per row,
    `[h, c]` (or `[h_pi, c_pi, h_vf, c_vf]` with separate LSTMs), `state_size` wide;
    only the first row of each sequence is read.
    """

    def __init__(
        self,
        observation_space,
        action_space,
        net="auto",
        hidden_sizes=(64, 64),
        activation="tanh",
        shared_net=None,
        nn_std=False,
        log_std_init=0.0,
        use_sde=False,
        ortho_init=True,
        recurrent=False,
        hidden_layer_size=128,
        shared_lstm=True,
        lstm_head_sizes=(),
        seed=None,
        encoder=None,
        policy_encoder=None,
        value_encoder=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(observation_space, dict):
            observation_space = space_from_json(observation_space)
        if isinstance(action_space, dict):
            action_space = space_from_json(action_space)
        check_observation_space(observation_space)
        check_action_space(action_space)
        encoder, value_encoder = _user_encoders(encoder, policy_encoder, value_encoder)
        if net == "auto":
            net = "cnn" if is_image_space(observation_space) and encoder is None else "mlp"
        if net not in ("mlp", "cnn"):
            raise ValueError(f"unknown net {net!r}: use 'auto', 'mlp' or 'cnn'")
        if net == "cnn" and encoder is not None:
            raise ValueError("a user-defined encoder is followed by the MLP torso: net='cnn' does not apply")
        if net == "cnn" and not is_image_space(observation_space):
            raise ValueError("net='cnn' needs image observations (uint8 Box with 3 axes); Dict and Tuple "
                             "observations get a CNN per image entry with net='auto'")
        if value_encoder is not None and shared_net:
            raise ValueError("separate policy and value encoders need separate torsos: drop shared_net=True")
        self.recurrent = bool(recurrent)
        self.hidden_layer_size = int(hidden_layer_size)
        self.shared_lstm = bool(shared_lstm)
        self.lstm_head_sizes = tuple(int(u) for u in lstm_head_sizes)
        if self.lstm_head_sizes and not self.recurrent:
            raise ValueError("lstm_head_sizes applies to recurrent models only")
        if self.recurrent:
            if self.hidden_layer_size <= 0:
                raise ValueError(f"hidden_layer_size must be a positive integer, got {hidden_layer_size!r}")
            if self.shared_lstm and shared_net is False:
                raise ValueError("a shared LSTM needs a shared torso: drop shared_net=False, "
                                 "or pass shared_lstm=False for separate policy and value networks")
            if self.shared_lstm:
                shared_net = True
        if shared_net is None:  # the CNN is shared, as in the Atari reference; MLPs are not
            shared_net = net == "cnn"
        self.observation_space = observation_space
        self.action_space = action_space
        self.net = net
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        self.shared_net = bool(shared_net)
        self.continuous = isinstance(action_space, spaces.Box)
        if nn_std and not self.continuous:
            raise ValueError("nn_std applies to Box action spaces only")
        self.nn_std = bool(nn_std)
        self.log_std_init = float(log_std_init)
        if use_sde and not self.continuous:
            raise ValueError("use_sde (gSDE) applies to Box action spaces only")
        if use_sde and self.nn_std:
            raise ValueError("use_sde (gSDE) learns its own noise matrix: it cannot be combined with nn_std")
        self.use_sde = bool(use_sde)
        self.ortho_init = bool(ortho_init)

        self.obs_layout = ObservationLayout(observation_space)
        self.seed = seed
        seeds = _seed_stream(seed)
        self.user_encoder = encoder is not None
        self.encoder = encoder if encoder is not None else ObservationEncoder(observation_space, seeds, name="encoder")
        if value_encoder is not None:
            self.value_encoder = value_encoder
        make_torso = (
            (lambda name: nature_cnn_torso(seeds, name))
            if net == "cnn"
            else (lambda name: mlp_torso(self.hidden_sizes, activation, seeds, name))
        )
        self.policy_torso = make_torso("policy_torso" if not self.shared_net else "torso")
        self.value_torso = self.policy_torso if self.shared_net else make_torso("value_torso")
        n_params = param_size(action_space)
        # Noise per env for one sample (== the head's width, the log-std part aside).
        self.noise_size = n_params
        # Numbers per env in one action: 1 for Discrete, len(nvec), n bits, or the Box size.
        self.action_size = (
            1 if isinstance(action_space, spaces.Discrete)
            else len(np.ravel(action_space.nvec)) if isinstance(action_space, spaces.MultiDiscrete)
            else n_params
        )
        self.policy_head = _dense(n_params * (2 if self.nn_std else 1), 0.01, seeds, name="policy_head")
        self.value_head = _dense(1, 1.0, seeds, name="value_head")
        self.state_size = 0
        if self.recurrent:
            self.policy_lstm = _lstm_cell(self.hidden_layer_size, seeds, "lstm" if self.shared_lstm else "policy_lstm")
            self.value_lstm = self.policy_lstm if self.shared_lstm else _lstm_cell(
                self.hidden_layer_size, seeds, "value_lstm")
            self.state_size = 2 * self.hidden_layer_size * (1 if self.shared_lstm else 2)
            # Dense layers after the LSTM, one stack per head even with a shared LSTM.
            self.policy_lstm_head = mlp_torso(self.lstm_head_sizes, activation, seeds, "policy_lstm_head")
            self.value_lstm_head = mlp_torso(self.lstm_head_sizes, activation, seeds, "value_lstm_head")
        if self.continuous and not self.nn_std and not self.use_sde:
            self.log_std = self.add_weight(
                shape=(n_params,),
                initializer=initializers.Constant(self.log_std_init),
                name="log_std",
            )
        self.build((None, *observation_space.shape) if observation_space.shape is not None else None)
        if not self.ortho_init:
            self._uniform_init(seed)

    def build(self, input_shape):
        if self.user_encoder or is_structured(self.observation_space):
            x = self._encoder_output_shape(self.encoder)
        else:
            x = self.encoder.compute_output_shape(input_shape)
        x_vf = self._encoder_output_shape(self.value_encoder) if hasattr(self, "value_encoder") else x
        for torso, features in {id(self.policy_torso): (self.policy_torso, x),
                                id(self.value_torso): (self.value_torso, x_vf)}.values():
            torso.build(features)
            h = torso.compute_output_shape(features)
        if self.recurrent:
            for cell in {id(c): c for c in (self.policy_lstm, self.value_lstm)}.values():
                cell.build(h)
            h = (h[0], self.hidden_layer_size)
            for head in (self.policy_lstm_head, self.value_lstm_head):
                head.build(h)
            h = self.policy_lstm_head.compute_output_shape(h)
        self.policy_head.build(h)
        self.value_head.build(h)
        if self.use_sde:
            # gSDE's sigma: one std per (policy feature, action); SB3's full_std, initialised at log_std_init.
            self.sde_log_std = self.add_weight(
                shape=(h[-1], self.action_size),
                initializer=initializers.Constant(self.log_std_init),
                name="sde_log_std",
            )
            self.noise_size = h[-1] * self.action_size  # the exploration matrix, per env
        self.built = True

    def _encoder_output_shape(self, encoder):
        """Build `encoder` on symbolic observations; the shape of its features, checked."""
        space = self.observation_space
        dtypes, shapes = self.obs_layout.dtypes(), self.obs_layout.shapes()
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

    def call(self, inputs, training=False, sequence_length=1):
        if self.recurrent:
            obs, state, episode_starts = inputs
        else:
            obs = inputs
        if isinstance(obs, (tuple, list)):  # structured observations, as the compiled acting calls pass them
            obs = dict(zip(self.obs_layout.entries, obs))
        x = self.encoder(obs)
        h_pi = self.policy_torso(x)
        if self.shared_net:
            h_vf = h_pi
        else:
            h_vf = self.value_torso(self.value_encoder(obs) if hasattr(self, "value_encoder") else x)
        if self.recurrent:
            h_pi, h_vf, state = self._recurrent_step(h_pi, h_vf, state, episode_starts, sequence_length)
            h_pi, h_vf = self.policy_lstm_head(h_pi), self.value_lstm_head(h_vf)
        params = self.policy_head(h_pi)
        if self.use_sde:
            latent = ops.stop_gradient(h_pi)
            variance = ops.matmul(ops.square(latent), ops.exp(2.0 * self.sde_log_std))
            params = ops.concatenate([params, 0.5 * ops.log(variance + 1e-6), latent], axis=-1)
        elif self.continuous and not self.nn_std:
            log_std = ops.broadcast_to(self.log_std, ops.shape(params))
            params = ops.concatenate([params, log_std], axis=-1)
        value = self.value_head(h_vf)[:, 0]
        return (params, value, state) if self.recurrent else (params, value)

    def _uniform_init(self, seed):
        """PyTorch's default init of every dense and convolution layer, drawn with numpy (the same on every
        backend): kernel and bias uniform in ±1/sqrt(fan_in). The LSTM cells keep theirs."""
        rng = np.random.default_rng(None if seed is None else [int(seed), 1])
        stacks = [self.policy_torso] + ([] if self.shared_net else [self.value_torso])
        if not self.user_encoder:
            stacks += list(self.encoder.cnns.values())  # a Dict observation's image entries
        if self.recurrent:
            stacks += [self.policy_lstm_head, self.value_lstm_head]
        for layer in [inner for stack in stacks for inner in stack.layers] + [self.policy_head, self.value_head]:
            if not hasattr(layer, "kernel"):
                continue
            bound = 1.0 / math.sqrt(int(np.prod(layer.kernel.shape[:-1])))
            for variable in (layer.kernel, layer.bias):
                variable.assign(rng.uniform(-bound, bound, tuple(variable.shape)).astype(np.float32))

    def _recurrent_step(self, h_pi, h_vf, state, episode_starts, sequence_length):
        """Torso features of sequence-major rows -> LSTM outputs of the same rows, and the final states."""
        L, H = int(sequence_length), self.hidden_layer_size

        def sequences(x):
            return ops.reshape(x, (-1, L, x.shape[-1]))

        starts = ops.reshape(ops.cast(episode_starts, "float32"), (-1, L))
        first = sequences(ops.cast(state, "float32"))[:, 0]  # the state each sequence starts from
        out_pi, h, c = run_lstm(self.policy_lstm, sequences(h_pi), first[:, :H], first[:, H : 2 * H], starts)
        final = [h, c]
        if self.shared_lstm:
            out_vf = out_pi
        else:
            out_vf, h, c = run_lstm(self.value_lstm, sequences(h_vf), first[:, 2 * H : 3 * H], first[:, 3 * H :],
                                    starts)
            final += [h, c]
        rows = lambda x: ops.reshape(x, (-1, H))  # noqa: E731
        return rows(out_pi), rows(out_vf), ops.concatenate(final, axis=-1)

    def initial_state(self, batch_size):
        """The zero LSTM state of `batch_size` envs, as numpy."""
        return np.zeros((batch_size, self.state_size), np.float32)

    @property
    def obs_dtype(self):
        """The dtype the acting functions take observations in (a dict of them for Dict/Tuple spaces)."""
        dtypes = self.obs_layout.dtypes()
        return {k: str(d) for k, d in dtypes.items()} if isinstance(dtypes, dict) else str(dtypes)

    def distribution(self, flat_params):
        return make_distribution(self.action_space, flat_params)

    def act(self, obs, noise, deterministic=False, state=None, episode_starts=None):
        """The acting step every backend compiles, packed into one float array.

        Row layout: `[action (action_size), value, log_prob]`, then a recurrent model's
        next state (`state_size`) — one device-to-host copy per step instead of several.
        """
        if self.recurrent:
            params, value, state = self((obs, state, episode_starts))
        else:
            params, value = self(obs)
        dist = self.distribution(params)
        if self.use_sde:  # the collector's standard normals, scaled by the current sigma
            noise = noise * ops.reshape(ops.exp(self.sde_log_std), (1, -1))
        action = dist.mode() if deterministic else dist.sample(noise)
        flat_action = ops.reshape(ops.cast(action, "float32"), (ops.shape(params)[0], -1))
        packed = [flat_action, value[:, None], dist.log_prob(action)[:, None]]
        if self.recurrent:
            packed.append(state)
        return ops.concatenate(packed, axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
            "net": self.net,
            "hidden_sizes": list(self.hidden_sizes),
            "activation": self.activation,
            "shared_net": self.shared_net,
            "nn_std": self.nn_std,
            "log_std_init": self.log_std_init,
            "use_sde": self.use_sde,
            "ortho_init": self.ortho_init,
            "recurrent": self.recurrent,
            "hidden_layer_size": self.hidden_layer_size,
            "shared_lstm": self.shared_lstm,
            "lstm_head_sizes": list(self.lstm_head_sizes),
            "seed": self.seed,
            # User-defined encoders, as Keras configuration (their classes registered): only when there are
            # some, so the configuration of every other model keeps its bytes.
            **self.encoder_config(),
        }

    def encoder_config(self):
        """The user-defined encoders' saved configuration (`encoder=` or `policy_`/`value_encoder=`), or {}."""
        if not self.user_encoder:
            return {}
        serialize = keras.saving.serialize_keras_object
        if hasattr(self, "value_encoder"):
            return {"policy_encoder": serialize(self.encoder), "value_encoder": serialize(self.value_encoder)}
        return {"encoder": serialize(self.encoder)}


def _user_encoders(encoder, policy_encoder, value_encoder):
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
