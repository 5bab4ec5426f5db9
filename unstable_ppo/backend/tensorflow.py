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

            @tf.function(reduce_retracing=True)
            def minibatch(batch, idx):
                return self.train_step({k: tf.gather(v, idx) for k, v in batch.items()})

            def update(batch, indices):
                batch = {k: tf.convert_to_tensor(v) for k, v in batch.items()}
                logs = [minibatch(batch, tf.convert_to_tensor(idx)) for idx in indices]
                return mean_logs({k: tf.stack([l[k] for l in logs]) for k in logs[0]})

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
