"""The actor-critic network: encoder and torsos (`unstable_ppo.encoders`), the LSTM, the heads.

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

import math

import keras
import numpy as np
from keras import initializers, layers, ops

from unstable_ppo.distributions import make_distribution, param_size
from unstable_ppo.encoders import (
    ObservationEncoder,
    SeededOrthogonal,
    encoder_output_shape,
    mlp_torso,
    nature_cnn_torso,
    seed_stream,
    seeded_dense,
    user_encoders,
)
from unstable_ppo.observations import ObservationLayout
from unstable_ppo.spaces import (
    check_action_space,
    check_observation_space,
    is_image_space,
    is_structured,
    space_from_json,
    space_to_json,
)
from gymnasium import spaces


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
        encoder, value_encoder = user_encoders(encoder, policy_encoder, value_encoder)
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
        seeds = seed_stream(seed)
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
        self.policy_head = seeded_dense(n_params * (2 if self.nn_std else 1), 0.01, seeds, name="policy_head")
        self.value_head = seeded_dense(1, 1.0, seeds, name="value_head")
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
        space, layout = self.observation_space, self.obs_layout
        if self.user_encoder or is_structured(space):
            x = encoder_output_shape(self.encoder, layout, space)
        else:
            x = self.encoder.compute_output_shape(input_shape)
        x_vf = encoder_output_shape(self.value_encoder, layout, space) if hasattr(self, "value_encoder") else x
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
