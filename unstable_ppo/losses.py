"""The PPO objective (Schulman et al., 2017), once, in `keras.ops`.

    L = L_clip + vf_coef * L_value - ent_coef * H  [+ eta * L_bounds]

or, with `use_kl_loss`, the adaptive KL-penalty objective of the PPO paper (section 4)
as the TF1 reference code (the first seed document) wrote it (after pat-coady/trpo):

    L = -E[r(θ) A] + β KL + eta_kl * max(0, KL - 2 kl_target)² + vf_coef * L_value - ent_coef * H

where KL is the analytic KL(old || new) of the action distributions, averaged
over the minibatch, and β lives in a non-trainable model variable that
`adapt_kl_penalty` servos between updates.

β and the clip range ε are the live coefficients (`LIVE_COEFFICIENTS`): the model
keeps one non-trainable variable for each and passes them all to `ppo_loss` at
every step, so a schedule or a servo changes them without recompiling anything.
A new annealed coefficient is one more entry there and its use in `ppo_loss` (plus
the hyperparameter that turns its annealing on).

Every mean is taken over valid rows only (`mask`): with gymnasium's NEXT_STEP
autoreset the step after an episode end is a reset row whose action the env
ignored, and it must not pull on the policy or the value function.
"""

from typing import NamedTuple

import numpy as np
from gymnasium import spaces
from keras import ops

from unstable_ppo.config import LossConfig  # the loss's settings, defined with the others
from unstable_ppo.distributions import DiagGaussian, make_distribution


BATCH_KEYS = ("obs", "actions", "old_log_prob", "old_values", "advantages", "returns", "mask")
LOG_KEYS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance")

# The adaptive-KL servo's constants (pat-coady/trpo, kept by the TF1 reference code).
BETA_MIN, BETA_MAX = 1.0 / 35.0, 35.0
LR_MULTIPLIER_MIN, LR_MULTIPLIER_MAX = 0.1, 3.0


class LiveCoefficient(NamedTuple):
    """A coefficient the loss reads from a model variable at every step, not from `LossConfig`.

    `name`: the variable's name (and the model attribute's, and `ppo_loss`'s keyword).
    `initial`: its value in a new model. `setting`: the `LossConfig` field that `compile`
    resets it to, and that an annealed one is a fraction of; None for one that keeps its
    value across compiles (β, the KL servo's state). `anneal`: the hyperparameter that
    turns on its linear decay to 0 over training (`anneal_coefficients`), or None.
    """

    name: str
    initial: float
    setting: str | None = None
    anneal: str | None = None


# In the model's variable creation order: a checkpoint from before one was added lacks the last ones.
LIVE_COEFFICIENTS = (
    LiveCoefficient("kl_beta", 1.0),
    LiveCoefficient("clip_epsilon", LossConfig.clip_range, setting="clip_range", anneal="anneal_clip_range"),
)


def live_values(config, given):
    """`{name: value}` of every live coefficient: those in `given` as given, the others their defaults.

    A given one is a variable or tensor, read where the loss uses it (`_read`), so a compiled
    function reads its current value; a default (the `setting` in `config`, else `initial`)
    is a Python number.
    """
    unknown = set(given) - {c.name for c in LIVE_COEFFICIENTS}
    if unknown:
        raise TypeError(f"unknown live coefficients {sorted(unknown)}: the loss has "
                        f"{[c.name for c in LIVE_COEFFICIENTS]}")
    values = {}
    for c in LIVE_COEFFICIENTS:
        value = given.get(c.name)
        values[c.name] = (getattr(config, c.setting) if c.setting else c.initial) if value is None else value
    return values


def _read(value):
    """A live coefficient's value in the loss: a variable or tensor as a tensor, a Python number as is."""
    return value if isinstance(value, (int, float)) else ops.convert_to_tensor(value)


def anneal_coefficients(model, hp, remaining):
    """Set each annealed live coefficient to its setting times `remaining`, the linear schedules' factor (1 -> 0)."""
    for c in LIVE_COEFFICIENTS:
        if c.anneal and getattr(hp, c.anneal):
            model.live_coefficients[c.name].assign(getattr(hp, c.setting) * remaining)


def batch_keys(config):
    """The rollout columns the loss reads: the KL loss also needs the old policy's parameters."""
    return BATCH_KEYS + ("old_params",) if config.use_kl_loss else BATCH_KEYS


def log_keys(action_space, config):
    """The names `ppo_loss` logs for this action space and loss: a fixed set per model."""
    keys = LOG_KEYS
    if isinstance(action_space, spaces.Box):
        keys += ("std", "bounds_penalty")
    if config.use_kl_loss:
        keys += ("kl",)
    return keys


def adapt_kl_penalty(kl, kl_target, beta, lr_multiplier):
    """The TF1 reference code's servo on β and the learning-rate multiplier, run once after each update.

    β grows when the update moved the policy more than 2·kl_target and shrinks when it
    moved less than kl_target/2; a β at its extremes means the step size itself is off,
    so the learning rate follows. Returns `(beta, lr_multiplier)`.
    """
    if kl > 2.0 * kl_target:
        beta = min(BETA_MAX, 1.5 * beta)
        if beta > 30.0:
            lr_multiplier /= 1.5
    elif kl < kl_target / 2.0:
        beta = max(BETA_MIN, beta / 1.5)
        if beta < 1.0 / 30.0:
            lr_multiplier *= 1.5
    return beta, min(LR_MULTIPLIER_MAX, max(LR_MULTIPLIER_MIN, lr_multiplier))


