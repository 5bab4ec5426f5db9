"""gSDE (generalized State-Dependent Exploration), checked against numpy and scipy.

The network's parameters, log-probs, entropies and samples are recomputed from its
weights by hand; the resampling schedule is replayed from a copy of the run's RNG.
"""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from keras import ops
from scipy import stats

from unstable_ppo import PPO
from unstable_ppo.callbacks import LambdaCallback
from unstable_ppo.distributions import DiagGaussian, StateDependentNoise, make_distribution
from unstable_ppo.networks import ActorCriticNetwork

OBS = spaces.Box(-1.0, 1.0, (3,), np.float32)
ACT = spaces.Box(-2.0, 2.0, (2,), np.float32)
F = 8  # the policy's last hidden layer


def n(x):
    return np.asarray(ops.convert_to_numpy(x), np.float64)


def t(x):
    return ops.convert_to_tensor(np.asarray(x, np.float32))


def numpy_policy(network, obs):
    """(mean, latent z, sigma) of a one-hidden-layer tanh MLP gSDE policy, from its weights."""
    hidden = network.policy_torso.layers[-1]  # after the Flatten
    z = np.tanh(obs @ n(hidden.kernel) + n(hidden.bias))
    mean = z @ n(network.policy_head.kernel) + n(network.policy_head.bias)
    return mean, z, np.exp(n(network.sde_log_std))


def sde_network(seed=3):
    network = ActorCriticNetwork(OBS, ACT, hidden_sizes=(F,), use_sde=True, log_std_init=-0.5, seed=seed)
    rng = np.random.default_rng(seed)
    network.sde_log_std.assign(rng.uniform(-1.5, 0.5, (F, 2)).astype(np.float32))  # not one constant
    network.policy_head.kernel.assign(rng.normal(0, 0.5, (F, 2)).astype(np.float32))
    return network


