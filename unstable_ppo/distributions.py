"""Action distributions, written once in `keras.ops`.

Every distribution is a thin view over the tensor the policy head emits
(`flat_params`), so the same object serves acting and the loss on every backend.
Sampling is reparameterised on *noise*: acting passes noise drawn by numpy, which
keeps the compiled acting function pure and makes a seed reproduce a run on any
backend; `sample(seed=...)` draws that noise with `keras.random` instead.
"""

import math

import numpy as np
from gymnasium import spaces
from keras import ops
from keras import random as krandom

from unstable_ppo.spaces import UnsupportedSpaceError, space_name

_LOG_2PI = math.log(2.0 * math.pi)


class Distribution:
    """A batch of action distributions built from the policy head's output."""

    #: "uniform" or "normal": what `sample` expects as noise.
    noise_kind = "uniform"

    def __init__(self, flat_params):
        self.flat_params = flat_params

    def sample(self, noise=None, seed=None):
        """A sample; `noise` has shape `(batch, noise_dim)`, else it is drawn from `seed`."""
        if noise is None:
            shape = (ops.shape(self.flat_params)[0], self.noise_dim)
            if self.noise_kind == "normal":
                noise = krandom.normal(shape, seed=seed)
            else:
                noise = krandom.uniform(shape, minval=1e-6, maxval=1.0 - 1e-6, seed=seed)
        return self._sample(noise)

    def kl(self, other):
        """KL(self || other) per batch element."""
        raise NotImplementedError


class Categorical(Distribution):
    """Discrete(n): logits over n actions."""

    def __init__(self, logits):
        super().__init__(logits)
        self.logits = logits
        self.log_probs = ops.log_softmax(logits, axis=-1)
        self.noise_dim = logits.shape[-1]

    def _sample(self, uniform):
        gumbel = -ops.log(-ops.log(uniform))  # Gumbel-max trick
        return ops.argmax(self.logits + gumbel, axis=-1)

    def mode(self):
        return ops.argmax(self.logits, axis=-1)

    def log_prob(self, actions):
        one_hot = ops.one_hot(ops.cast(actions, "int32"), self.logits.shape[-1])
        return ops.sum(one_hot * self.log_probs, axis=-1)

    def entropy(self):
        return -ops.sum(ops.exp(self.log_probs) * self.log_probs, axis=-1)

    def kl(self, other):
        return ops.sum(ops.exp(self.log_probs) * (self.log_probs - other.log_probs), axis=-1)


class MultiCategorical(Distribution):
    """MultiDiscrete(nvec): independent categoricals; their logits are concatenated."""

    def __init__(self, logits, nvec):
        super().__init__(logits)
        self.nvec = [int(n) for n in nvec]
        splits = list(np.cumsum(self.nvec)[:-1])
        parts = ops.split(logits, splits, axis=-1) if splits else [logits]
        self.parts = [Categorical(p) for p in parts]
        self.noise_dim = sum(self.nvec)

    def _sample(self, uniform):
        splits = list(np.cumsum(self.nvec)[:-1])
        noises = ops.split(uniform, splits, axis=-1) if splits else [uniform]
        return ops.stack([d._sample(u) for d, u in zip(self.parts, noises)], axis=-1)

    def mode(self):
        return ops.stack([d.mode() for d in self.parts], axis=-1)

    def log_prob(self, actions):
        return sum(d.log_prob(actions[:, i]) for i, d in enumerate(self.parts))

    def entropy(self):
        return sum(d.entropy() for d in self.parts)

    def kl(self, other):
        return sum(d.kl(o) for d, o in zip(self.parts, other.parts))


class Bernoulli(Distribution):
    """MultiBinary(n): n independent coins, one logit each."""

    def __init__(self, logits):
        super().__init__(logits)
        self.logits = logits
        self.noise_dim = logits.shape[-1]

    def _sample(self, uniform):
        return ops.cast(uniform < ops.sigmoid(self.logits), "int32")

    def mode(self):
        return ops.cast(self.logits > 0, "int32")

    def log_prob(self, actions):
        x = ops.cast(actions, self.logits.dtype)
        return ops.sum(
            x * ops.log_sigmoid(self.logits) + (1.0 - x) * ops.log_sigmoid(-self.logits),
            axis=-1,
        )

    def entropy(self):
        p = ops.sigmoid(self.logits)
        return -ops.sum(
            p * ops.log_sigmoid(self.logits) + (1.0 - p) * ops.log_sigmoid(-self.logits),
            axis=-1,
        )

    def kl(self, other):
        p = ops.sigmoid(self.logits)
        return ops.sum(
            p * (ops.log_sigmoid(self.logits) - ops.log_sigmoid(other.logits))
            + (1.0 - p) * (ops.log_sigmoid(-self.logits) - ops.log_sigmoid(-other.logits)),
            axis=-1,
        )