def masked_mean(x, mask, count):
    # `where`, not `x * mask`: a masked row must not leak even if it holds inf or NaN.
    return ops.sum(ops.where(mask > 0, x, 0.0)) / count


def explained_variance(values, returns, mask, count):
    """1 - Var[R - V] / Var[R]: 1 is a perfect critic, 0 no better than a constant."""
    mean_r = masked_mean(returns, mask, count)
    var_r = masked_mean(ops.square(returns - mean_r), mask, count)
    diff = returns - values
    mean_d = masked_mean(diff, mask, count)
    var_d = masked_mean(ops.square(diff - mean_d), mask, count)
    return 1.0 - var_d / ops.maximum(var_r, 1e-8)


def bounds_penalty(action_space, mean, mask, count):
    """mean(max(0, |μ - centre| - half_range)²) over rows and the dimensions with finite bounds.

    The TF1 reference code's hinge: a Gaussian whose mean leaves the Box wastes its samples on clipped
    actions, and the clipped surrogate cannot see that.
    """
    low = np.asarray(action_space.low, np.float64).reshape(-1)
    high = np.asarray(action_space.high, np.float64).reshape(-1)
    finite = np.isfinite(low) & np.isfinite(high)
    if not finite.any():
        return ops.zeros(())
    low, high = np.where(finite, low, 0.0), np.where(finite, high, 0.0)
    centre = ops.convert_to_tensor((low + high) / 2.0, "float32")
    half_range = ops.convert_to_tensor((high - low) / 2.0, "float32")
    weight = ops.convert_to_tensor(finite, "float32")
    excess = ops.maximum(ops.abs(mean - centre) - half_range, 0.0)
    per_row = ops.sum(ops.square(excess) * weight, axis=-1) / float(finite.sum())
    return masked_mean(per_row, mask, count)


def ppo_loss(action_space, flat_params, values, batch, config, **coefficients):
    """The combined PPO loss of a minibatch and the diagnostics PPO users read.

    `flat_params`, `values`: the current network's outputs on `batch["obs"]`.
    `coefficients`: live coefficients by name (`LIVE_COEFFICIENTS`: `kl_beta`, β of the KL
    loss, and `clip_epsilon`, the clip range ε), as tensors or variables so that compiled
    functions see their current values; one not given takes its default (`live_values`).
    Returns `(loss, logs)`.
    """
    live = live_values(config, coefficients)
    dist = make_distribution(action_space, flat_params)
    mask = ops.cast(batch["mask"], "float32")
    count = ops.maximum(ops.sum(mask), 1.0)

    advantages = batch["advantages"]
    if config.normalize_advantage:
        mean = masked_mean(advantages, mask, count)
        std = ops.sqrt(masked_mean(ops.square(advantages - mean), mask, count))
        advantages = (advantages - mean) / (std + 1e-8)

    log_prob = dist.log_prob(batch["actions"])
    log_ratio = log_prob - batch["old_log_prob"]
    ratio = ops.exp(log_ratio)
    eps = _read(live["clip_epsilon"])
    if config.use_kl_loss:
        if "old_params" not in batch:
            raise ValueError("the KL loss needs the old policy's parameters: batch['old_params'] is missing")
        kl = masked_mean(make_distribution(action_space, batch["old_params"]).kl(dist), mask, count)
        surrogate = advantages * ratio
        hinge = ops.square(ops.maximum(kl - 2.0 * config.kl_target, 0.0))
        policy_loss = -masked_mean(surrogate, mask, count) + _read(live["kl_beta"]) * kl
        policy_loss = policy_loss + config.eta_kl * hinge
    else:
        surrogate = ops.minimum(advantages * ratio, advantages * ops.clip(ratio, 1.0 - eps, 1.0 + eps))
        policy_loss = -masked_mean(surrogate, mask, count)

    returns = batch["returns"]
    value_error = ops.square(values - returns)
    if config.clip_range_vf is not None:
        old_values = batch["old_values"]
        clipped = old_values + ops.clip(values - old_values, -config.clip_range_vf, config.clip_range_vf)
        value_error = ops.maximum(value_error, ops.square(clipped - returns))
    value_loss = 0.5 * masked_mean(value_error, mask, count)

    entropy = masked_mean(dist.entropy(), mask, count)
    loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
    continuous = isinstance(dist, DiagGaussian)
    if continuous:
        penalty = bounds_penalty(action_space, dist.mean, mask, count)
        if config.eta > 0:
            loss = loss + config.eta * penalty

    logs = {
        "loss": loss,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        # The low-variance estimator E[(r - 1) - log r] (Schulman, "Approximating KL").
        "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask, count),
        "clip_fraction": masked_mean(ops.cast(ops.abs(ratio - 1.0) > eps, "float32"), mask, count),
        "explained_variance": explained_variance(values, returns, mask, count),
    }
    if continuous:
        logs["std"] = masked_mean(ops.mean(dist.std, axis=-1), mask, count)
        logs["bounds_penalty"] = penalty
    if config.use_kl_loss:
        logs["kl"] = kl
    return loss, logs
