"""PyTorch: `backward()` and `optimizer.apply`; the hot paths run as `torch.jit.trace`s.

A Keras model called eagerly under torch pays about a millisecond of Python per
call; a trace keeps only the torch ops (benchmarks/README.md, "Acting and updating"). The weights are
inputs of every trace, so a trace always runs with the current weights, and
gradients reach them through it.
"""

import warnings

import keras
import torch
from keras import ops, tree

from unstable_ppo.backend.common import TrainerBase, mean_logs


class TorchTrainer(TrainerBase):
    _to_tensor = staticmethod(torch.as_tensor)

    def _apply_gradients(self, loss, variables, weights):
        loss.backward()
        grads = [w.grad for w in weights]
        with torch.no_grad():
            self.optimizer.apply(grads, variables)
        for w in weights:
            w.grad = None

    def train_step(self, data):
        batch = tree.map_structure(ops.convert_to_tensor, self.unpack_batch(data))
        loss, logs = self.ppo_loss(batch, self.batch_outputs(batch, training=True))
        variables = self.trainable_variables
        self._apply_gradients(loss, variables, [v.value for v in variables])
        return logs

    def make_update_function(self):
        """The minibatch loss runs as a `torch.jit.trace`, gradients flow back through it.

        Eagerly, Keras's layer and op machinery costs several ms of Python per
        minibatch, more than the maths; traced, it runs once per minibatch shape.
        """
        if self._update_function is None:
            variables = list(self.trainable_variables)
            # The live loss coefficients are trace inputs too, or the trace would keep their first values.
            constants = list(self.live_coefficients.values())
            traces = {}
            keys, log_keys = self.batch_keys(), self.log_keys()

            structure = [None]  # the batch's nesting (a Dict observation's entries): traces take flat tensors

            def minibatch_loss(weights, values, minibatch):
                mapping = list(zip(variables, weights)) + list(zip(constants, values))
                with keras.StatelessScope(state_mapping=mapping):
                    batch = dict(zip(keys, tree.pack_sequence_as(structure[0], list(minibatch))))
                    loss, logs = self.ppo_loss(batch, self.batch_outputs(batch, training=True))
                return loss, tuple(logs[k] for k in log_keys)

            def update(batch, indices):
                batch = self.prepare_batch(batch)
                structure[0] = [batch[k] for k in keys]
                batch = tree.flatten(structure[0])
                values = tuple(v.value.detach() for v in constants)
                logs = []
                for idx in torch.as_tensor(indices):
                    minibatch = tuple(v[idx] for v in batch)
                    weights = tuple(v.value for v in variables)
                    traced = traces.get(len(idx))
                    if traced is None:
                        traced = _trace(minibatch_loss, (weights, values, minibatch))
                        traces[len(idx)] = traced
                    loss, step_logs = traced(weights, values, minibatch)
                    self._apply_gradients(loss, variables, weights)
                    logs.append(torch.stack(step_logs).detach())
                return mean_logs(dict(zip(log_keys, torch.stack(logs).T.numpy())))

            self._update_function = update
        return self._update_function

    def _compiled_act(self, deterministic):
        traces = self._act_functions.setdefault(deterministic, {})
        structured = self.obs_layout.structured

        def act(trainable, non_trainable, obs, noise, *state):
            mapping = list(zip(self.trainable_variables, trainable))
            mapping += list(zip(self.non_trainable_variables, non_trainable))
            with keras.StatelessScope(state_mapping=mapping):
                return self.act(obs, noise, deterministic, *state)

        with torch.no_grad():
            trainable = tuple(v.value.detach() for v in self.trainable_variables)
            non_trainable = tuple(v.value.detach() for v in self.non_trainable_variables)

        def call(*inputs):
            if structured:  # a Dict observation is a tuple of entries
                inputs = tree.map_structure(torch.as_tensor, inputs)
                batch_size = tree.flatten(inputs[0])[0].shape[0]
            else:
                inputs = tuple(torch.as_tensor(x) for x in inputs)
                batch_size = inputs[0].shape[0]
            with torch.no_grad():
                # A trace bakes in shapes: keep one per batch size.
                traced = traces.get(batch_size)
                if traced is None:
                    traced = _trace(act, (trainable, non_trainable, *inputs))
                    traces[batch_size] = traced
                return traced(trainable, non_trainable, *inputs).numpy()

        return call


def _trace(fn, example_inputs):
    # Keras turns Python scalars into tensors, which the tracer warns it keeps as
    # constants; they are constants, and the warning would repeat for every trace.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(fn, example_inputs, check_trace=False)
