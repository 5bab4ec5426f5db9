"""TensorFlow: `GradientTape` in `train_step`; `tf.function` for acting and updates."""

import numpy as np
import tensorflow as tf

from unstable_ppo.backend.common import TrainerBase, mean_logs


class TensorFlowTrainer(TrainerBase):
    _to_tensor = staticmethod(tf.convert_to_tensor)

    def train_step(self, data):
        batch = self.unpack_batch(data)
        with tf.GradientTape() as tape:
            loss, logs = self.ppo_loss(batch, self.batch_outputs(batch, training=True))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return logs

    def make_update_function(self):
        if self._update_function is None:
            # One call per epoch: a tf.function call's dispatch costs more than a small
            # MLP's minibatch step itself. The `tf.while_loop` traces `train_step` once,
            # however many minibatches there are. No AutoGraph (as in Keras's own
            # trainer): the loss has no Python control flow on tensors, and converting
            # every layer's code slowed the first update and rollout. Not XLA-compiled:
            # what it saves per rollout its compilation costs again over a run. The
            # measurements: benchmarks/results/HISTORY.md, runs 5 and 6.
            keys = self.log_keys()

            @tf.function(reduce_retracing=True, autograph=False)
            def epoch(batch, indices):
                n = tf.shape(indices)[0]

                def minibatch(i, logs):
                    step_logs = self.train_step(tf.nest.map_structure(lambda v: tf.gather(v, indices[i]), batch))
                    return i + 1, tuple(log.write(i, tf.cast(step_logs[k], tf.float32)) for log, k in zip(logs, keys))

                logs = tuple(tf.TensorArray(tf.float32, size=n) for _ in keys)
                _, logs = tf.while_loop(lambda i, _: i < n, minibatch, (tf.constant(0), logs))
                return {k: log.stack() for k, log in zip(keys, logs)}

            def update(batch, indices):
                batch = self.prepare_batch(batch)
                return mean_logs(epoch(batch, tf.convert_to_tensor(indices)))

            self._update_function = update
        return self._update_function

    def _compiled_act(self, deterministic):
        if deterministic not in self._act_functions:
            # Not XLA-compiled (`jit_compile=True`): faster in a tight loop, but not when
            # alternating with env steps once its compilation is counted (HISTORY.md, run 6).
            shapes, dtypes = self.obs_layout.shapes(), self.obs_dtype
            if isinstance(shapes, dict):  # a Dict observation: a tuple of entries (`make_act_function`)
                specs = [tuple(tf.TensorSpec((None, *shapes[k]), dtypes[k]) for k in shapes)]
            else:
                specs = [tf.TensorSpec((None, *shapes), dtypes)]
            specs += [tf.TensorSpec((None, *shape), dtype) for shape, dtype in self.act_input_specs()]
            concrete = tf.function(
                lambda obs, noise, *state: self.act(obs, noise, deterministic, *state), autograph=False
            ).get_concrete_function(*specs)
            self._act_functions[deterministic] = _fast_call(concrete)
        return self._act_functions[deterministic]


def _fast_call(concrete):
    """`f(obs, noise, ...) -> numpy` for a concrete function, skipping its argument binding.

    TensorFlow spends hundreds of µs per call of even a tiny function, a quarter of it
    in Python that matches arguments to the signature. `_call_flat` takes the flat
    tensors directly. It is private API, so it is checked once against the public
    call and not used if it disagrees or is gone.
    """

    def public(*inputs):
        return concrete(*tf.nest.map_structure(tf.convert_to_tensor, inputs)).numpy()

    call_flat = getattr(concrete, "_call_flat", None)
    if call_flat is None:
        return public
    captured = concrete.captured_inputs

    def flat(*inputs):
        out = call_flat([tf.convert_to_tensor(x) for x in tf.nest.flatten(inputs)], captured)
        return (out[0] if isinstance(out, (list, tuple)) else out).numpy()

    probe = tf.nest.map_structure(lambda spec: np.zeros([1, *spec.shape[1:]], spec.dtype.as_numpy_dtype),
                                  list(concrete.structured_input_signature[0]))
    try:
        if np.array_equal(flat(*probe), public(*probe)):
            return flat
    except Exception:  # noqa: BLE001 - any failure means: use the public path
        pass
    return public