class DiagGaussian(Distribution):
    """Box actions: independent normals; the head emits `concat(mean, log_std)`."""

    noise_kind = "normal"

    def __init__(self, flat_params):
        super().__init__(flat_params)
        dim = flat_params.shape[-1] // 2
        self.mean = flat_params[:, :dim]
        self.log_std = flat_params[:, dim:]
        self.std = ops.exp(self.log_std)
        self.noise_dim = dim

    def _sample(self, normal):
        return self.mean + self.std * normal

    def mode(self):
        return self.mean

    def log_prob(self, actions):
        z = (ops.convert_to_tensor(actions, self.mean.dtype) - self.mean) / self.std
        return ops.sum(-0.5 * ops.square(z) - self.log_std - 0.5 * _LOG_2PI, axis=-1)

    def entropy(self):
        return ops.sum(self.log_std + 0.5 * (1.0 + _LOG_2PI), axis=-1)

    def kl(self, other):
        return ops.sum(
            other.log_std
            - self.log_std
            + (ops.square(self.std) + ops.square(self.mean - other.mean))
            / (2.0 * ops.square(other.std))
            - 0.5,
            axis=-1,
        )


class StateDependentNoise(DiagGaussian):
    """gSDE (Raffin et al., 2021): a Gaussian whose noise is a linear function of the policy's features.

    The head emits `concat(mean, log_std(s), z(s))`: `z` the policy's last hidden features
    (F of them, gradient stopped, as SB3's default `learn_features=False`) and
    `std_j(s)^2 = sum_i z_i^2 sigma_ij^2 (+1e-6)` with `sigma` the learned (F, dim) matrix.
    Log-prob, entropy and KL are the diagonal Gaussian's with that state-dependent std.
    A sample is `mean + z @ E` for an exploration matrix `E` that the collector holds
    fixed for `sde_sample_freq` steps: smooth exploration, one perturbation per env.
    """

    def __init__(self, flat_params, action_dim):
        super().__init__(flat_params[:, : 2 * action_dim])
        self.latent = flat_params[:, 2 * action_dim :]
        self.noise_dim = self.latent.shape[-1] * action_dim

    def sample(self, noise=None, seed=None):
        if noise is None:
            raise ValueError("a gSDE sample needs its exploration matrix (the network's act() makes it)")
        return self._sample(noise)

    def _sample(self, exploration):
        """`exploration`: each row's (F, dim) matrix E, flattened; `ActorCriticNetwork.act` scales the
        collector's standard normals by the current sigma to make it."""
        matrices = ops.reshape(exploration, (-1, self.latent.shape[-1], self.mean.shape[-1]))
        return self.mean + ops.einsum("bf,bfa->ba", self.latent, matrices)


def param_size(action_space):
    """Width of the policy head's output for `action_space` (Gaussians: the mean part)."""
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete):
        return int(np.sum(action_space.nvec))
    if isinstance(action_space, spaces.MultiBinary):
        return int(np.prod(action_space.shape))
    if isinstance(action_space, spaces.Box):
        return int(np.prod(action_space.shape))
    raise UnsupportedSpaceError(
        f"unsupported action space {space_name(action_space)}: "
        "use Discrete, MultiDiscrete, MultiBinary or Box"
    )


def make_distribution(action_space, flat_params):
    """The distribution over `action_space` parameterised by `flat_params`."""
    if isinstance(action_space, spaces.Discrete):
        return Categorical(flat_params)
    if isinstance(action_space, spaces.MultiDiscrete):
        return MultiCategorical(flat_params, np.asarray(action_space.nvec).ravel())
    if isinstance(action_space, spaces.MultiBinary):
        return Bernoulli(flat_params)
    if isinstance(action_space, spaces.Box):
        dim = int(np.prod(action_space.shape))
        if flat_params.shape[-1] > 2 * dim:  # a gSDE head appends its features to (mean, log_std)
            return StateDependentNoise(flat_params, dim)
        return DiagGaussian(flat_params)
    raise UnsupportedSpaceError(f"unsupported action space {space_name(action_space)}")
