"""`ppo_loss` against a float64 numpy re-implementation of the PPO objective.

The reference computes log-probabilities and entropies from the raw head output
with scipy (logsumexp / scipy.stats.norm), never with the package's helpers.
"""

import numpy as np
import pytest
from gymnasium import spaces
from keras import ops
from scipy import special, stats

from unstable_ppo.distributions import make_distribution
from unstable_ppo.losses import BATCH_KEYS, LossConfig, log_keys, ppo_loss

RTOL = 1e-5
ATOL = 1e-5
B = 24
LOG_KEYS = (
    "loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance",
)

DISCRETE = spaces.Discrete(4)
BOX = spaces.Box(-1.0, 1.0, (3,), np.float32)
SPACES = pytest.mark.parametrize("space", [DISCRETE, BOX], ids=["discrete", "box"])


# --------------------------------------------------------------------------- reference


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


# --------------------------------------------------------------------------- fixtures


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


def run_loss(space, flat, values, batch, cfg):
    tensors = {k: ops.convert_to_tensor(v) for k, v in batch.items()}
    loss, logs = ppo_loss(space, ops.convert_to_tensor(flat), ops.convert_to_tensor(values), tensors, cfg)
    out = {k: float(ops.convert_to_numpy(v)) for k, v in logs.items()}
    assert set(out) == set(log_keys(space, cfg)) and set(LOG_KEYS) <= set(out)
    assert float(ops.convert_to_numpy(loss)) == out["loss"]
    return out


def assert_logs_close(got, expected, rtol=RTOL, atol=ATOL):
    for key in LOG_KEYS:
        np.testing.assert_allclose(got[key], expected[key], rtol=rtol, atol=atol, err_msg=key)


CONFIGS = [
    LossConfig(),
    LossConfig(clip_range=0.1, clip_range_vf=0.1, ent_coef=0.01, vf_coef=0.5),
    LossConfig(clip_range=0.3, clip_range_vf=0.2, ent_coef=0.05, vf_coef=0.25, normalize_advantage=False),
    LossConfig(clip_range=0.2, ent_coef=0.1, vf_coef=1.0, normalize_advantage=False),
]


# --------------------------------------------------------------------------- tests


@SPACES
def test_ppo_loss_matches_numpy_reference(space):
    assert set(make_case(space, 0)[2]) == set(BATCH_KEYS)
    for i, cfg in enumerate(CONFIGS):
        flat, values, batch = make_case(space, 10 + i)
        expected = ref_ppo(space, flat, values, batch, cfg)
        # the case exercises both sides of every clip
        assert 0.1 < expected["clip_fraction"] < 0.9
        if cfg.clip_range_vf is not None:
            unclipped = ref_ppo(space, flat, values, batch, LossConfig(clip_range_vf=None))
            assert expected["value_loss"] > unclipped["value_loss"] + 1e-3
        assert_logs_close(run_loss(space, flat, values, batch, cfg), expected)

    # Tiny advantages (std ~1e-4): normalization divides by std + 1e-8 (population std),
    # which differs visibly from e.g. sqrt(var + 1e-8) here.
    flat, values, batch = make_case(space, 20)
    batch["advantages"] = (batch["advantages"] * 1e-4).astype(np.float32)
    cfg = LossConfig()
    assert_logs_close(run_loss(space, flat, values, batch, cfg), ref_ppo(space, flat, values, batch, cfg))


@SPACES
def test_advantage_normalization_is_per_minibatch_and_affine_invariant(space):
    flat, values, batch = make_case(space, 30)
    shifted = dict(batch, advantages=(3.0 * batch["advantages"] + 7.0).astype(np.float32))
    base = run_loss(space, flat, values, batch, LossConfig())
    moved = run_loss(space, flat, values, shifted, LossConfig())
    np.testing.assert_allclose(moved["policy_loss"], base["policy_loss"], rtol=1e-4, atol=1e-5)
    # without normalization the same change moves the policy loss
    raw = run_loss(space, flat, values, batch, LossConfig(normalize_advantage=False))
    raw_moved = run_loss(space, flat, values, shifted, LossConfig(normalize_advantage=False))
    assert abs(raw_moved["policy_loss"] - raw["policy_loss"]) > 1.0


