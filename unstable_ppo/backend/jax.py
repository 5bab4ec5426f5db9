"""JAX: `value_and_grad` over `stateless_call`; the epoch runs in one `jit` via `lax.scan`.

With `worker_num` N > 1 (data-parallel learners) each minibatch is split along its
rows over N devices (`keras.distribution.DataParallel`'s data layout) and the
weights and optimizer state are replicated: XLA's partitioner turns the gradient
into per-device partial sums and one all-reduce, so the update equals the
single-device one up to float rounding.

On CPU, JAX runs each computation on a worker thread by default ("async
dispatch"). The rollout alternates one tiny acting call with one env step, so
every call pays a thread hand-off and wake-up, about twice the inline call's cost
(benchmarks/results/HISTORY.md, run 5). Importing this module therefore
turns async dispatch off (`jax_cpu_enable_async_dispatch`), unless the
`JAX_CPU_ENABLE_ASYNC_DISPATCH` environment variable says otherwise. The setting
is read when JAX creates its CPU client, so it only takes effect if no JAX
computation has run in the process yet.

`use_compilation_cache(path)` turns on XLA's persistent compilation cache: the
first update's compilation is then paid once per shapes and versions, not once
per run.

A CNN's update is compiled with `CONV_COMPILER_OPTIONS`. XLA:CPU in jaxlib 0.10
hands convolutions to YNNPACK by default, and for the Nature CNN's shapes (4 input
channels, 8x8 stride-4 windows, the dilated windows of the kernel gradients) its
kernels are several times slower than XLA's own Eigen convolutions, per core too
(figures: benchmarks/README.md, "JAX's Nature-CNN update on the CPU"). The options
keep YNNPACK for dots and drop it for convolutions; the result differs by float
rounding only. They apply on the CPU, where this jaxlib knows them, and not where
`XLA_FLAGS` sets the same option; this setting restores XLA's default:

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution

The acting call (batch 8) keeps the defaults: there the two do not differ measurably.
"""

import functools
import os

import jax
import jax.numpy as jnp
import keras
import numpy as np

from unstable_ppo.backend.common import TrainerBase, mean_logs

if "JAX_CPU_ENABLE_ASYNC_DISPATCH" not in os.environ:
    jax.config.update("jax_cpu_enable_async_dispatch", False)


# XLA options for the update of a model with convolutions: Eigen convolutions, YNNPACK dots.
CONV_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def conv_compiler_options(net):
    """`CONV_COMPILER_OPTIONS` for a CNN's update on the CPU, else None (XLA's defaults)."""
    options = CONV_COMPILER_OPTIONS
    if net != "cnn" or not options or jax.default_backend() != "cpu":
        return None
    flags = os.environ.get("XLA_FLAGS", "")
    if any(name in flags for name in options):  # the user's own setting wins
        return None
    return options if _compiler_knows(tuple(sorted(options.items()))) else None


