"""The algorithm options taken from the TF1 reference code, piece by piece.

The adaptive KL loss and its beta / learning-rate servo, the eta hinges (on the KL and on
the action bounds), reward transforms, observation and reward normalization, clip-range
annealing: formulas against numpy, single rollouts and updates, and the argument checks.
The same options in training and runner runs: tests/test_options_e2e.py.
"""

import json

import numpy as np
import pytest
from gymnasium import spaces
from keras import ops
from scipy import special

from tests.helpers.envs import ScriptedRewardEnv, SpaceEnv
from tests.helpers.loss_reference import BOX, DISCRETE, SPACES, make_case, ref_log_prob_entropy, ref_ppo
from tests.helpers.settings import SMALL_2X64
from unstable_ppo import PPO
from unstable_ppo.losses import LossConfig, adapt_kl_penalty, log_keys, ppo_loss
from unstable_ppo.normalize import Normalizer, RunningMeanStd, transform_reward


# --------------------------------------------------------------------------- the beta / lr servo


@pytest.mark.parametrize(
    "kl, beta, mult, expected",
    [
        (0.01, 1.0, 1.0, (1.0, 1.0)),  # inside [target/2, 2 target]: nothing moves
        (0.02, 1.0, 1.0, (1.0, 1.0)),  # exactly 2 target is not above it
        (0.005, 1.0, 1.0, (1.0, 1.0)),  # exactly target/2 is not below it
        (0.05, 1.0, 1.0, (1.5, 1.0)),
        (0.001, 1.0, 1.0, (1.0 / 1.5, 1.0)),
        (0.05, 20.0, 1.0, (30.0, 1.0)),  # 30 is not > 30: the lr stays
        (0.05, 30.0, 1.0, (35.0, 1.0 / 1.5)),  # 45 clipped to 35, and the lr backs off
        (0.05, 35.0, 0.12, (35.0, 0.1)),  # 0.08 clipped to the multiplier's floor
        (0.001, 0.04, 1.0, (1.0 / 35.0, 1.5)),  # 0.0267 clipped to 1/35 < 1/30: the lr grows
        (0.001, 1.0 / 35.0, 2.5, (1.0 / 35.0, 3.0)),  # 3.75 clipped to the ceiling
        (0.001, 0.06, 1.0, (0.04, 1.0)),  # 0.04 >= 1/30: the lr stays
        (0.05, 1.0, 5.0, (1.5, 3.0)),  # a multiplier out of range is brought back
    ],
)
def test_adapt_kl_penalty_table(kl, beta, mult, expected):
    got = adapt_kl_penalty(kl, 0.01, beta, mult)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


# --------------------------------------------------------------------------- the loss against numpy


def ref_kl(space, old, new):
    old, new = np.asarray(old, np.float64), np.asarray(new, np.float64)
    if isinstance(space, spaces.Discrete):
        lp_old = old - special.logsumexp(old, axis=-1, keepdims=True)
        lp_new = new - special.logsumexp(new, axis=-1, keepdims=True)
        return np.sum(np.exp(lp_old) * (lp_old - lp_new), axis=-1)
    d = old.shape[-1] // 2
    m0, s0, m1, s1 = old[:, :d], np.exp(old[:, d:]), new[:, :d], np.exp(new[:, d:])
    return np.sum(np.log(s1 / s0) + (s0**2 + (m0 - m1) ** 2) / (2 * s1**2) - 0.5, axis=-1)


def ref_bounds(space, flat, mask):
    d = space.shape[0]
    mean = np.asarray(flat, np.float64)[:, :d]
    centre, half = (space.high + space.low) / 2.0, (space.high - space.low) / 2.0
    excess = np.maximum(np.abs(mean - centre) - half, 0.0)
    return np.mean((excess**2)[mask > 0])


