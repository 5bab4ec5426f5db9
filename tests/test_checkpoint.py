"""Run checkpoints: atomic latest/best swaps, loading by role, and a resumed learning-rate schedule."""

import os

import numpy as np
import pytest

from unstable_ppo import PPO
from unstable_ppo.callbacks import LambdaCallback
from unstable_ppo.checkpoint import BEST, LATEST, resolve_checkpoint, save_checkpoint

HP = {"num_envs": 2, "num_steps": 32, "batch_size": 32, "num_epochs": 1}


def _weights(ppo):
    return [np.asarray(w) for w in ppo.model.get_weights()]


def test_latest_and_best_are_swapped_in_whole(tmp_path):
    ppo = PPO("CartPole-v1", seed=0, **HP)
    root = str(tmp_path / "model")
    save_checkpoint(ppo, root, BEST, {"note": "first"})
    ppo.learn(64)
    save_checkpoint(ppo, root, LATEST)
    os.makedirs(os.path.join(root, ".latest-000000000099-deadbeef"))  # left by a crash mid-save
    ppo.learn(64)
    save_checkpoint(ppo, root, LATEST)
    entries = sorted(os.listdir(root))
    assert [e for e in entries if not e.startswith(".")] == [BEST, LATEST]
    assert sum(e.startswith(".latest-") for e in entries) == 1  # the superseded and the stray are gone
    assert sum(e.startswith(".best-") for e in entries) == 1
    assert os.path.islink(os.path.join(root, LATEST))

    latest = PPO.load(root)
    assert latest.num_timesteps == 128
    for a, b in zip(_weights(latest), _weights(ppo)):
        np.testing.assert_array_equal(a, b)
    best = PPO.load(root, best=True)
    assert best.num_timesteps == 0 and best.run_info == {"note": "first"}


def test_missing_best_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no best checkpoint"):
        resolve_checkpoint(str(tmp_path), best=True)
    assert resolve_checkpoint(str(tmp_path)) == str(tmp_path)  # a plain PPO.save directory


def test_resumed_learning_continues_the_schedule_and_sampling_state(tmp_path):
    def lrs_of(ppo, total, **kwargs):
        seen = []
        ppo.learn(total, callbacks=[LambdaCallback(on_update_end=lambda u, logs: seen.append(logs["learning_rate"]))],
                  **kwargs)
        return seen

    whole = lrs_of(PPO("CartPole-v1", seed=1, lr=1e-3, **HP), 4 * 64)

    first = PPO("CartPole-v1", seed=1, lr=1e-3, **HP)
    head = []
    def note(update, logs):
        head.append(logs["learning_rate"])
        first.stop_training = len(head) >= 2

    first.learn(4 * 64, callbacks=[LambdaCallback(on_update_end=note)])
    first.save(tmp_path / "m")
    draws = first.rng.standard_normal(3)
    resumed = PPO.load(tmp_path / "m", env="CartPole-v1")
    np.testing.assert_array_equal(resumed.rng.standard_normal(3), draws)  # the RNG continues, not restarts
    tail = lrs_of(resumed, 4 * 64, reset_num_timesteps=False)
    np.testing.assert_allclose(head + tail, whole, rtol=1e-6)
    assert resumed.num_timesteps == 4 * 64 and resumed.num_updates == 4
