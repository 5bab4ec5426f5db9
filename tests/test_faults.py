"""Faults injected for real: crashing envs and workers, NaN, failed saves, SIGKILL.

The unit tests here check the pieces in-process; the trials at the end run the
runner as a subprocess (`tests/helpers/fault_injection.py`, the fast subset of
`benchmarks/faults.py`).
"""

import errno
import logging
import os
import signal
import time

import keras
import numpy as np
import pytest

from tests.helpers import fault_injection as fi
from unstable_ppo import PPO
from unstable_ppo.checkpoint import CheckpointError, save_checkpoint
from unstable_ppo.envs import make_vec_env, registered_id
from unstable_ppo.envs.supervisor import SupervisedVectorEnv
from unstable_ppo.faults import EnvError, EnvFailure, NonFiniteError, check_finite, check_finite_logs

FAULTY = fi.FAULTY_ENV


@pytest.fixture
def fault_env(monkeypatch):
    """Set the fault envs' environment variables for this test only."""
    for name in ("FAULT_RAISE_EVERY", "FAULT_RAISE_ENV", "FAULT_BUDGET", "FAULT_NAN_AT", "FAULT_NAN_IN"):
        monkeypatch.delenv(name, raising=False)
    return lambda **values: [monkeypatch.setenv(k, str(v)) for k, v in values.items()]


# -- numbers ---------------------------------------------------------------------------


def test_check_finite_names_the_quantity_the_envs_and_the_place():
    check_finite("reward", np.array([1.0, 2.0]), "here")
    check_finite("observation", np.zeros((2, 84, 84), np.uint8), "here")  # pixels: nothing to check
    obs = np.zeros((3, 4), np.float32)
    obs[1, 2], obs[2, 0] = np.inf, np.nan
    with pytest.raises(NonFiniteError, match=r"non-finite observation \(inf\) from env 1, 2 at step 5"):
        check_finite("observation", obs, "at step 5")
    with pytest.raises(NonFiniteError, match=r"non-finite value_loss \(nan\) in update 3"):
        check_finite_logs({"loss": 1.0, "value_loss": float("nan"), "explained_variance": float("nan")}, 3)
    check_finite_logs({"loss": 1.0, "explained_variance": float("nan")}, 3)  # nan when returns are constant


def test_nan_observation_stops_learn_at_the_first_occurrence(fault_env):
    fault_env(FAULT_NAN_AT=40, FAULT_NAN_IN="obs")
    ppo = PPO(FAULTY, seed=0, num_envs=2, num_steps=16, batch_size=16, num_epochs=1)
    with pytest.raises(NonFiniteError, match=r"non-finite observation \(nan\) from env 0, 1 at step 7 of rollout 3"):
        ppo.learn(10_000)
    assert ppo.num_updates == 2  # the rollout with the NaN was never trained on
    ppo.env.close()


def test_nan_loss_is_named_and_nothing_non_finite_is_saved(tmp_path):
    ppo = PPO("CartPole-v1", seed=0, num_envs=2, num_steps=16, batch_size=16, num_epochs=1)
    weight = ppo.model.trainable_variables[0]
    weight.assign(np.full(weight.shape, np.nan, "float32"))
    with pytest.raises(NonFiniteError, match=r"non-finite \w+ \(nan\) in update 1"):
        ppo.learn(32)
    with pytest.raises(NonFiniteError, match="non-finite weights"):
        ppo.save(str(tmp_path / "model"))
    assert not (tmp_path / "model").exists()
    ppo.env.close()


# -- env failures ----------------------------------------------------------------------


def test_an_env_that_raises_is_rebuilt_with_a_warning_naming_it(fault_env, caplog):
    fault_env(FAULT_RAISE_EVERY=5)
    env = make_vec_env(FAULTY, 2, "sync", max_env_restarts=2)
    obs, _ = env.reset(seed=0)
    with caplog.at_level(logging.WARNING, logger="unstable_ppo"):
        for _ in range(4):
            last, _, _, truncated, _ = env.step(np.array([0, 1]))
            assert not truncated.any()
        obs, rewards, terminated, truncated, info = env.step(np.array([0, 1]))
    assert env.restarts == 1 and truncated.all() and not terminated.any() and (rewards == 0).all()
    assert info["env_restarted"].all() and np.allclose(np.stack(info["final_obs"]), last)
    assert "env 0 failed during step (env 0: RuntimeError: injected failure at step 5)" in caplog.text
    for _ in range(4):  # the rebuilt envs count their steps afresh
        env.step(np.array([0, 1]))
    env.step(np.array([0, 1]))
    assert env.restarts == 2
    for _ in range(4):
        env.step(np.array([0, 1]))
    with pytest.raises(EnvFailure, match="3 env failures, more than max_env_restarts=2"):
        env.step(np.array([0, 1]))
    env.close()


