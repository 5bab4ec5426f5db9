"""The PPO objective in float64 numpy, and random cases to check `ppo_loss` against it.

The reference computes log-probabilities and entropies from the raw head output
with scipy (logsumexp / scipy.stats.norm), never with the package's helpers.
Used by tests/test_losses.py and the KL-loss tests in tests/test_options_unit.py.
"""

import numpy as np
import pytest
from gymnasium import spaces
from scipy import special, stats

B = 24
DISCRETE = spaces.Discrete(4)
BOX = spaces.Box(-1.0, 1.0, (3,), np.float32)
SPACES = pytest.mark.parametrize("space", [DISCRETE, BOX], ids=["discrete", "box"])


def ref_log_prob_entropy(space, flat, actions):
    flat = np.asarray(flat, np.float64)
    if isinstance(space, spaces.Discrete):
        log_p = flat - special.logsumexp(flat, axis=-1, keepdims=True)
        logp = log_p[np.arange(len(flat)), np.asarray(actions).astype(np.int64)]
        entropy = np.array([stats.entropy(np.exp(row)) for row in log_p])
        return logp, entropy
    d = flat.shape[-1] // 2
    mean, std = flat[:, :d], np.exp(flat[:, d:])
    logp = stats.norm.logpdf(np.asarray(actions, np.float64), mean, std).sum(-1)
    return logp, stats.norm.entropy(scale=std).sum(-1)


def ref_ppo(space, flat, values, batch, cfg):
    """The PPO loss and diagnostics, written out in numpy float64."""
    f = lambda k: np.asarray(batch[k], np.float64)  # noqa: E731
    mask = f("mask") > 0
    values = np.asarray(values, np.float64)[mask]
    adv, ret, old_v, old_lp = f("advantages")[mask], f("returns")[mask], f("old_values")[mask], f("old_log_prob")[mask]
    logp, ent = ref_log_prob_entropy(space, np.asarray(flat)[mask], np.asarray(batch["actions"])[mask])

    if cfg.normalize_advantage:
        adv = (adv - adv.mean()) / (adv.std(ddof=0) + 1e-8)
    ratio = np.exp(logp - old_lp)
    clipped_ratio = np.clip(ratio, 1 - cfg.clip_range, 1 + cfg.clip_range)
    policy_loss = -np.mean(np.minimum(adv * ratio, adv * clipped_ratio))

    err = (values - ret) ** 2
    if cfg.clip_range_vf is not None:
        v_clipped = old_v + np.clip(values - old_v, -cfg.clip_range_vf, cfg.clip_range_vf)
        err = np.maximum(err, (v_clipped - ret) ** 2)
    value_loss = 0.5 * np.mean(err)
    entropy = np.mean(ent)

    return {
        "loss": policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": np.mean((ratio - 1) - np.log(ratio)),
        "clip_fraction": np.mean(np.abs(ratio - 1) > cfg.clip_range),
        "explained_variance": 1 - np.var(ret - values) / max(np.var(ret), 1e-8),
    }



def make_case(space, seed, n_rows=B):
    """Random head output, values and a batch whose ratios straddle the clip range."""
    rng = np.random.default_rng(seed)
    if isinstance(space, spaces.Discrete):
        flat = rng.normal(0.0, 1.0, (n_rows, space.n))
        actions = rng.integers(0, space.n, n_rows).astype(np.int32)
    else:
        d = space.shape[0]
        flat = np.concatenate([rng.normal(0.0, 1.0, (n_rows, d)), rng.uniform(-1.0, 0.5, (n_rows, d))], -1)
        actions = (flat[:, :d] + np.exp(flat[:, d:]) * rng.normal(size=(n_rows, d))).astype(np.float32)
    flat = flat.astype(np.float32)
    logp, _ = ref_log_prob_entropy(space, flat, actions)
    returns = rng.normal(1.0, 2.0, n_rows)
    values = returns + rng.normal(0.0, 1.0, n_rows)
    mask = np.ones(n_rows, np.float32)
    mask[rng.choice(n_rows, n_rows // 3, replace=False)] = 0.0
    batch = {
        "obs": rng.normal(size=(n_rows, 2)).astype(np.float32),
        "actions": actions,
        "old_log_prob": (logp + rng.normal(0.0, 0.3, n_rows)).astype(np.float32),
        "old_values": (values + rng.normal(0.0, 0.3, n_rows)).astype(np.float32),
        "advantages": rng.normal(0.5, 1.5, n_rows).astype(np.float32),
        "returns": returns.astype(np.float32),
        "mask": mask,
    }
    return flat, values.astype(np.float32), batch
