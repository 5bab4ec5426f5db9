"""JAX: `value_and_grad` over `stateless_call`; the epoch runs in one `jit` via `lax.scan`."""

import jax
import jax.numpy as jnp
import keras
import numpy as np

from unstable_ppo.backend.common import TrainerBase, mean_logs


class JAXTrainer(TrainerBase):
    def _loss_and_updates(self, trainable, non_trainable, batch):
        outputs, non_trainable = self.stateless_call(trainable, non_trainable, batch["obs"], training=True)
        loss, logs = self.ppo_loss(batch, outputs)
        return loss, (logs, non_trainable)

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_vars, metrics_vars = state
        batch = self.unpack_batch(data)
        grad_fn = jax.value_and_grad(self._loss_and_updates, has_aux=True)
        (_, (logs, non_trainable)), grads = grad_fn(trainable, non_trainable, batch)
        trainable, optimizer_vars = self.optimizer.stateless_apply(optimizer_vars, grads, trainable)
        return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)

    def _state(self):
        return (
            [v.value for v in self.trainable_variables],
            [v.value for v in self.non_trainable_variables],
            [v.value for v in self.optimizer.variables],
            [v.value for v in self.metrics_variables],
        )

    def _assign_state(self, state):
        trainable, non_trainable, optimizer_vars, _ = state
        for variables, values in (
            (self.trainable_variables, trainable),
            (self.non_trainable_variables, non_trainable),
            (self.optimizer.variables, optimizer_vars),
        ):
            for variable, value in zip(variables, values):
                variable.assign(value)

    def make_update_function(self):
        if self._update_function is None:

            def epoch(state, batch, indices):
                def minibatch(state, idx):
                    logs, state = self.train_step(state, {k: v[idx] for k, v in batch.items()})
                    return state, logs

                return jax.lax.scan(minibatch, state, indices)

            compiled = jax.jit(epoch)

            def update(batch, indices):
                state, logs = compiled(self._state(), batch, jnp.asarray(indices))
                self._assign_state(state)
                return mean_logs(jax.device_get(logs))

            self._update_function = update
        return self._update_function

    def _compiled_act(self, deterministic):
        if deterministic not in self._act_functions:
            self._act_functions[deterministic] = jax.jit(
                lambda trainable, non_trainable, obs, noise: self._stateless_act(
                    trainable, non_trainable, obs, noise, deterministic
                )
            )
        compiled = self._act_functions[deterministic]
        # The weights are arguments of the jitted call: read them once, here.
        trainable = [v.value for v in self.trainable_variables]
        non_trainable = [v.value for v in self.non_trainable_variables]
        return lambda obs, noise: np.asarray(compiled(trainable, non_trainable, obs, noise))

    def _stateless_act(self, trainable, non_trainable, obs, noise, deterministic):
        mapping = list(zip(self.trainable_variables, trainable))
        mapping += list(zip(self.non_trainable_variables, non_trainable))
        with keras.StatelessScope(state_mapping=mapping):
            return self.act(obs, noise, deterministic)
