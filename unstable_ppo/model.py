"""The trainable PPO model: the actor-critic network, the backend's trainer and the loss's live coefficients.

`networks.ActorCriticNetwork` is the architecture, plain Keras; `ActorCritic` adds what
training needs — the backend `Trainer` (`unstable_ppo.backend`), `compile(loss_config,
sequence_length)`, one non-trainable variable per live loss coefficient
(`losses.LIVE_COEFFICIENTS`) and the loading of checkpoints saved before a coefficient
existed. Dependencies point one way: model -> networks, backend -> losses.
"""

import keras
from keras import initializers

from unstable_ppo.backend import Trainer
from unstable_ppo.losses import LIVE_COEFFICIENTS, LossConfig
from unstable_ppo.networks import ActorCriticNetwork


@keras.saving.register_keras_serializable(package="unstable_ppo")
class ActorCritic(Trainer, ActorCriticNetwork):
    """The actor-critic network, trained by the PPO `train_step` of the backend's `Trainer`.

    Each live coefficient (`kl_beta`, `clip_epsilon`, ...) is a non-trainable variable
    and an attribute of that name: compiled epochs read its current value without being
    rebuilt when a servo or a schedule changes it, and `model.keras` keeps it.
    """

    # Saved models name the class's module in config.json; this keeps the name they have
    # always had, so files stay byte-identical. Loading finds the class by its registered name.
    __module__ = "unstable_ppo.networks"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_config = LossConfig()
        self.sequence_length = 1  # of training sequences; `compile` sets it

    def build(self, input_shape):
        super().build(input_shape)
        # Here, not in __init__: Keras accepts no new variables once the model is built.
        for c in LIVE_COEFFICIENTS:
            variable = self.add_weight(shape=(), initializer=initializers.Constant(c.initial), trainable=False,
                                       name=c.name)
            setattr(self, c.name, variable)

    @property
    def live_coefficients(self):
        """`{name: variable}` of the loss's live coefficients, what every trainer passes to `ppo_loss`."""
        return {c.name: getattr(self, c.name) for c in LIVE_COEFFICIENTS}

    def model_inputs(self, batch):
        """What `call` takes from a training batch (its columns, as `losses.ppo_loss` names them)."""
        if self.recurrent:
            return (batch["obs"], batch["states"], batch["episode_starts"])
        return batch["obs"]

    def load_own_variables(self, store):
        """A checkpoint written before a live coefficient existed (β: the KL loss; ε: clip annealing) loads.

        The coefficients are the last variables created, so such a file lacks the last of
        them; those keep the values they have (their initial or `compile`'s).
        """
        own = self._trainable_variables + self._non_trainable_variables
        added_later = list(self.live_coefficients.values())  # in creation order, the last of `own`
        missing = len(own) - len(store.keys())
        if 0 < missing <= len(added_later) and own[-missing:] == added_later[-missing:]:
            for i, variable in enumerate(own[:-missing]):
                variable.assign(store[f"{i}"])
            return
        super().load_own_variables(store)

    def compile(self, optimizer=None, loss_config=None, sequence_length=None, **kwargs):
        """Keras `compile`, plus the PPO objective's coefficients (`LossConfig`).

        The live coefficients with a `setting` start from it (ε from `clip_range`); β keeps its value.
        `sequence_length`: a recurrent model's training sequences (`timestep_size`).
        """
        if isinstance(loss_config, dict):
            loss_config = LossConfig(**loss_config)
        self.loss_config = loss_config or LossConfig()
        for c in LIVE_COEFFICIENTS:
            if c.setting:
                getattr(self, c.name).assign(getattr(self.loss_config, c.setting))
        if sequence_length is not None:
            self.sequence_length = int(sequence_length)
        if optimizer is None:
            optimizer = keras.optimizers.Adam(learning_rate=3e-4, epsilon=1e-5, global_clipnorm=0.5)
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.trainable_variables)
        self.reset_compiled_functions()

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["loss_config"] = dict(vars(self.loss_config))
            config["sequence_length"] = self.sequence_length
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(optimizer=config["optimizer"], loss_config=config.get("loss_config"),
                     sequence_length=config.get("sequence_length"))