@SPACES
def test_masked_rows_do_not_change_any_output(space):
    rng = np.random.default_rng(40)
    for cfg in (CONFIGS[1], CONFIGS[2]):
        flat, values, batch = make_case(space, 41)
        masked = batch["mask"] == 0
        k = int(masked.sum())
        assert 0 < k < B
        base = run_loss(space, flat, values, batch, cfg)
        assert_logs_close(base, ref_ppo(space, flat, values, batch, cfg))

        wild = {key: v.copy() for key, v in batch.items()}
        wild_flat, wild_values = flat.copy(), values.copy()
        for key in ("advantages", "returns", "old_values"):
            wild[key][masked] = rng.uniform(-1e3, 1e3, k)
        wild["old_log_prob"][masked] = rng.uniform(-5.0, 5.0, k)
        wild["obs"][masked] = 1e3
        wild_values[masked] = rng.uniform(-1e3, 1e3, k)
        wild_flat[masked] = rng.uniform(-5.0, 5.0, (k, flat.shape[1]))
        if isinstance(space, spaces.Discrete):
            wild["actions"][masked] = (wild["actions"][masked] + 1) % space.n
        else:
            wild["actions"][masked] = rng.uniform(-50.0, 50.0, (k, space.shape[0]))
        got = run_loss(space, wild_flat, wild_values, wild, cfg)
        assert_logs_close(got, base, rtol=1e-6, atol=1e-6)

        # and the same as a batch holding only the valid rows
        keep = ~masked
        only_valid = {key: v[keep] for key, v in batch.items()}
        assert_logs_close(run_loss(space, flat[keep], values[keep], only_valid, cfg), base)


@SPACES
def test_ratio_is_one_when_log_probs_equal_old(space):
    flat, values, batch = make_case(space, 50)
    # old_log_prob := the current policy's own log-probability of the actions
    current = make_distribution(space, ops.convert_to_tensor(flat)).log_prob(ops.convert_to_tensor(batch["actions"]))
    batch["old_log_prob"] = np.asarray(ops.convert_to_numpy(current), np.float32)
    mask = batch["mask"]
    adv = batch["advantages"].astype(np.float64)

    for cfg in (LossConfig(ent_coef=0.01), LossConfig(ent_coef=0.01, normalize_advantage=False)):
        got = run_loss(space, flat, values, batch, cfg)
        assert abs(got["approx_kl"]) < 1e-10
        assert got["clip_fraction"] == 0.0
        mean_adv = np.sum(adv * mask) / np.sum(mask)
        if cfg.normalize_advantage:
            # -mean of normalized advantages = 0
            assert abs(got["policy_loss"]) < 1e-6
        else:
            assert abs(mean_adv) > 0.1
            np.testing.assert_allclose(got["policy_loss"], -mean_adv, rtol=RTOL, atol=ATOL)
        expected = ref_ppo(space, flat, values, batch, cfg)
        np.testing.assert_allclose(
            got["loss"], got["policy_loss"] + cfg.vf_coef * expected["value_loss"] - cfg.ent_coef * expected["entropy"],
            rtol=RTOL, atol=ATOL,
        )


def test_explained_variance_extremes():
    flat, values, batch = make_case(DISCRETE, 60)
    mask = batch["mask"] > 0
    ret = batch["returns"]
    # a perfect critic explains everything
    assert run_loss(DISCRETE, flat, ret.copy(), batch, LossConfig())["explained_variance"] == pytest.approx(1.0, abs=1e-6)
    # a constant critic explains nothing
    const = np.full(B, 3.0, np.float32)
    assert run_loss(DISCRETE, flat, const, batch, LossConfig())["explained_variance"] == pytest.approx(0.0, abs=1e-5)
    # V = mean(R) + 0.5 (R - mean(R)) explains 1 - 0.25 = 0.75 of the variance
    half = (ret[mask].mean() + 0.5 * (ret - ret[mask].mean())).astype(np.float32)
    assert run_loss(DISCRETE, flat, half, batch, LossConfig())["explained_variance"] == pytest.approx(0.75, abs=1e-5)
