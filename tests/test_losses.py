"""`ppo_loss` against a float64 numpy re-implementation of the PPO objective.

The reference (tests/helpers/loss_reference.py) computes log-probabilities and entropies
from the raw head output with scipy (logsumexp / scipy.stats.norm), never with the
package's helpers.
"""

import numpy as np
import pytest
from gymnasium import spaces
from keras import ops

from tests.helpers.loss_reference import B, DISCRETE, SPACES, make_case, ref_ppo
from unstable_ppo.distributions import make_distribution
from unstable_ppo.losses import BATCH_KEYS, LossConfig, log_keys, ppo_loss

pytestmark = pytest.mark.quick  # python -m tests --quick

RTOL = 1e-5
ATOL = 1e-5
LOG_KEYS = (
    "loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance",
)


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