def ref_kl_loss(space, flat, values, batch, cfg, beta):
    """The KL-penalty objective in float64 numpy: value and entropy terms from the clipped reference."""
    mask = batch["mask"] > 0
    base = ref_ppo(space, flat, values, batch, cfg)
    adv = batch["advantages"][mask].astype(np.float64)
    if cfg.normalize_advantage:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    logp, _ = ref_log_prob_entropy(space, np.asarray(flat)[mask], np.asarray(batch["actions"])[mask])
    ratio = np.exp(logp - batch["old_log_prob"][mask])
    kl = np.mean(ref_kl(space, batch["old_params"], flat)[mask])
    policy = -np.mean(ratio * adv) + beta * kl + cfg.eta_kl * max(0.0, kl - 2 * cfg.kl_target) ** 2
    loss = policy + cfg.vf_coef * base["value_loss"] - cfg.ent_coef * base["entropy"]
    if isinstance(space, spaces.Box):
        loss += cfg.eta * ref_bounds(space, flat, batch["mask"])
    return loss, policy, kl


def run(space, flat, values, batch, cfg, beta=1.0):
    tensors = {k: ops.convert_to_tensor(v) for k, v in batch.items()}
    loss, logs = ppo_loss(space, ops.convert_to_tensor(flat), ops.convert_to_tensor(values), tensors, cfg,
                          kl_beta=ops.convert_to_tensor(beta, "float32"))
    out = {k: float(ops.convert_to_numpy(v)) for k, v in logs.items()}
    assert set(out) == set(log_keys(space, cfg))
    return float(ops.convert_to_numpy(loss)), out


def with_old_params(space, flat, batch, seed, spread):
    rng = np.random.default_rng(seed)
    return dict(batch, old_params=(flat + rng.normal(0.0, spread, flat.shape)).astype(np.float32))


@SPACES
@pytest.mark.parametrize("beta", [0.3, 4.0])
def test_kl_loss_matches_numpy(space, beta):
    hinge_seen = set()
    for i, cfg in enumerate([
        LossConfig(use_kl_loss=True, kl_target=0.01, eta_kl=50.0, ent_coef=0.01),  # hinge active
        LossConfig(use_kl_loss=True, kl_target=5.0, eta_kl=50.0, normalize_advantage=False),  # hinge off
        LossConfig(use_kl_loss=True, kl_target=0.02, eta_kl=10.0, vf_coef=1.0, eta=2.0),
    ]):
        flat, values, batch = make_case(space, 70 + i)
        batch = with_old_params(space, flat, batch, 80 + i, 0.3)
        expected_loss, expected_policy, expected_kl = ref_kl_loss(space, flat, values, batch, cfg, beta)
        hinge_seen.add(expected_kl > 2 * cfg.kl_target)
        loss, logs = run(space, flat, values, batch, cfg, beta)
        np.testing.assert_allclose(logs["kl"], expected_kl, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(logs["policy_loss"], expected_policy, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, atol=1e-5)
    assert hinge_seen == {True, False}  # both sides of the eta_kl hinge were exercised


def test_bounds_penalty_matches_numpy_and_only_counts_finite_bounds():
    flat, values, batch = make_case(BOX, 90)
    flat[:, :3] *= 3.0  # many means outside [-1, 1]
    cfg = LossConfig()
    expected = ref_bounds(BOX, flat, batch["mask"])
    assert expected > 0.1
    base_loss, base = run(BOX, flat, values, batch, cfg)
    np.testing.assert_allclose(base["bounds_penalty"], expected, rtol=1e-5)
    loss, _ = run(BOX, flat, values, batch, LossConfig(eta=0.7))
    np.testing.assert_allclose(loss - base_loss, 0.7 * expected, rtol=1e-4, atol=1e-6)

    # A dimension without finite bounds is left out of the penalty (and of its mean).
    half_open = spaces.Box(np.array([-1.0, -np.inf, -2.0], np.float32),
                           np.array([1.0, np.inf, 0.0], np.float32))
    mask = batch["mask"] > 0
    mean = flat[:, :3].astype(np.float64)
    excess = np.maximum(np.abs(mean - np.array([0.0, 0.0, -1.0])) - np.array([1.0, 0.0, 1.0]), 0.0)[:, [0, 2]]
    _, logs = run(half_open, flat, values, batch, cfg)
    np.testing.assert_allclose(logs["bounds_penalty"], np.mean((excess**2)[mask]), rtol=1e-5)
    unbounded = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    assert run(unbounded, flat, values, batch, LossConfig(eta=5.0))[1]["bounds_penalty"] == 0.0


def test_std_log_is_the_mean_gaussian_std():
    flat, values, batch = make_case(BOX, 95)
    mask = batch["mask"] > 0
    _, logs = run(BOX, flat, values, batch, LossConfig())
    np.testing.assert_allclose(logs["std"], np.exp(flat[:, 3:].astype(np.float64))[mask].mean(), rtol=1e-5)
    assert "std" not in run(DISCRETE, *make_case(DISCRETE, 95), LossConfig())[1]


# --------------------------------------------------------------------------- the KL loss inside PPO


def rollout_batch(ppo):
    buffer = ppo.make_buffer()
    ppo.collector.reset()
    ppo.collect_rollout(buffer)
    batch = buffer.training_batch()
    batch["old_params"] = ppo._policy_params(batch)
    return batch


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_kl_loss_first_minibatch_has_zero_kl_and_ratio_one(env_id):
    ppo = PPO(env_id, seed=3, use_kl_loss=True, init_beta=2.0, **SMALL_2X64)
    batch = rollout_batch(ppo)
    idx = np.arange(ppo.hp.batch_size)[None]
    logs = ppo.model.make_update_function()(batch, idx)
    assert abs(logs["kl"]) < 1e-7 and abs(logs["approx_kl"]) < 1e-7 and logs["clip_fraction"] == 0.0
    # ratio 1 and KL 0: the policy loss is -mean(normalized advantages) = 0, whatever beta is
    assert abs(logs["policy_loss"]) < 1e-5
    # ...and the step moved the policy, so the KL to the rollout policy is no longer 0
    assert ppo._rollout_kl(batch) > 1e-9


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_compiled_epoch_reads_the_current_beta(env_id):
    """beta is a variable: changing it changes the compiled loss without rebuilding the function."""
    ppo = PPO(env_id, seed=4, use_kl_loss=True, **SMALL_2X64)
    batch = rollout_batch(ppo)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.3, batch["old_params"].shape).astype(np.float32)
    batch["old_params"] = batch["old_params"] + noise
    update = ppo.model.make_update_function()
    idx = np.arange(ppo.hp.batch_size)[None]
    weights = ppo.model.get_weights()
    logs = {}
    for beta in (0.5, 8.0):
        ppo.model.set_weights(weights)
        ppo.model.kl_beta.assign(beta)
        logs[beta] = update(batch, idx)
    assert ppo.model.make_update_function() is update
    kl = logs[0.5]["kl"]
    assert kl > 1e-3 and logs[8.0]["kl"] == pytest.approx(kl, rel=1e-5)
    np.testing.assert_allclose(logs[8.0]["loss"] - logs[0.5]["loss"], 7.5 * kl, rtol=1e-3)


