"""The PPO objective (Schulman et al., 2017), once, in `keras.ops`.

    L = L_clip + vf_coef * L_value - ent_coef * H

Every mean is taken over valid rows only (`mask`): with gymnasium's NEXT_STEP
autoreset the step after an episode end is a reset row whose action the env
ignored, and it must not pull on the policy or the value function.
"""

import dataclasses

from keras import ops

from unstable_ppo.distributions import make_distribution


@dataclasses.dataclass(frozen=True)
class LossConfig:
    clip_range: float = 0.2
    clip_range_vf: float | None = None
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    normalize_advantage: bool = True


BATCH_KEYS = ("obs", "actions", "old_log_prob", "old_values", "advantages", "returns", "mask")
LOG_KEYS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance")


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


def ppo_loss(action_space, flat_params, values, batch, config):
    """The combined PPO loss of a minibatch and the diagnostics PPO users read.

    `flat_params`, `values`: the current network's outputs on `batch["obs"]`.
    Returns `(loss, logs)`.
    """
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
    eps = config.clip_range
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
    return loss, logs
