"""TensorFlow: `GradientTape` in `train_step`; `tf.function` for acting and updates."""

import numpy as np
import tensorflow as tf

from unstable_ppo.backend.common import TrainerBase, mean_logs


class TensorFlowTrainer(TrainerBase):
    def train_step(self, data):
        batch = self.unpack_batch(data)
        with tf.GradientTape() as tape:
            loss, logs = self.ppo_loss(batch, self(batch["obs"], training=True))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return logs

    def make_update_function(self):
        if self._update_function is None:
            # One call per epoch: each tf.function call costs ~0.5 ms of dispatch,
            # more than a 64-64 MLP minibatch step itself. The minibatch loop is
            # unrolled (its length is static), so the graph is plain straight-line code.
            @tf.function(reduce_retracing=True)
            def epoch(batch, indices):
                logs = []
                for i in range(indices.shape[0]):
                    logs.append(self.train_step({k: tf.gather(v, indices[i]) for k, v in batch.items()}))
                return {k: tf.stack([l[k] for l in logs]) for k in logs[0]}

            def update(batch, indices):
                batch = {k: tf.convert_to_tensor(v) for k, v in batch.items()}
                return mean_logs(epoch(batch, tf.convert_to_tensor(indices)))

            self._update_function = update
        return self._update_function

    def _compiled_act(self, deterministic):
        if deterministic not in self._act_functions:
            obs_spec = tf.TensorSpec((None, *self.observation_space.shape), self.obs_dtype)
            noise_spec = tf.TensorSpec((None, self.noise_size), tf.float32)
            # A concrete function skips tf.function's per-call signature matching.
            concrete = tf.function(
                lambda obs, noise: self.act(obs, noise, deterministic)
            ).get_concrete_function(obs_spec, noise_spec)
            self._act_functions[deterministic] = lambda obs, noise: concrete(
                tf.convert_to_tensor(obs), tf.convert_to_tensor(noise)
            ).numpy()
        return self._act_functions[deterministic]
