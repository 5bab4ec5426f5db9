"""What the per-backend trainers share: the loss call and log bookkeeping."""

import numpy as np
from keras.utils import unpack_x_y_sample_weight

from unstable_ppo.losses import ppo_loss


class TrainerBase:
    """The parts of a trainer that do not depend on the backend."""

    def ppo_loss(self, batch, outputs):
        params, values = outputs
        return ppo_loss(self.action_space, params, values, batch, self.loss_config)

    def prepare_batch(self, batch):
        """numpy rollout arrays -> backend tensors; a no-op on tensors already prepared."""
        return {k: self._to_tensor(v) for k, v in batch.items()}

    @staticmethod
    def unpack_batch(data):
        batch, _, _ = unpack_x_y_sample_weight(data)
        return batch

    def make_act_function(self, deterministic=False):
        """`act(obs, noise) -> (actions, values, log_probs)` as numpy, with the current weights.

        The rollout makes it once and calls it every step; the compiled function
        behind it is built on first use and cached.
        """
        compiled = self._compiled_act(deterministic)
        action_size = self.action_size

        def act(obs, noise):
            packed = compiled(obs, noise)
            return packed[:, :action_size], packed[:, action_size], packed[:, action_size + 1]

        return act

    def reset_compiled_functions(self):
        """Drop cached acting/update functions (after `compile`, or new loss settings)."""
        self._act_functions = {}
        self._update_function = None
        self._variables_cache = None


def mean_logs(stacked):
    """{name: per-minibatch values} -> {name: float mean}."""
    return {k: float(np.mean(np.asarray(v))) for k, v in stacked.items()}