def test_buffer_keeps_the_unclipped_action_and_its_log_prob():
    """Only the env gets the clipped action; the ratio needs the log-probability of the sampled one."""
    env = ScriptedRewardEnv()
    seen = []
    step = env.step
    env.step = lambda action: (seen.append(np.array(action)), step(action))[1]
    ppo = PPO(env, seed=0, num_steps=64, num_epochs=1, batch_size=64, log_std_init=1.0)
    buffer = ppo.make_buffer()
    ppo.collector.reset()
    ppo.collect_rollout(buffer)
    actions = buffer.actions[:, 0]
    assert np.mean(np.abs(actions) > 1.0) > 0.3  # std e = 2.7 against bounds of ±1
    np.testing.assert_array_equal(np.stack(seen), np.clip(actions, -1.0, 1.0))
    params, _ = ppo.model(buffer.obs[:, 0])
    logp = ppo.model.distribution(params).log_prob(actions)
    np.testing.assert_allclose(ops.convert_to_numpy(logp), buffer.log_probs[:, 0], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- rewards and normalization


def test_reward_transforms_match_the_tf1_reference_code():
    r = np.array([-1000.0, -0.05, 0.0, 0.05, 250.0], np.float32)
    np.testing.assert_array_equal(transform_reward(r, "identity"), r)
    np.testing.assert_allclose(transform_reward(r, "scale"), r * 0.01, rtol=1e-6)
    np.testing.assert_allclose(transform_reward(r, "scale", 0.5), r * 0.5, rtol=1e-6)
    positive = [-0.001, -0.0005, 0.0, 0.0005, 2.5]
    np.testing.assert_allclose(transform_reward(r, "positive"), positive, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown reward_transform 'log'"):
        transform_reward(r, "log")


@pytest.mark.parametrize(
    "transform, scale", [("identity", 0.01), ("scale", 0.01), ("scale", 0.2), ("positive", 0.01)]
)
def test_rollout_stores_transformed_rewards(transform, scale):
    env = ScriptedRewardEnv()
    ppo = PPO(env, seed=0, num_steps=10, num_epochs=1, batch_size=10, reward_transform=transform,
              reward_scale=scale)
    buffer = ppo.make_buffer()
    ppo.collector.reset()
    ppo.collect_rollout(buffer)
    raw = np.array([ScriptedRewardEnv.SCRIPT[t % 5] for t in range(10)], np.float32)
    expected = {"identity": raw, "scale": raw * scale, "positive": np.maximum(-0.001, raw / 100)}[transform]
    np.testing.assert_allclose(buffer.rewards[:, 0], expected, rtol=1e-6)


def test_running_mean_std_matches_numpy_on_the_concatenation():
    rng = np.random.default_rng(0)
    rms = RunningMeanStd((3,))
    batches = [rng.normal([1.0, -20.0, 300.0], [0.1, 5.0, 40.0], (n, 3)) for n in (1, 7, 64, 1, 500, 33)]
    for b in batches:
        rms.update(b)
    data = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, data.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rms.var, data.var(axis=0), rtol=1e-5, atol=1e-6)
    assert rms.count == pytest.approx(len(data))
    restored = RunningMeanStd.from_json(json.loads(json.dumps(rms.to_json())), (3,))
    np.testing.assert_array_equal(restored.mean, rms.mean)
    np.testing.assert_array_equal(restored.var, rms.var)
    with pytest.raises(ValueError, match="do not fit"):
        RunningMeanStd.from_json(rms.to_json(), (2,))


def test_reward_scaling_divides_by_the_std_of_the_discounted_return():
    rng = np.random.default_rng(1)
    gamma, n = 0.9, 3
    norm = Normalizer((2,), n, gamma, normalize_reward=True)
    ret, seen = np.zeros(n), []
    for t in range(200):
        r = rng.normal(2.0, 5.0, n)
        dones = rng.random(n) < 0.05
        got = norm.scale_rewards(r, dones)
        ret = ret * gamma + r
        seen.extend(ret)
        expected = np.clip(r / np.sqrt(np.var(seen) + 1e-8), -10, 10)
        np.testing.assert_allclose(got, expected, rtol=2e-3)
        ret[dones] = 0.0
    x = np.ones((1, 2), np.float32)
    assert norm.obs_rms is None and norm.obs(x) is x  # no obs normalization asked for


def test_normalized_obs_are_what_the_network_saw():
    env = ScriptedRewardEnv()
    ppo = PPO(env, seed=0, num_steps=32, num_epochs=1, batch_size=32, normalize_obs=True)
    buffer = ppo.make_buffer()
    ppo.collector.reset()
    ppo.collect_rollout(buffer)
    raw = np.stack(env.seen)  # the reset observation and 32 steps
    np.testing.assert_allclose(ppo.normalizer.obs_rms.mean, raw.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ppo.normalizer.obs_rms.var, raw.var(0), rtol=1e-3, atol=1e-4)
    assert np.abs(raw[:, 1]).min() > 20 and np.abs(buffer.obs).max() <= 10.0
    assert abs(buffer.obs[:, 0, 1].mean()) < 2.0  # centred, where the raw feature sits near -36
    # the stored values were computed from the stored (normalized) observations
    _, values = ppo.model(buffer.obs[:, 0])
    np.testing.assert_allclose(ops.convert_to_numpy(values), buffer.values[:, 0], rtol=1e-4, atol=1e-5)
    # the last observation's bootstrap value uses the normalized observation too
    last = ppo.normalizer.obs(ppo.collector.last_obs)
    _, v_last = ppo.model(last)
    np.testing.assert_allclose(buffer.next_values[-1, 0], ops.convert_to_numpy(v_last)[0],
                               rtol=1e-4, atol=1e-5)


def test_predict_uses_the_normalized_observations():
    ppo = PPO("Pendulum-v1", seed=0, normalize_obs=True, **SMALL_2X64)
    ppo.normalizer.obs_rms.mean = np.array([0.5, -0.5, 3.0])
    ppo.normalizer.obs_rms.var = np.array([4.0, 0.25, 9.0])
    obs = np.array([[1.0, 0.0, 6.0], [0.0, -1.0, -3.0]], np.float32)
    params, _ = ppo.model(((obs - ppo.normalizer.obs_rms.mean) / np.sqrt(ppo.normalizer.obs_rms.var + 1e-8))
                          .astype(np.float32))
    expected = np.clip(ops.convert_to_numpy(params)[:, :1], -2.0, 2.0)
    np.testing.assert_allclose(ppo.predict(obs, deterministic=True)[0], expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- clip-range annealing


def test_compiled_update_reads_the_current_clip_range():
    """ε is a variable: changing it between calls of the same compiled epoch changes what is clipped.

    Half the rows get an old log-prob 0.1 above the current one, a ratio of e^-0.1 ≈ 0.905, so
    they are clipped with ε = 0.05 and not with ε = 0.2.
    """
    from unstable_ppo.distributions import make_distribution

    ppo = PPO("CartPole-v1", seed=0, num_envs=2, num_steps=32, num_epochs=1, batch_size=64, lr=1e-4)
    buffer = ppo.make_buffer()
    ppo.collector.reset()
    ppo.collect_rollout(buffer)
    numpy_batch = buffer.training_batch()
    update = ppo.model.make_update_function()
    indices = np.arange(64).reshape(1, 64)
    shift = np.where(np.arange(64) % 2 == 0, 0.1, 0.0).astype(np.float32)

    def clip_fraction(eps):
        ppo.model.clip_epsilon.assign(eps)
        params = ppo.model.batch_outputs({k: ops.convert_to_tensor(v) for k, v in numpy_batch.items()})[0]
        log_prob = ops.convert_to_numpy(make_distribution(ppo.action_space, params).log_prob(
            ops.convert_to_tensor(numpy_batch["actions"])))
        batch = dict(numpy_batch, old_log_prob=(log_prob + shift).astype(np.float32))
        return update(ppo.model.prepare_batch(batch), indices)["clip_fraction"]

    assert clip_fraction(0.2) == pytest.approx(0.0, abs=1e-6)
    assert clip_fraction(0.05) == pytest.approx(0.5, abs=1e-6)
    assert clip_fraction(0.2) == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "env, kwargs, message",
    [
        ("Pendulum-v1", dict(use_kl_loss=True, kl_target=0.0), "kl_target must be > 0"),
        ("Pendulum-v1", dict(init_beta=-1.0), "init_beta must be > 0"),
        ("Pendulum-v1", dict(eta=-0.5), "eta must be >= 0"),
        ("Pendulum-v1", dict(eta_kl=-1.0), "eta_kl must be >= 0"),
        ("Pendulum-v1", dict(reward_transform="log"), "unknown reward_transform 'log'"),
        ("Pendulum-v1", dict(reward_transform="scale", reward_scale=0.0), "reward_scale must be > 0"),
        ("CartPole-v1", dict(eta=0.1), "eta applies to Box"),
        ("CartPole-v1", dict(nn_std=True), "nn_std applies to Box"),
    ],
)
def test_bad_options_are_one_line_errors(env, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        PPO(env, **kwargs)
    assert "\n" not in str(info.value)


def test_normalize_obs_needs_vector_observations():
    env = SpaceEnv(spaces.Discrete(5), spaces.Discrete(2))
    with pytest.raises(ValueError, match="normalize_obs applies to Box vector observations"):
        PPO(env, normalize_obs=True, num_steps=8, batch_size=8)


def test_anneal_clip_range_with_the_kl_loss_is_refused():
    with pytest.raises(ValueError, match="anneal_clip_range anneals the clipped objective's range, which use_kl_loss"):
        PPO("CartPole-v1", use_kl_loss=True, anneal_clip_range=True)
