"""User-defined encoders as a user would write them: registered Keras layers, in keras.ops only."""

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="tests")
class GridEncoder(layers.Layer):
    """A small conv net for a tiny integer grid plus a one-hot direction (a MiniGrid-like Dict)."""

    def __init__(self, filters=8, units=16, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.units = filters, units
        self.conv = layers.Conv2D(filters, 2, activation="relu")
        self.flatten = layers.Flatten()
        self.dense = layers.Dense(units, activation="relu")

    def call(self, obs):
        grid = self.flatten(self.conv(ops.cast(obs["image"], "float32")))
        direction = ops.one_hot(ops.cast(obs["direction"], "int32"), 4)
        return self.dense(ops.concatenate([grid, direction], axis=-1))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "units": self.units}


@keras.saving.register_keras_serializable(package="tests")
class VectorEncoder(layers.Layer):
    """One dense layer over a vector observation."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = layers.Dense(units, activation="tanh")

    def call(self, obs):
        return self.dense(obs)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class UnregisteredEncoder(layers.Layer):
    """Not registered: saving could not name it, so PPO refuses it up front."""

    def call(self, obs):
        return obs
