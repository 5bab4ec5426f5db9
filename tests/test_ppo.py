"""The Python API end to end: rollouts, updates, spaces, seeding, errors, learning."""

import gymnasium as gym
import keras
import numpy as np
import pytest
from gymnasium import spaces
from keras import ops

from tests.helpers.envs import SpaceEnv
from tests.helpers.settings import SMALL_4X16
from unstable_ppo import PPO
from unstable_ppo.callbacks import LambdaCallback
from unstable_ppo.spaces import UnsupportedSpaceError


def make_buffer(ppo):
    return ppo.make_buffer()


def log_probs_now(ppo, batch):
    params, _ = ppo.model(batch["obs"])
    return ops.convert_to_numpy(ppo.model.distribution(params).log_prob(batch["actions"]))


@pytest.mark.quick
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_ratio_is_one_on_first_minibatch(env_id, small_ppo):
    ppo = small_ppo(env_id, seed=3)
    buffer = make_buffer(ppo)
    ppo.collector.reset()
    ppo.collect_rollout(buffer)
    batch = buffer.training_batch()
    idx = np.random.default_rng(0).permutation(len(batch["mask"]))[: ppo.hp.batch_size]
    minibatch = {k: v[idx] for k, v in batch.items()}
    ratio = np.exp(log_probs_now(ppo, minibatch) - minibatch["old_log_prob"])
    np.testing.assert_allclose(ratio, 1.0, rtol=0, atol=1e-5)
    # The first epoch's first minibatch sees the acting weights: nothing is clipped.
    logs = ppo.model.make_update_function()(batch, idx[None])
    assert logs["clip_fraction"] == 0.0
    assert abs(logs["approx_kl"]) < 1e-8


@pytest.mark.quick
def test_update_moves_policy_and_reports_diagnostics(small_ppo):
    ppo = small_ppo(seed=0)
    before = [np.array(w) for w in ppo.model.get_weights()]
    ppo.learn(SMALL_4X16["num_envs"] * SMALL_4X16["num_steps"] * 2)
    after = ppo.model.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance"):
        assert np.isfinite(ppo.logs[key]), key
    assert ppo.logs["entropy"] > 0.5  # near-uniform over 2 actions: ln 2 = 0.69
    assert ppo.num_timesteps == 128 and ppo.num_updates == 2


def test_learning_rate_anneals_linearly_to_zero(small_ppo):
    seen = []
    ppo = small_ppo(seed=0, lr=1e-3)
    ppo.learn(64 * 4, callbacks=[LambdaCallback(on_update_end=lambda u, logs: seen.append(logs["learning_rate"]))])
    np.testing.assert_allclose(seen, [1e-3, 0.75e-3, 0.5e-3, 0.25e-3], rtol=1e-6)


def test_target_kl_stops_epochs_early():
    ppo = PPO("CartPole-v1", seed=0, lr=0.05, target_kl=1e-9, num_envs=4, num_steps=16, num_epochs=8, batch_size=16)
    ppo.learn(64)
    assert ppo.logs["epochs"] == 1


@pytest.mark.quick
def test_same_seed_same_run_on_this_backend(small_ppo):
    def run():
        keras.backend.clear_session()
        ppo = small_ppo(seed=11)
        ppo.learn(64 * 3)
        return ppo.model.get_weights(), ppo.predict(np.zeros((5, 4)))[0]  # sampled: Stable-Baselines3's default

    (w1, a1), (w2, a2) = run(), run()
    for x, y in zip(w1, w2):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a1, a2)


def test_different_seeds_differ(small_ppo):
    a = small_ppo(seed=1).model.get_weights()
    b = small_ppo(seed=2).model.get_weights()
    assert not all(np.allclose(x, y) for x, y in zip(a, b))


@pytest.mark.quick
def test_truncation_bootstraps_from_the_final_observation():
    env = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync",
                       vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
                       max_episode_steps=5)
    ppo = PPO(env, seed=0, num_steps=12, num_epochs=1, batch_size=8)
    buffer = make_buffer(ppo)
    ppo.collector.reset()
    # Record the final observations the env hands back, to recompute V(final obs).
    finals = {}
    step = env.step

    def spy(actions):
        out = step(actions)
        for i in np.flatnonzero(out[3]):
            finals[(spy.t, i)] = np.array(out[4]["final_obs"][i])
        spy.t += 1
        return out

    spy.t = 0
    env.step = spy
    ppo.collect_rollout(buffer)
    assert buffer.dones[4].all() and not buffer.terminated[4].any()  # time limit at step 5
    assert (4, 0) in finals
    _, v = ppo.model(np.stack([finals[(4, 0)], finals[(4, 1)]]).astype("float32"))
    np.testing.assert_allclose(buffer.next_values[4], ops.convert_to_numpy(v), rtol=1e-5, atol=1e-5)
    # ...and the value does not leak into the next episode's chain.
    assert buffer.mask.all()


