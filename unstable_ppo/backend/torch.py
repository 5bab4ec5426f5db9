"""PyTorch: `backward()` in `train_step`; acting is a `torch.jit.trace` of `stateless_call`.

A Keras model called eagerly under torch pays ~1 ms of Python per call; the trace
keeps only the torch ops (~65 µs for the 64-64 MLP), and because the weights are
inputs of the trace, it always acts with the current weights.
"""

import numpy as np
import keras
import torch
from keras import ops, tree

from unstable_ppo.backend.common import TrainerBase, mean_logs


class TorchTrainer(TrainerBase):
    def train_step(self, data):
        batch = tree.map_structure(ops.convert_to_tensor, self.unpack_batch(data))
        self.zero_grad()
        loss, logs = self.ppo_loss(batch, self(batch["obs"], training=True))
        loss.backward()
        variables = self.trainable_variables
        grads = [v.value.grad for v in variables]
        with torch.no_grad():
            self.optimizer.apply(grads, variables)
        return logs

    def make_update_function(self):
        if self._update_function is None:

            def update(batch, indices):
                batch = {k: torch.as_tensor(v) for k, v in batch.items()}
                logs = []
                for idx in indices:
                    idx = torch.as_tensor(idx)
                    step_logs = self.train_step({k: v[idx] for k, v in batch.items()})
                    logs.append({k: v.detach() for k, v in step_logs.items()})
                return mean_logs({k: torch.stack([l[k] for l in logs]).numpy() for k in logs[0]})

            self._update_function = update
        return self._update_function

    def _compiled_act(self, deterministic):
        traces = self._act_functions.setdefault(deterministic, {})

        def act(trainable, non_trainable, obs, noise):
            mapping = list(zip(self.trainable_variables, trainable))
            mapping += list(zip(self.non_trainable_variables, non_trainable))
            with keras.StatelessScope(state_mapping=mapping):
                return self.act(obs, noise, deterministic)

        with torch.no_grad():
            trainable = tuple(v.value.detach() for v in self.trainable_variables)
            non_trainable = tuple(v.value.detach() for v in self.non_trainable_variables)

        def call(obs, noise):
            obs, noise = torch.as_tensor(obs), torch.as_tensor(noise)
            with torch.no_grad():
                # A trace bakes in shapes: keep one per batch size.
                traced = traces.get(obs.shape[0])
                if traced is None:
                    traced = torch.jit.trace(
                        act, (trainable, non_trainable, obs, noise), check_trace=False
                    )
                    traces[obs.shape[0]] = traced
                return traced(trainable, non_trainable, obs, noise).numpy()

        return call