@functools.cache
def _compiler_knows(options):
    """Whether XLA accepts `options` (a jaxlib without one rejects the whole compilation)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(np.float32(0)).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True


def use_compilation_cache(path):
    """Keep compiled XLA programs in the directory `path`, and load them from there.

    JAX caches only programs that took over 1 s to compile by default; the acting
    function compiles in ~0.1 s, so the threshold is lowered to 50 ms. Tiny programs
    (Keras's variable initializers) stay below it and are not written.
    """
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)


class JAXTrainer(TrainerBase):
    def _loss_and_updates(self, trainable, non_trainable, batch):
        outputs, updated = self.stateless_call(trainable, non_trainable, self.model_inputs(batch), training=True,
                                               sequence_length=self.sequence_length)
        # The live loss coefficients are non-trainable variables: under jit they come from the state, not the trace.
        with keras.StatelessScope(state_mapping=list(zip(self.non_trainable_variables, non_trainable))):
            loss, logs = self.ppo_loss(batch, outputs)
        return loss, (logs, updated)

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_vars, metrics_vars = state
        batch = self.unpack_batch(data)
        grad_fn = jax.value_and_grad(self._loss_and_updates, has_aux=True)
        (_, (logs, non_trainable)), grads = grad_fn(trainable, non_trainable, batch)
        trainable, optimizer_vars = self.optimizer.stateless_apply(optimizer_vars, grads, trainable)
        return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)

    def _variable_lists(self):
        """The model's variables, listed once: Keras walks every layer per property read."""
        if getattr(self, "_variables_cache", None) is None:
            # Set in __dict__: Keras would otherwise track the lists as new model state.
            vars(self)["_variables_cache"] = (
                list(self.trainable_variables),
                list(self.non_trainable_variables),
                list(self.optimizer.variables),
                list(self.metrics_variables),
            )
        return self._variables_cache

    _to_tensor = staticmethod(jnp.asarray)

    def _state(self, parts=4):
        """Current values of (trainable, non-trainable, optimizer, metrics) variables, the first `parts`."""
        return tuple([v.value for v in variables] for variables in self._variable_lists()[:parts])

    def _assign_state(self, state):
        for variables, values in zip(self._variable_lists()[:3], state[:3]):
            for variable, value in zip(variables, values):
                variable.assign(value)

    def make_update_function(self):
        if self._update_function is None:

            # XLA:CPU runs convolutions inside a loop an order of magnitude slower than
            # straight-line ones, so a CNN's epoch is unrolled; an MLP's stays a compact
            # `scan`. (In a loop body the kernel gradient keeps a layout, f01b_i01o->01bf,
            # that neither Eigen nor YNNPACK takes, and runs as a naive loop.)
            # Any convolution counts: the Nature CNN, a Dict observation's image CNN, a user-defined encoder's.
            convolutional = _has_convolutions(self)
            unroll = True if convolutional else 1
            shard, replicate = _data_parallel(getattr(self, "worker_num", 1))

            def epoch(state, batch, indices):
                def minibatch(state, idx):
                    logs, state = self.train_step(state, jax.tree.map(lambda v: shard(v[idx]), batch))
                    return state, logs

                return jax.lax.scan(minibatch, state, indices, unroll=unroll)

            compiled = jax.jit(epoch, compiler_options=conv_compiler_options("cnn" if convolutional else "mlp"))

            def update(batch, indices):
                batch = replicate(self.prepare_batch(batch))
                state, logs = compiled(replicate(self._state()), batch, replicate(jnp.asarray(indices)))
                self._assign_state(state)
                return mean_logs(jax.device_get(logs))

            self._update_function = update
        return self._update_function

    def _compiled_act(self, deterministic):
        if deterministic not in self._act_functions:
            self._act_functions[deterministic] = jax.jit(
                lambda trainable, non_trainable, *inputs: self._stateless_act(
                    trainable, non_trainable, inputs, deterministic
                )
            )
        compiled = self._act_functions[deterministic]
        # The weights are arguments of the jitted call. Reading them all costs
        # ~20 µs, so read them again only when the first one has been reassigned
        # (every update, `fit()` or `set_weights` reassigns them all).
        first = self._variable_lists()[0][0]
        weights = [self._state(parts=2)]

        def act(obs, *inputs):
            if first.value is not weights[0][0][0]:
                weights[0] = self._state(parts=2)
            return np.asarray(compiled(*weights[0], obs, *inputs))

        return act

    def _stateless_act(self, trainable, non_trainable, inputs, deterministic):
        obs, noise, *state = inputs
        mapping = list(zip(self.trainable_variables, trainable))
        mapping += list(zip(self.non_trainable_variables, non_trainable))
        with keras.StatelessScope(state_mapping=mapping):
            return self.act(obs, noise, deterministic, *state)


def _has_convolutions(model):
    return any(isinstance(layer, keras.layers.Conv1D | keras.layers.Conv2D | keras.layers.Conv3D)
               for layer in model._flatten_layers(include_self=False))


def _data_parallel(worker_num):
    """`(shard, replicate)`: a minibatch split by rows over `worker_num` devices, other arrays on all of them.

    With one worker both are the identity: the single-device program is unchanged.
    """
    if worker_num <= 1:
        return (lambda x: x), (lambda tree: tree)
    distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:worker_num])
    replicated = keras.distribution.TensorLayout([], distribution.device_mesh).backend_layout

    def shard(x):
        return jax.lax.with_sharding_constraint(x, distribution.get_data_layout(x.shape).backend_layout)

    def replicate(tree):
        return jax.device_put(tree, replicated)

    return shard, replicate