def test_next_step_autoreset_rows_are_masked():
    env = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync", max_episode_steps=6)
    ppo = PPO(env, seed=0, num_steps=20, num_epochs=1, batch_size=20)
    buffer = make_buffer(ppo)
    ppo.collector.reset()
    ppo.collect_rollout(buffer)
    ends = np.argwhere(buffer.dones[:-1])
    assert len(ends) > 0
    for t, i in ends:
        assert buffer.mask[t + 1, i] == 0.0  # the reset row
        # V(s_{t+1}) for the done row is the value computed on the final observation.
        assert buffer.next_values[t, i] == buffer.values[t + 1, i]
    assert buffer.mask.sum() == buffer.mask.size - len(ends) - 0
    ppo.learn(120)


@pytest.mark.parametrize(
    "obs_space, act_space",
    [
        (spaces.Discrete(5, start=2), spaces.Discrete(3, start=-1)),
        (spaces.Box(-1, 1, (3,), np.float64), spaces.MultiDiscrete([2, 3, 4])),
        (spaces.Box(-1, 1, (2, 3), np.float32), spaces.MultiBinary(4)),
        (spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-2, 2, (2,), np.float32)),
        (spaces.Box(-1, 1, (3,), np.float32), spaces.MultiDiscrete([[2, 3], [4, 5]], start=[[0, 1], [-1, 0]])),
        (spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (2, 2), np.float32)),
    ],
)
def test_every_supported_space_trains_and_predicts(obs_space, act_space):
    env = SpaceEnv(obs_space, act_space)
    ppo = PPO(env, seed=0, num_steps=16, num_epochs=1, batch_size=8)
    ppo.learn(32)
    one, state = ppo.predict(obs_space.sample(), deterministic=True)
    assert act_space.contains(np.asarray(one, act_space.dtype)) and state is None
    many, _ = ppo.predict(np.stack([obs_space.sample() for _ in range(3)]))
    assert len(many) == 3 and all(act_space.contains(np.asarray(a, act_space.dtype)) for a in many)
    result = ppo.evaluate(SpaceEnv(obs_space, act_space), n_episodes=2)
    assert result["lengths"] == [7, 7]


def test_image_observations_use_the_nature_cnn():
    env = SpaceEnv(spaces.Box(0, 255, (4, 84, 84), np.uint8), spaces.Discrete(4))
    ppo = PPO(env, seed=0, num_steps=8, num_epochs=1, batch_size=8)
    assert ppo.model.net == "cnn" and ppo.model.shared_net
    convs = [l for l in ppo.model.policy_torso.layers if isinstance(l, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.strides) for c in convs] == [
        (32, (8, 8), (4, 4)), (64, (4, 4), (2, 2)), (64, (3, 3), (1, 1))]
    ppo.learn(8)
    assert ppo.predict(env.observation_space.sample())[0] in range(4)


def test_orthogonal_initialisation_gains(small_ppo):
    ppo = small_ppo(seed=0)
    head = ops.convert_to_numpy(ppo.model.policy_head.kernel)
    hidden = ops.convert_to_numpy(ppo.model.policy_torso.layers[-1].kernel)  # 64x64: square
    np.testing.assert_allclose(hidden.T @ hidden, 2.0 * np.eye(64), atol=1e-4)
    np.testing.assert_allclose(np.linalg.svd(head, compute_uv=False), 0.01, atol=1e-6)
    assert not ppo.model.shared_net and ppo.model.value_torso is not ppo.model.policy_torso


def test_uniform_initialisation_without_ortho_init(small_ppo):
    """ortho_init=False: PyTorch's default, kernel and bias uniform in ±1/sqrt(fan_in), layer by layer."""
    ppo = small_ppo("Pendulum-v1", seed=0, ortho_init=False)
    model = ppo.model
    layers = [*model.policy_torso.layers[1:], *model.value_torso.layers[1:], model.policy_head, model.value_head]
    for layer in layers:
        kernel, bias = ops.convert_to_numpy(layer.kernel), ops.convert_to_numpy(layer.bias)
        bound = 1.0 / np.sqrt(kernel.shape[0])
        for w in (kernel, bias):
            assert 0 < np.abs(w).max() <= bound
            assert w.size < 16 or np.abs(w).max() > 0.7 * bound  # spread over the range, not near 0
        if kernel.size >= 64:
            assert abs(kernel.std() / (bound / np.sqrt(3.0)) - 1.0) < 0.2  # a uniform's std
    assert model.get_config()["ortho_init"] is False
    other = small_ppo("Pendulum-v1", seed=0, ortho_init=False).model
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)  # seeded


