"""A user-defined Keras encoder for MiniGrid's {"image", "direction"} observations.

Kept in its own small module so that the runner can name it
(`--encoder=examples.encoders:MiniGridEncoder`) and a saved model can be loaded in a fresh
process after `import examples.encoders`, which registers the class with Keras.
Written with keras.layers and keras.ops only, so it runs and saves on every Keras backend.
"""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="unstable_ppo_examples")
class MiniGridEncoder(keras.layers.Layer):
    """MiniGrid's 7x7x3 grid (object, colour, state indices) -> small conv net, plus the one-hot direction.

    The grid holds small integers, not pixels, so it is cast to float and not divided by 255.
    Three 2x2 convolutions with a 2x2 max-pool after the first (filters, 2*filters,
    4*filters) take 7x7 down to 1x1; the direction (Discrete(4), int32) is appended one-hot.
    Orthogonal init with gain sqrt(2), as PPO implementations use for their torsos.
    """

    def __init__(self, filters=16, directions=4, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.directions = int(directions)
        init = lambda: keras.initializers.Orthogonal(gain=math.sqrt(2))  # noqa: E731
        self.convs = [keras.layers.Conv2D(self.filters * m, 2, activation="relu", data_format="channels_last",
                                          kernel_initializer=init()) for m in (1, 2, 4)]
        self.pool = keras.layers.MaxPooling2D(2, data_format="channels_last")
        self.flatten = keras.layers.Flatten()

    def build(self, input_shape):
        shape = tuple(input_shape["image"])
        for i, conv in enumerate(self.convs):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            if i == 0:
                shape = self.pool.compute_output_shape(shape)

    def call(self, obs):
        x = ops.cast(obs["image"], "float32")
        x = self.pool(self.convs[0](x))
        for conv in self.convs[1:]:
            x = conv(x)
        direction = ops.cast(ops.reshape(obs["direction"], (-1,)), "int32")
        return ops.concatenate([self.flatten(x), ops.one_hot(direction, self.directions)], axis=-1)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "directions": self.directions}