def test_distribution_log_prob_entropy_kl_and_sample_against_scipy():
    rng = np.random.default_rng(0)
    B, A = 6, 2
    mean, z = rng.normal(size=(B, A)), rng.normal(size=(B, F))
    sigma = np.exp(rng.uniform(-1, 0.5, (F, A)))
    std = np.sqrt((z**2) @ sigma**2 + 1e-6)
    flat = np.concatenate([mean, np.log(std), z], axis=1)
    dist = make_distribution(ACT, t(flat))
    assert isinstance(dist, StateDependentNoise)
    actions = rng.normal(size=(B, A))
    np.testing.assert_allclose(n(dist.log_prob(t(actions))),
                               stats.norm.logpdf(actions, mean, std).sum(axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(n(dist.entropy()), stats.norm.entropy(mean, std).sum(axis=1), rtol=1e-4, atol=1e-4)
    exploration = rng.normal(size=(B, F, A)) * sigma
    np.testing.assert_allclose(n(dist.sample(t(exploration.reshape(B, -1)))),
                               mean + np.einsum("bf,bfa->ba", z, exploration), rtol=1e-4, atol=1e-4)
    # KL between two gSDE distributions: the closed form of two diagonal normals.
    std2 = std * np.exp(rng.uniform(-0.3, 0.3, std.shape))
    mean2 = mean + rng.normal(0, 0.2, mean.shape)
    other = make_distribution(ACT, t(np.concatenate([mean2, np.log(std2), z], axis=1)))
    expected = (np.log(std2 / std) + (std**2 + (mean - mean2) ** 2) / (2 * std2**2) - 0.5).sum(axis=1)
    np.testing.assert_allclose(n(dist.kl(other)), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="exploration matrix"):
        dist.sample(seed=1)
    # A plain Gaussian head (2 * dim wide) is still the diagonal Gaussian.
    assert type(make_distribution(ACT, t(flat[:, : 2 * A]))) is DiagGaussian


def test_network_parameters_and_actions_match_numpy():
    network = sde_network()
    assert network.noise_size == F * 2
    obs = np.random.default_rng(1).uniform(-1, 1, (5, 3)).astype(np.float32)
    mean, z, sigma = numpy_policy(network, obs)
    std = np.sqrt((z**2) @ sigma**2 + 1e-6)
    params, _ = network(t(obs))
    np.testing.assert_allclose(n(params), np.concatenate([mean, np.log(std), z], axis=1), rtol=1e-4, atol=1e-5)

    noise = np.random.default_rng(2).standard_normal((5, F * 2)).astype(np.float32)
    packed = n(network.act(t(obs), t(noise)))
    expected = mean + np.einsum("bf,bfa->ba", z, noise.reshape(5, F, 2) * sigma)
    np.testing.assert_allclose(packed[:, :2], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(packed[:, 3], stats.norm.logpdf(expected, mean, std).sum(axis=1), rtol=1e-4,
                               atol=1e-4)
    deterministic = n(network.act(t(obs), t(noise), deterministic=True))
    np.testing.assert_allclose(deterministic[:, :2], mean, rtol=1e-4, atol=1e-5)


class ConstantObsEnv(gym.Env):
    """The same observation at every step: an action changes only when the exploration matrix does."""

    observation_space = OBS
    action_space = ACT

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.full(3, 0.3, np.float32), {}

    def step(self, action):
        return np.full(3, 0.3, np.float32), 0.0, False, False, {}


@pytest.mark.parametrize("freq, draws_at", [(3, [0, 0, 0, 1, 1, 1, 2, 2]), (-1, [0] * 8), (1, list(range(8)))])
def test_exploration_matrices_are_redrawn_every_sde_sample_freq_steps(freq, draws_at):
    """Replays the run's RNG by hand: one standard-normal draw per period, per env, scaled by sigma."""
    num_envs = 2
    ppo = PPO(gym.vector.SyncVectorEnv([ConstantObsEnv] * num_envs), seed=5, num_envs=num_envs, num_steps=8,
              batch_size=16, hidden_sizes=(F,), use_sde=True, sde_sample_freq=freq)
    mean, z, sigma = numpy_policy(ppo.model, np.full((1, 3), 0.3, np.float32))
    for rollout in range(2):
        rng = np.random.default_rng()
        rng.bit_generator.state = ppo.rng.bit_generator.state
        if ppo.collector.last_obs is None:
            ppo.collector.reset()
        draws = rng.standard_normal((max(draws_at) + 1, num_envs, F * 2), dtype=np.float32)
        buffer = ppo.make_buffer()
        ppo.collect_rollout(buffer)
        matrices = draws.reshape(-1, num_envs, F, 2) * sigma
        expected = mean + np.einsum("f,ktfa->kta", z[0], matrices)  # (draw, env, action)
        np.testing.assert_allclose(buffer.actions, expected[draws_at], rtol=1e-4, atol=1e-5)
        assert not np.allclose(buffer.actions[:, 0], buffer.actions[:, 1])  # a matrix per env


def test_training_learns_sigma_and_saves_it(tmp_path, small_ppo):
    ppo = small_ppo("Pendulum-v1", use_sde=True, sde_sample_freq=4, seed=1)
    before = n(ppo.model.sde_log_std)
    ppo.learn(128)
    after = n(ppo.model.sde_log_std)
    assert np.abs(after - before).max() > 1e-5  # the std matrix gets gradients
    path = ppo.save(tmp_path / "sde")
    loaded = PPO.load(path, seed=2)
    assert loaded.model.use_sde and loaded.hp.use_sde and loaded.hp.sde_sample_freq == 4
    np.testing.assert_array_equal(n(loaded.model.sde_log_std), after)
    obs = np.random.default_rng(3).uniform(-1, 1, (7, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], ppo.predict(obs, deterministic=True)[0])
    noise = np.random.default_rng(4).standard_normal((7, ppo.model.noise_size)).astype(np.float32)
    np.testing.assert_allclose(n(loaded.model.act(t(obs), t(noise))), n(ppo.model.act(t(obs), t(noise))),
                               rtol=1e-6)


def test_recurrent_and_kl_loss_policies_take_gsde(small_ppo):
    from tests.helpers.settings import SMALL_RECURRENT

    ppo = small_ppo("PendulumNoVel-v1", settings=SMALL_RECURRENT, use_sde=True, use_kl_loss=True, seed=0)
    assert ppo.model.noise_size == 16 * 1  # LSTM units x action dims
    logs = {}
    ppo.learn(96, callbacks=[LambdaCallback(on_update_end=lambda _, update_logs: logs.update(update_logs))])
    assert np.isfinite(logs["loss"])


@pytest.mark.parametrize("env, kwargs, message", [
    ("CartPole-v1", dict(use_sde=True), "use_sde applies to Box"),
    ("Pendulum-v1", dict(use_sde=True, nn_std=True), "cannot be combined with nn_std"),
    ("Pendulum-v1", dict(use_sde=True, sde_sample_freq=0), "sde_sample_freq must be -1"),
    ("Pendulum-v1", dict(sde_sample_freq=4), "applies to gSDE only"),
])
def test_bad_combinations_are_one_line_errors(small_ppo, env, kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        small_ppo(env, **kwargs)
    assert "\n" not in str(error.value)


def test_runner_flags(run_runner, tmp_path):
    bad = run_runner("--env_id=CartPole-v1", "--use_sde", f"--logdir={tmp_path}/bad")
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].endswith("use_sde applies to Box (continuous) action spaces only, "
                                                        "not Discrete")
    good = run_runner("--env_id=Pendulum-v1", "--use_sde", "--sde_sample_freq=8", "--num_envs=2", "--num_steps=32",
                      "--batch_size=32", "--num_epochs=1", "--total_timesteps=64", "--eval_episodes=1",
                      f"--logdir={tmp_path}/good")
    assert good.returncode == 0, good.stderr[-2000:]
    loaded = PPO.load(tmp_path / "good" / "model")
    assert loaded.hp.use_sde and loaded.hp.sde_sample_freq == 8