def test_fit_runs_the_same_train_step(small_ppo):
    ppo = small_ppo(seed=0)
    buffer = make_buffer(ppo)
    ppo.collector.reset()
    ppo.collect_rollout(buffer)
    before = ppo.model.get_weights()
    act = ppo.model.make_act_function(deterministic=True)
    obs = buffer.obs[0]
    noise = np.zeros((len(obs), 2), np.float32)
    values_before = act(obs, noise)[1]
    history = ppo.model.fit(buffer.training_batch(), batch_size=32, epochs=1, shuffle=True, verbose=0)
    assert {"policy_loss", "value_loss", "approx_kl"} <= set(history.history)
    assert any(not np.allclose(a, b) for a, b in zip(before, ppo.model.get_weights()))
    # An acting function made before `fit` acts with the weights `fit` left behind.
    _, values_now = ppo.model(obs)
    np.testing.assert_allclose(act(obs, noise)[1], ops.convert_to_numpy(values_now), rtol=1e-5, atol=1e-6)
    assert not np.allclose(act(obs, noise)[1], values_before)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=4096), "batch_size 4096 is larger than the rollout"),
        (dict(num_envs=0), "num_envs must be a positive integer"),
        (dict(num_steps=-3), "num_steps must be a positive integer"),
        (dict(num_epochs=1.5), "num_epochs must be a positive integer"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(lr=-1e-3), "lr must be > 0"),
        (dict(gamma=1.5), "gamma must be in (0, 1]"),
        (dict(target_kl=0), "target_kl must be > 0"),
        (dict(lr=float("inf")), "lr must be a finite number"),
        (dict(log_std_init=float("nan")), "log_std_init must be a finite number"),
        (dict(activation="bogus"), "unknown activation 'bogus'"),
    ],
)
def test_bad_arguments_fail_before_training(kwargs, message):
    with pytest.raises(ValueError) as info:
        PPO("CartPole-v1", **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unknown_argument_is_named():
    with pytest.raises(TypeError, match="unknown PPO argument.*learning_rte"):
        PPO("CartPole-v1", learning_rte=1e-3)


@pytest.mark.parametrize(
    "obs_space, act_space, named",
    [
        (spaces.Tuple([spaces.Discrete(2), spaces.Text(5)]), spaces.Discrete(2), r"observation space Text.*entry '1'"),
        (spaces.Box(-1, 1, (3,)), spaces.Dict({"a": spaces.Discrete(2)}), "action space Dict"),
        (spaces.Text(5), spaces.Discrete(2), "observation space Text"),
    ],
)
def test_unsupported_spaces_are_named(obs_space, act_space, named):
    with pytest.raises(UnsupportedSpaceError, match=named):
        PPO(SpaceEnv(obs_space, act_space))


def test_learn_and_evaluate_reject_non_positive_counts(small_ppo):
    ppo = small_ppo()
    with pytest.raises(ValueError, match="total_timesteps must be > 0"):
        ppo.learn(0)
    with pytest.raises(ValueError, match="n_episodes must be > 0"):
        ppo.evaluate(n_episodes=0)


def test_predict_rejects_wrong_shape(small_ppo):
    ppo = small_ppo()
    with pytest.raises(ValueError, match="observation shape"):
        ppo.predict(np.zeros((2, 5)))


def test_cartpole_learns_within_a_small_budget():
    """Seeded: random play scores ~22; PPO should pass 150 in 40k steps."""
    ppo = PPO("CartPole-v1", seed=0, lr=1e-3)
    ppo.learn(40_000)
    result = ppo.evaluate(n_episodes=10)
    assert result["mean_return"] > 150, result


def test_evaluate_leaves_the_callers_env_open(small_ppo):
    ppo = small_ppo(seed=0)
    env = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    result = ppo.evaluate(env, n_episodes=2)
    assert len(result["returns"]) == 2
    env.reset(seed=0)  # still usable: evaluate() closes only the envs it built itself
    env.step(np.zeros(2, np.int64))
    env.close()


def test_evaluating_and_predicting_leave_the_training_run_alone(small_ppo):
    """Evaluations draw sampled actions from an RNG of their own (seeded by the evaluation's seed), and a
    deterministic action draws nothing: how often a run evaluates cannot change what it learns."""
    quiet, evaluated = small_ppo(seed=3), small_ppo(seed=3)
    quiet.learn(256)
    evaluated.learn(256)
    state = evaluated.rng.bit_generator.state
    evaluated.evaluate(n_episodes=2)
    sampled = [evaluated.evaluate(n_episodes=3, deterministic=False, seed=5)["returns"] for _ in range(2)]
    evaluated.predict(np.zeros((3, 4), np.float32), deterministic=True)
    assert evaluated.rng.bit_generator.state == state
    assert sampled[0] == sampled[1]  # a seeded stochastic evaluation is reproducible
    quiet.learn(512, reset_num_timesteps=False)
    evaluated.learn(512, reset_num_timesteps=False)
    for a, b in zip(quiet.model.get_weights(), evaluated.model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.quick
@pytest.mark.backend_independent  # the signature, from the settings table
def test_every_setting_is_a_keyword_of_the_signature_and_the_docstring():
    import dataclasses
    import inspect

    from unstable_ppo.config import Hyperparameters

    parameters = inspect.signature(PPO).parameters
    for field in dataclasses.fields(Hyperparameters):
        assert parameters[field.name].kind is inspect.Parameter.KEYWORD_ONLY, field.name
        assert parameters[field.name].default == field.default, field.name
        assert f"`{field.name}={field.default!r}`: {field.metadata['help']}" in PPO.__doc__
    assert list(parameters)[:2] == ["env", "seed"] and "hyperparameters" not in parameters
    with pytest.raises(TypeError, match="unknown PPO argument"):
        PPO("CartPole-v1", learning_rate=1e-3)
