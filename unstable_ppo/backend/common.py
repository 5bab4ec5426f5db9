"""What the per-backend trainers share: the loss call and log bookkeeping."""

import numpy as np
from keras import tree
from keras.utils import unpack_x_y_sample_weight

from unstable_ppo.losses import batch_keys, log_keys, ppo_loss


class TrainerBase:
    """The parts of a trainer that do not depend on the backend."""

    def ppo_loss(self, batch, outputs):
        """The loss on the model's outputs; the live coefficients (β, ε, ...) are read from their variables.

        So they are never baked into a compiled function. There the read must go through the
        backend's state: JAX maps them in a `StatelessScope`, torch passes them as trace
        inputs, TensorFlow reads the variables.
        """
        params, values = outputs[:2]  # a recurrent model's final state is not part of the loss
        return ppo_loss(self.action_space, params, values, batch, self.loss_config, **self.live_coefficients)

    def batch_outputs(self, batch, training=False):
        """The model's outputs on a training batch: rows, or sequences of `sequence_length` rows."""
        return self(self.model_inputs(batch), training=training, sequence_length=self.sequence_length)

    def batch_keys(self):
        keys = batch_keys(self.loss_config)
        return keys + ("states", "episode_starts") if self.recurrent else keys

    def log_keys(self):
        return log_keys(self.action_space, self.loss_config)

    def prepare_batch(self, batch):
        """numpy rollout arrays -> backend tensors; a no-op on tensors already prepared."""
        return {k: tree.map_structure(self._to_tensor, v) for k, v in batch.items()}

    @staticmethod
    def unpack_batch(data):
        batch, _, _ = unpack_x_y_sample_weight(data)
        return batch

    def make_act_function(self, deterministic=False):
        """`act(obs, noise) -> (actions, values, log_probs)` as numpy, with the current weights.

        A recurrent model's is `act(obs, noise, state, episode_starts) -> (actions, values,
        log_probs, next_state)`. The rollout makes it once and calls it every step; the
        compiled function behind it is built on first use and cached.
        """
        compiled = self._compiled_act(deterministic)
        a = self.action_size
        entries = self.obs_layout.entries
        if entries is not None:  # a Dict observation enters compiled functions as a tuple, in the entries' order
            base = compiled
            compiled = lambda obs, *inputs: base(tuple(obs[k] for k in entries), *inputs)  # noqa: E731

        if self.recurrent:
            def act(obs, noise, state, episode_starts):
                packed = compiled(obs, noise, state, np.asarray(episode_starts, np.float32))
                return packed[:, :a], packed[:, a], packed[:, a + 1], packed[:, a + 2:]
        else:
            def act(obs, noise):
                packed = compiled(obs, noise)
                return packed[:, :a], packed[:, a], packed[:, a + 1]

        return act

    def act_input_specs(self):
        """(shape without the batch axis, dtype) of each acting input after `obs`."""
        specs = [((self.noise_size,), "float32")]
        if self.recurrent:
            specs += [((self.state_size,), "float32"), ((), "float32")]
        return specs

    def reset_compiled_functions(self):
        """Drop cached acting/update functions (after `compile`, or new loss settings)."""
        self._act_functions = {}
        self._update_function = None
        self._variables_cache = None


def mean_logs(stacked):
    """{name: per-minibatch values} -> {name: float mean}."""
    return {k: float(np.mean(np.asarray(v))) for k, v in stacked.items()}