def test_async_workers_killed_or_silent_are_replaced_within_the_timeout(fault_env, caplog):
    env = make_vec_env("CartPole-v1", 2, "async", max_env_restarts=5, env_timeout=2.0)
    env.reset(seed=0)
    actions = np.array([0, 1])
    env.step(actions)
    with caplog.at_level(logging.WARNING, logger="unstable_ppo"):
        os.kill(env.env.processes[1].pid, signal.SIGKILL)
        env.env.processes[1].join(5)
        *_, truncated, _ = env.step(actions)
        assert truncated.all() and env.restarts == 1
        assert "env 1 failed during step" in caplog.text
        stopped = env.env.processes[0]
        os.kill(stopped.pid, signal.SIGSTOP)  # a hang
        start = time.monotonic()
        *_, truncated, _ = env.step(actions)
        assert truncated.all() and env.restarts == 2 and time.monotonic() - start < 30
        assert "env 0 failed during step (no answer within 2 s)" in caplog.text
        stopped.join(5)
        assert not stopped.is_alive()  # killed, not left behind
    env.step(actions)
    env.close()
    assert env.closed


def test_an_error_inside_an_async_worker_keeps_its_env_index(fault_env):
    fault_env(FAULT_RAISE_EVERY=3, FAULT_RAISE_ENV=1)
    env = make_vec_env(FAULTY, 2, "async", max_env_restarts=0)
    env.reset(seed=0)
    env.step(np.array([0, 1]))
    env.step(np.array([0, 1]))
    with pytest.raises(EnvFailure, match=r"env 1 failed during step \(env 1: RuntimeError: injected"):
        env.step(np.array([0, 1]))
    env.close()
    assert EnvError("env 7: ValueError: x").env_index == 7  # rebuilt from the message alone


def test_evaluation_does_not_count_episodes_cut_by_an_env_failure(fault_env, tmp_path):
    fault_env(FAULT_RAISE_EVERY=30, FAULT_BUDGET=f"{tmp_path / 'budget'}:2")
    ppo = PPO("CartPole-v1", seed=0, num_envs=2, num_steps=16, batch_size=16)
    env = make_vec_env(FAULTY, 2, "sync", max_env_restarts=5, training=False)
    result = ppo.evaluate(env, n_episodes=6)
    assert env.restarts == 2 and len(result["returns"]) == 6
    assert all(r == length for r, length in zip(result["returns"], result["lengths"]))  # +1 per step
    env.close()
    ppo.env.close()


def test_env_id_with_a_module_to_import():
    assert registered_id(FAULTY) == "FaultyCartPole-v0"
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        registered_id("no_such_module:Env-v0")


# -- saving ----------------------------------------------------------------------------


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_partial_files(tmp_path, monkeypatch):
    ppo = PPO("CartPole-v1", seed=0, num_envs=1, num_steps=16, batch_size=16)
    root = str(tmp_path / "model")
    save_checkpoint(ppo, root, "latest")
    before = sorted(os.listdir(root))
    real_save = keras.Model.save

    def disk_full(model, path, *args, **kwargs):
        real_save(model, path, *args, **kwargs)  # half the checkpoint exists when the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", disk_full)
    ppo.num_timesteps = 16
    with pytest.raises(CheckpointError, match=r"No space left on device\); the previous one is intact"):
        save_checkpoint(ppo, root, "latest")
    assert sorted(os.listdir(root)) == before
    monkeypatch.undo()
    assert PPO.load(root).num_timesteps == 0
    ppo.env.close()


# -- the runner, faulted for real (the fast subset of benchmarks/faults.py) ------------------


# The env supervisor, the NaN checks on rewards and the file writes are numpy and the OS on every
# backend; the kills (checkpoints, resumed optimizer and RNG state) run on each.
INDEPENDENT = pytest.mark.backend_independent


@pytest.mark.parametrize("trial", [
    pytest.param(lambda d, b: fi.kill_and_resume(d, np.random.default_rng(1), b), id="sigkill"),
    pytest.param(lambda d, b: fi.kill_and_resume(d, np.random.default_rng(2), b, during_save=True),
                 id="sigkill-during-save"),
    pytest.param(lambda d, b: fi.env_raises(d, b), id="env-raises",
                 marks=INDEPENDENT),
    pytest.param(lambda d, b: fi.worker_fault(d, np.random.default_rng(3), b), id="worker-killed",
                 marks=INDEPENDENT),
    pytest.param(lambda d, b: fi.too_many_env_failures(d, b), id="too-many-env-failures",
                 marks=INDEPENDENT),
    pytest.param(lambda d, b: fi.non_finite(d, b), id="nan-reward",
                 marks=INDEPENDENT),
    pytest.param(lambda d, b: fi.disk_full(d, b), id="disk-full",
                 marks=INDEPENDENT),
    pytest.param(lambda d, b: fi.unwritable_logdir(d, b), id="unwritable-logdir",
                 marks=INDEPENDENT),
])
def test_runner_survives(trial, tmp_path):
    result = trial(str(tmp_path), keras.backend.backend())
    assert not result.lost, f"{result.kind}: {result.detail}"
