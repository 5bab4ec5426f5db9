"""GAE(λ) and the rollout buffer, against numbers worked out by hand.

Pure numpy: no tensors, so these run identically on every backend.
"""

import numpy as np
import pytest

from unstable_ppo.buffer import RolloutBuffer, compute_gae
from unstable_ppo.losses import BATCH_KEYS

pytestmark = [pytest.mark.quick, pytest.mark.backend_independent]  # numpy, CSVs and TensorBoard files: no Keras backend


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Overrides conftest's per-test `clear_session()` (a ~0.3 s gc pass): these
    tests are numpy only and leave no Keras state behind."""
    yield

# One env, four steps, γ = λ = 0.5 (so γλ = 0.25). The episode ends after t=1;
# next_values[1] = 4.0 is V(final observation of that episode).
GAMMA, LAM = 0.5, 0.5
R = [1.0, 2.0, 0.5, 1.0]
V = [0.5, 1.0, 2.0, 1.0]
NEXT_V = [1.0, 4.0, 1.0, 3.0]

# Shared by (a) and (b) — the second episode, t=2..3:
#   δ3 = 1.0 + 0.5*3.0 - 1.0 = 1.5                 A3 = 1.5
#   δ2 = 0.5 + 0.5*1.0 - 2.0 = -1.0                A2 = -1.0 + 0.25*1.5 = -0.625
# (a) terminated at t=1: no bootstrap, chain cut
#   δ1 = 2.0 + 0 - 1.0 = 1.0                       A1 = 1.0
#   δ0 = 1.0 + 0.5*1.0 - 0.5 = 1.0                 A0 = 1.0 + 0.25*1.0 = 1.25
ADV_TERMINATED = [1.25, 1.0, -0.625, 1.5]
RET_TERMINATED = [1.75, 2.0, 1.375, 2.5]  # A + V
# (b) truncated at t=1: bootstrap from V(final obs) = 4.0, chain still cut
#   δ1 = 2.0 + 0.5*4.0 - 1.0 = 3.0                 A1 = 3.0
#   δ0 = 1.0                                       A0 = 1.0 + 0.25*3.0 = 1.75
ADV_TRUNCATED = [1.75, 3.0, -0.625, 1.5]
RET_TRUNCATED = [2.25, 4.0, 1.375, 2.5]
# no episode end at all: δ1 = 3.0 as in (b) but the chain runs through
#   A1 = 3.0 + 0.25*(-0.625) = 2.84375             A0 = 1.0 + 0.25*2.84375 = 1.7109375
ADV_NO_END = [1.7109375, 2.84375, -0.625, 1.5]


def col(x):
    return np.asarray(x, np.float32)[:, None]  # [T] -> [T, 1]


def gae(terminated, dones, rewards=R, values=V, next_values=NEXT_V, gamma=GAMMA, lam=LAM):
    return compute_gae(
        col(rewards), col(values), col(next_values),
        col(terminated).astype(bool), col(dones).astype(bool), gamma, lam,
    )


def test_gae_termination_does_not_bootstrap():
    adv, ret = gae(terminated=[0, 1, 0, 0], dones=[0, 1, 0, 0])
    assert adv.shape == (4, 1) and ret.shape == (4, 1)
    np.testing.assert_allclose(adv[:, 0], ADV_TERMINATED, rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], RET_TERMINATED, rtol=1e-6)


def test_gae_truncation_bootstraps_but_cuts_the_chain():
    adv, ret = gae(terminated=[0, 0, 0, 0], dones=[0, 1, 0, 0])
    np.testing.assert_allclose(adv[:, 0], ADV_TRUNCATED, rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], RET_TRUNCATED, rtol=1e-6)
    # without the episode end the λ-chain runs through t=1
    adv, _ = gae(terminated=[0, 0, 0, 0], dones=[0, 0, 0, 0])
    np.testing.assert_allclose(adv[:, 0], ADV_NO_END, rtol=1e-6)


def test_gae_last_step_termination_and_truncation():
    # A 2-step episode ending at the last row, γ = 0.9, λ = 0.8 (γλ = 0.72).
    # r = [1, 2], V = [3, 4], next_values = [4, 10]
    # terminated: δ1 = 2 - 4 = -2;          δ0 = 1 + 0.9*4 - 3 = 1.6
    #             A1 = -2;                  A0 = 1.6 + 0.72*(-2) = 0.16
    # truncated:  δ1 = 2 + 0.9*10 - 4 = 7;  A0 = 1.6 + 0.72*7 = 6.64
    kw = dict(rewards=[1.0, 2.0], values=[3.0, 4.0], next_values=[4.0, 10.0], gamma=0.9, lam=0.8)
    adv, _ = gae(terminated=[0, 1], dones=[0, 1], **kw)
    np.testing.assert_allclose(adv[:, 0], [0.16, -2.0], rtol=1e-5, atol=1e-6)
    adv, _ = gae(terminated=[0, 0], dones=[0, 1], **kw)
    np.testing.assert_allclose(adv[:, 0], [6.64, 7.0], rtol=1e-5, atol=1e-6)


def test_gae_multiple_envs_are_independent():
    # env 0: case (a), env 1: case (b), env 2: no end — each column as computed alone
    rewards = np.stack([R, R, R], axis=1).astype(np.float32)
    values = np.stack([V, V, V], axis=1).astype(np.float32)
    next_values = np.stack([NEXT_V, NEXT_V, NEXT_V], axis=1).astype(np.float32)
    terminated = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]], bool)
    dones = np.array([[0, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]], bool)
    adv, ret = compute_gae(rewards, values, next_values, terminated, dones, GAMMA, LAM)
    assert adv.shape == (4, 3)
    np.testing.assert_allclose(adv[:, 0], ADV_TERMINATED, rtol=1e-6)
    np.testing.assert_allclose(adv[:, 1], ADV_TRUNCATED, rtol=1e-6)
    np.testing.assert_allclose(adv[:, 2], ADV_NO_END, rtol=1e-6)
    np.testing.assert_allclose(ret, adv + values, rtol=1e-6)

    # two envs with different data: [T=3, N=2], γ = 1, λ = 0.5
    # env 0: r = [1, 0, 2], V = [0, 1, 1], next_V = [1, 1, 5], no ends
    #   δ = [1+1-0, 0+1-1, 2+5-1] = [2, 0, 6];  A2 = 6, A1 = 0 + 0.5*6 = 3, A0 = 2 + 0.5*3 = 3.5
    # env 1: r = [0, 3, 1], V = [2, 2, 0], next_V = [2, 7, 0], terminated at t=1
    #   δ = [0+2-2, 3+0-2, 1+0-0] = [0, 1, 1];  A2 = 1, A1 = 1 (cut), A0 = 0 + 0.5*1 = 0.5
    adv, ret = compute_gae(
        np.array([[1, 0], [0, 3], [2, 1]], np.float32),
        np.array([[0, 2], [1, 2], [1, 0]], np.float32),
        np.array([[1, 2], [1, 7], [5, 0]], np.float32),
        np.array([[0, 0], [0, 1], [0, 0]], bool),
        np.array([[0, 0], [0, 1], [0, 0]], bool),
        1.0, 0.5,
    )
    np.testing.assert_allclose(adv, [[3.5, 0.5], [3.0, 1.0], [6.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(ret, [[3.5, 2.5], [4.0, 3.0], [7.0, 1.0]], rtol=1e-6)


def _random_rollout(seed, T=7, N=3):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, N)).astype(np.float32)
    values = rng.normal(size=(T, N)).astype(np.float32)
    dones = np.zeros((T, N), bool)
    terminated = np.zeros((T, N), bool)
    dones[[1, 4], [0, 0]] = True       # env 0: two episode ends...
    terminated[1, 0] = True            # ...the first a termination, the second a truncation
    dones[3, 1] = terminated[3, 1] = True
    dones[T - 1, 2] = terminated[T - 1, 2] = True
    # Inside an episode V(s_{t+1}) is the next row's value; at an episode end it is
    # V(final observation), and after the last row V(the observation after the rollout).
    next_values = np.concatenate([values[1:], rng.normal(size=(1, N))]).astype(np.float32)
    next_values[dones] = rng.normal(size=int(dones.sum()))
    return rewards, values, next_values, terminated, dones


def test_gae_lambda_one_is_discounted_return_minus_value():
    rewards, values, next_values, terminated, dones = _random_rollout(0)
    T, N = rewards.shape
    for gamma in (1.0, 0.9):
        adv, ret = compute_gae(rewards, values, next_values, terminated, dones, gamma, 1.0)
        expected = np.zeros((T, N))
        for e in range(N):
            for s in range(T):
                # Monte-Carlo: discounted rewards to the episode's end (or the rollout's),
                # plus the discounted bootstrap unless the episode terminated there.
                g, k = 0.0, s
                while True:
                    g += gamma ** (k - s) * rewards[k, e]
                    if dones[k, e] or k == T - 1:
                        break
                    k += 1
                if not terminated[k, e]:
                    g += gamma ** (k - s + 1) * next_values[k, e]
                expected[s, e] = g - values[s, e]
        np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ret, expected + values, rtol=1e-5, atol=1e-5)


def test_gae_lambda_zero_is_one_step_td_error():
    rewards, values, next_values, terminated, dones = _random_rollout(1)
    adv, ret = compute_gae(rewards, values, next_values, terminated, dones, 0.95, 0.0)
    td = rewards + 0.95 * np.where(terminated, 0.0, next_values) - values
    np.testing.assert_allclose(adv, td, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, td + values, rtol=1e-5, atol=1e-6)


def test_buffer_finish_fills_next_values_then_runs_gae():
    T, N = 3, 2
    buf = RolloutBuffer(T, N, (2,), np.float32, (), np.int64)
    buf.values[:] = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    buf.rewards[:] = [[0.5, -1.0], [2.0, 0.0], [1.0, 1.5]]
    buf.next_values[:] = -99.0  # stale: must be overwritten wherever not set by the collector
    # the collector stored V(final obs) itself at (0, 1) and (2, 0)
    buf.final_value_set[0, 1] = True
    buf.next_values[0, 1] = 10.0
    buf.final_value_set[2, 0] = True
    buf.next_values[2, 0] = 20.0
    buf.dones[0, 1] = buf.dones[2, 0] = True
    buf.terminated[1, 0] = buf.dones[1, 0] = True
    last_values = np.array([7.0, 8.0], np.float32)

    buf.finish(last_values, gamma=0.5, gae_lambda=0.0)
    # row t takes values[t+1]; the last row takes last_values; collector rows are kept
    np.testing.assert_array_equal(buf.next_values, [[3.0, 10.0], [5.0, 6.0], [20.0, 8.0]])
    # λ = 0: A = r + 0.5 * next_value * (1 - terminated) - V
    #   row 0: 0.5 + 0.5*3 - 1 = 1.0    | -1 + 0.5*10 - 2 = 2.0
    #   row 1: 2 + 0 (terminated) - 3 = -1.0 | 0 + 0.5*6 - 4 = -1.0
    #   row 2: 1 + 0.5*20 - 5 = 6.0     | 1.5 + 0.5*8 - 6 = -0.5
    np.testing.assert_allclose(buf.advantages, [[1.0, 2.0], [-1.0, -1.0], [6.0, -0.5]], rtol=1e-6)
    np.testing.assert_allclose(buf.returns, [[2.0, 4.0], [2.0, 3.0], [11.0, 5.5]], rtol=1e-6)


def test_buffer_finish_with_lambda_chains_through_filled_values():
    # One env, T=2, γ = 1, λ = 0.5, no ends: next_values = [V1, last] = [2, 4]
    #   δ1 = 1 + 4 - 2 = 3, δ0 = 0 + 2 - 1 = 1;  A1 = 3, A0 = 1 + 0.5*3 = 2.5
    buf = RolloutBuffer(2, 1, (1,), np.float32, (1,), np.float32)
    buf.values[:, 0] = [1.0, 2.0]
    buf.rewards[:, 0] = [0.0, 1.0]
    buf.finish(np.array([4.0], np.float32), gamma=1.0, gae_lambda=0.5)
    np.testing.assert_allclose(buf.advantages[:, 0], [2.5, 3.0], rtol=1e-6)
    np.testing.assert_allclose(buf.returns[:, 0], [3.5, 5.0], rtol=1e-6)


def test_training_batch_flattens_t_major_with_the_loss_keys():
    T, N = 3, 2
    buf = RolloutBuffer(T, N, (4,), np.float32, (2,), np.float32)
    tn = np.arange(T)[:, None] * 10 + np.arange(N)[None, :]  # 10*t + n identifies a row
    buf.obs[:] = tn[..., None] + np.arange(4) / 10.0
    buf.actions[:] = -tn[..., None] - np.arange(2) / 10.0
    buf.log_probs[:] = tn + 0.1
    buf.values[:] = tn + 0.2
    buf.advantages[:] = tn + 0.3
    buf.returns[:] = tn + 0.4
    buf.mask[:] = (tn % 3 != 0).astype(np.float32)
    batch = buf.training_batch()

    assert set(batch) == set(BATCH_KEYS)
    assert len(batch) == len(BATCH_KEYS)
    ids = np.array([0, 1, 10, 11, 20, 21])  # t-major: row i = (t, n) = divmod(i, N)
    assert batch["obs"].shape == (T * N, 4)
    assert batch["actions"].shape == (T * N, 2)
    np.testing.assert_allclose(batch["obs"], ids[:, None] + np.arange(4) / 10.0, rtol=1e-6)
    np.testing.assert_allclose(batch["actions"], -ids[:, None] - np.arange(2) / 10.0, rtol=1e-6)
    for key, offset in [("old_log_prob", 0.1), ("old_values", 0.2), ("advantages", 0.3), ("returns", 0.4)]:
        assert batch[key].shape == (T * N,)
        np.testing.assert_allclose(batch[key], ids + offset, rtol=1e-6, err_msg=key)
    np.testing.assert_array_equal(batch["mask"], [0, 1, 1, 1, 1, 0])
