"""Recurrent PPO: LSTM state handling, sequence minibatches, ratio 1, saving, memory, errors."""

import gymnasium as gym
import keras
import numpy as np
import pytest
from gymnasium import spaces
from keras import ops

from tests.helpers.envs import CueEnv, SpaceEnv
from tests.helpers.settings import SMALL_RECURRENT
from unstable_ppo import PPO
from unstable_ppo.buffer import sequence_minibatches

def numpy_lstm(cell, x, h, c):
    """One LSTM step, written from the equations (Hochreiter & Schmidhuber; Keras's i, f, c, o order)."""
    kernel, recurrent, bias = (ops.convert_to_numpy(w) for w in (cell.kernel, cell.recurrent_kernel, cell.bias))
    z = x @ kernel + h @ recurrent + bias
    i, f, g, o = np.split(z, 4, axis=-1)
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def torso_features(model, obs, torso):
    return ops.convert_to_numpy(torso(model.encoder(ops.convert_to_tensor(obs))))


def short_episode_env(n, episode_length=5, obs_dim=3, action_space=None):
    action_space = action_space or spaces.Discrete(2)
    box = spaces.Box(-1.0, 1.0, (obs_dim,), np.float32)
    return gym.vector.SyncVectorEnv(
        [lambda i=i: SpaceEnv(box, action_space, episode_length + i) for i in range(n)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


@pytest.mark.parametrize("shared_lstm", [True, False])
def test_rollout_states_follow_the_lstm_and_reset_at_episode_starts(shared_lstm):
    """The stored states are those of an independent numpy LSTM run over the rollout, zeroed at each start."""
    ppo = PPO(short_episode_env(3), seed=1, shared_lstm=shared_lstm, **SMALL_RECURRENT)
    buffer = ppo.make_buffer()
    ppo.collector.reset()
    ppo.collect_rollout(buffer)
    model, H = ppo.model, ppo.hp.hidden_layer_size
    # Episodes of 5, 6 and 7 steps end inside the 16-step rollout; the first row of each starts one.
    expected_starts = np.concatenate([np.ones((1, 3)), buffer.dones[:-1]]).astype(np.float32)
    np.testing.assert_array_equal(buffer.episode_starts, expected_starts)
    assert expected_starts[1:].sum() >= 6
    cells = [(model.policy_lstm, model.policy_torso)]
    if not shared_lstm:
        cells.append((model.value_lstm, model.value_torso))
    for k, (cell, torso) in enumerate(cells):
        h = np.zeros((3, H), np.float32)
        c = np.zeros((3, H), np.float32)
        for t in range(ppo.hp.num_steps):
            stored = buffer.states[t][:, 2 * H * k : 2 * H * (k + 1)]
            np.testing.assert_allclose(stored[:, :H], h, atol=2e-5)
            np.testing.assert_allclose(stored[:, H:], c, atol=2e-5)
            keep = 1.0 - buffer.episode_starts[t][:, None]
            h, c = numpy_lstm(cell, torso_features(model, buffer.obs[t], torso), h * keep, c * keep)
        # The state after the last step is where the next rollout starts.
        np.testing.assert_allclose(ppo.collector.last_state[:, 2 * H * k : 2 * H * k + H], h, atol=2e-5)
        np.testing.assert_allclose(ppo.collector.last_state[:, 2 * H * k + H : 2 * H * (k + 1)], c, atol=2e-5)


def test_next_step_autoreset_zeroes_the_state_after_the_reset_row():
    """With NEXT_STEP autoreset the row after a done is a reset row; the state restarts on the row after it."""
    box = spaces.Box(-1.0, 1.0, (3,), np.float32)
    vec = gym.vector.SyncVectorEnv([lambda: SpaceEnv(box, spaces.Discrete(2), 5) for _ in range(2)])
    ppo = PPO(vec, seed=0, **{**SMALL_RECURRENT, "num_envs": 2})
    buffer = ppo.make_buffer()
    ppo.collector.reset()
    ppo.collect_rollout(buffer)
    done_rows = np.flatnonzero(buffer.dones[:, 0])
    assert len(done_rows) >= 2
    for t in done_rows:
        if t + 2 < ppo.hp.num_steps:
            assert buffer.mask[t + 1, 0] == 0 and buffer.episode_starts[t + 1, 0] == 1
            assert buffer.episode_starts[t + 2, 0] == 1
    assert buffer.episode_starts[buffer.mask[:, 0] > 0, 0].sum() == 1 + len([t for t in done_rows if t + 2 < 16])


def test_sequence_minibatches_are_whole_sequences_of_one_env():
    num_envs, num_steps, L, batch = 4, 32, 8, 16
    rng = np.random.default_rng(0)
    indices = sequence_minibatches(rng, num_envs * num_steps, L, batch)
    assert indices.shape == (num_envs * num_steps // batch, batch)
    assert sorted(indices.ravel()) == list(range(num_envs * num_steps))  # every row once
    for sequence in indices.reshape(-1, L):
        assert sequence[0] % L == 0 and list(sequence) == list(range(sequence[0], sequence[0] + L))
        assert len({row // num_steps for row in sequence}) == 1  # one env, inside its rollout
    # A remainder that fills no minibatch is left out, a different one each time.
    dropped = [set(range(40)) - set(sequence_minibatches(rng, 40, 4, 12).ravel()) for _ in range(20)]
    assert all(len(d) == 4 for d in dropped) and len({frozenset(d) for d in dropped}) > 1


def test_training_batch_is_laid_out_env_by_env():
    ppo = PPO(short_episode_env(3), seed=0, **SMALL_RECURRENT)
    buffer = ppo.make_buffer()
    ppo.collector.reset()
    ppo.collect_rollout(buffer)
    batch = buffer.training_batch()
    T = ppo.hp.num_steps
    for env in range(3):
        for t in (0, 5, T - 1):
            row = env * T + t
            np.testing.assert_array_equal(batch["obs"][row], buffer.obs[t, env])
            np.testing.assert_array_equal(batch["states"][row], buffer.states[t, env])
            assert batch["episode_starts"][row] == buffer.episode_starts[t, env]
            assert batch["advantages"][row] == buffer.advantages[t, env]


ACTION_SPACES = {
    "discrete": spaces.Discrete(3),
    "box": spaces.Box(-1.0, 1.0, (2,), np.float32),
    "multidiscrete": spaces.MultiDiscrete([3, 2]),
    "multibinary": spaces.MultiBinary(3),
}


@pytest.mark.parametrize("kind", sorted(ACTION_SPACES))
@pytest.mark.parametrize("shared_lstm", [True, False])
def test_ratio_is_one_on_the_first_minibatch(kind, shared_lstm):
    """Recomputing the states from each sequence's stored start state reproduces the acting log-probs."""
    # Separate LSTMs get dense layers after them too (lstm_head_sizes).
    ppo = PPO(short_episode_env(3, action_space=ACTION_SPACES[kind]), seed=2, shared_lstm=shared_lstm,
              lstm_head_sizes=() if shared_lstm else (8, 8), **SMALL_RECURRENT)
    buffer = ppo.make_buffer()
    ppo.collector.reset()
    ppo.collect_rollout(buffer)
    batch = buffer.training_batch()
    idx = sequence_minibatches(np.random.default_rng(0), len(batch["mask"]), ppo.hp.timestep_size,
                               ppo.hp.batch_size)
    minibatch = {k: v[idx[0]] for k, v in batch.items()}
    params = ppo.model.batch_outputs(minibatch)[0]
    log_prob = ops.convert_to_numpy(ppo.model.distribution(params).log_prob(minibatch["actions"]))
    np.testing.assert_allclose(np.exp(log_prob - minibatch["old_log_prob"]), 1.0, rtol=0, atol=1e-5)
    logs = ppo.model.make_update_function()(batch, idx[:1])
    assert logs["clip_fraction"] == 0.0 and abs(logs["approx_kl"]) < 1e-7


def test_cnn_lstm_acts_and_trains_on_pixels():
    image = spaces.Box(0, 255, (4, 36, 36), np.uint8)  # channels first, like frame-stacked Atari
    vec = gym.vector.SyncVectorEnv([lambda: SpaceEnv(image, spaces.Discrete(4), 6) for _ in range(2)],
                                   autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    ppo = PPO(vec, seed=0, **{**SMALL_RECURRENT, "num_envs": 2, "num_steps": 8, "batch_size": 8, "num_epochs": 1})
    assert ppo.model.net == "cnn" and ppo.model.shared_net
    before = [np.array(w) for w in ppo.model.get_weights()]
    ppo.learn(32)
    assert any(not np.allclose(a, b) for a, b in zip(before, ppo.model.get_weights()))
    assert np.isfinite(ppo.logs["loss"])


def test_save_load_round_trip_predicts_the_same_with_state(tmp_path):
    ppo = PPO("CartPoleNoVel-v1", seed=0, shared_lstm=False, hidden_sizes=(), lstm_head_sizes=(16,),
              **{**SMALL_RECURRENT, "batch_size": 24})
    ppo.learn(96)
    ppo.save(tmp_path / "m")
    loaded = PPO.load(tmp_path / "m")
    assert loaded.recurrent and loaded.model.state_size == 4 * SMALL_RECURRENT["hidden_layer_size"]
    assert loaded.model.sequence_length == SMALL_RECURRENT["timestep_size"] and loaded.hp == ppo.hp
    assert loaded.model.lstm_head_sizes == (16,) and loaded.model.hidden_sizes == ()
    obs = np.random.default_rng(0).uniform(-0.2, 0.2, (5, 6, 2)).astype(np.float32)  # 6 steps of 5 envs
    outs = []
    for model in (ppo, loaded):
        state, seen = model.initial_state(5), []
        for t in range(6):
            actions, state = model.predict(obs[:, t], state, episode_start=np.full(5, t == 0), deterministic=True)
            seen.append((actions, state))
        outs.append(seen)
    for (a1, s1), (a2, s2) in zip(*outs):
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_allclose(s1, s2, atol=1e-6)
    assert np.abs(outs[0][-1][1]).sum() > 0  # the state moved
    # episode_start zeroes the state exactly as initial_state does.
    _, fresh = ppo.predict(obs[:, 0], ppo.initial_state(5), deterministic=True)
    _, restarted = ppo.predict(obs[:, 0], outs[0][-1][1], episode_start=np.ones(5), deterministic=True)
    np.testing.assert_allclose(fresh, restarted, atol=1e-6)
    # No state at all (Stable-Baselines3's first call) is the same fresh start.
    first, none = ppo.predict(obs[:, 0], deterministic=True)
    np.testing.assert_allclose(none, fresh, atol=1e-6)
    np.testing.assert_array_equal(first, outs[0][0][0])
    assert loaded.evaluate(n_episodes=2)["returns"]


def test_recurrent_policy_remembers_a_cue():
    """The cue is shown only on the first step and rewarded on the last: an LSTM solves it, an MLP cannot."""
    returns = {}
    for recurrent in (True, False):
        vec = gym.vector.SyncVectorEnv([CueEnv for _ in range(8)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        ppo = PPO(vec, seed=0, recurrent=recurrent, num_envs=8, num_steps=16, num_epochs=8, batch_size=64,
                  timestep_size=8, hidden_layer_size=32, lr=3e-3, gamma=0.9, ent_coef=0.01)
        ppo.learn(6_000)
        eval_env = gym.vector.SyncVectorEnv([CueEnv for _ in range(4)],
                                            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        returns[recurrent] = ppo.evaluate(eval_env, n_episodes=40, seed=123)["mean_return"]
    assert returns[True] > 0.9, returns  # right on (nearly) every episode
    assert returns[False] < 0.75, returns  # guessing: half right


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_steps=20, timestep_size=8), "timestep_size 8 does not divide num_steps 20"),
        (dict(batch_size=20, timestep_size=8), "batch_size 20 is not a multiple of timestep_size 8"),
        (dict(timestep_size=0), "timestep_size must be a positive integer"),
        (dict(hidden_layer_size=0), "hidden_layer_size must be a positive integer"),
        (dict(shared_net=False), "a shared LSTM needs a shared torso"),
        (dict(lstm_head_sizes=(0,)), "lstm_head_sizes must be positive"),
        (dict(recurrent=False, lstm_head_sizes=(8,)), "lstm_head_sizes applies to recurrent models only"),
    ],
)
def test_bad_recurrent_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PPO("CartPoleNoVel-v1", **{**SMALL_RECURRENT, **kwargs})


def test_predict_returns_action_and_state_for_every_model_as_stable_baselines3_does():
    """One loop serves both kinds: `action, state = predict(obs, state, episode_start)`."""
    ppo = PPO("CartPoleNoVel-v1", **SMALL_RECURRENT)
    action, state = ppo.predict(np.zeros(2, np.float32))  # no state: a fresh start
    assert action in (0, 1) and state.shape == (ppo.model.state_size,)
    actions, states = ppo.predict(np.zeros((3, 2), np.float32), episode_start=np.ones(3))
    assert actions.shape == (3,) and states.shape == (3, ppo.model.state_size)
    with pytest.raises(ValueError, match=r"state has shape \(2, 5\)"):
        ppo.predict(np.zeros((2, 2), np.float32), np.zeros((2, 5)))
    mlp = PPO("CartPoleNoVel-v1", num_envs=2, num_steps=8, batch_size=8)
    action, state = mlp.predict(np.zeros(2, np.float32), state=None, episode_start=np.ones(1))
    assert action in (0, 1) and state is None
    with pytest.raises(ValueError, match="not recurrent"):
        mlp.predict(np.zeros(2, np.float32), state=np.zeros((1, 4)))
    with pytest.raises(ValueError, match="not recurrent"):
        mlp.initial_state()


def test_memory_tasks_hide_the_velocities():
    for env_id, base, keep in (("CartPoleNoVel-v1", "CartPole-v1", [0, 2]), ("PendulumNoVel-v1", "Pendulum-v1", [0, 1])):
        env, full = gym.make(env_id), gym.make(base)
        obs, _ = env.reset(seed=4)
        full_obs, _ = full.reset(seed=4)
        np.testing.assert_array_equal(obs, full_obs[keep])
        action = env.action_space.sample()
        np.testing.assert_array_equal(env.step(action)[0], full.step(action)[0][keep])
        assert env.observation_space.shape == (2,) and env.spec.max_episode_steps == full.spec.max_episode_steps


def test_kl_loss_runs_on_sequences():
    ppo = PPO("CartPoleNoVel-v1", seed=0, use_kl_loss=True, **SMALL_RECURRENT)
    ppo.learn(96)
    assert np.isfinite(ppo.logs["kl"]) and ppo.logs["kl"] >= 0.0
    assert keras.ops.convert_to_numpy(ppo.model.kl_beta) > 0
