"""The time feature (`time_feature=True`, `--time_feature`): t / max_episode_steps appended to the observation.

Checked against a step counter kept here, beside the same env without it; through PPO's save, load,
evaluation and the runner; and the bad cases, each a one-line error.
"""

import json
import os
import subprocess
import sys

import gymnasium as gym
import keras
import numpy as np
import pytest

from tests.helpers.runner import ROOT, child_env, run_runner
from unstable_ppo import PPO
from unstable_ppo.envs import EnvOptions, make_vec_env

PENDULUM_STEPS = 200  # Pendulum-v1's registered time limit


def test_the_feature_is_the_elapsed_fraction_of_the_time_limit():
    timed, plain = make_vec_env("Pendulum-v1", 2, options=EnvOptions(time_feature=True)), make_vec_env("Pendulum-v1", 2)
    obs, _ = timed.reset(seed=3)
    plain_obs, _ = plain.reset(seed=3)
    assert timed.single_observation_space.shape == (4,) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[:, :3], plain_obs)
    np.testing.assert_array_equal(obs[:, 3], 0.0)
    rng = np.random.default_rng(0)
    t = np.zeros(2, int)  # steps into the current episode, counted here
    ends = 0
    for _ in range(2 * PENDULUM_STEPS + 17):
        actions = rng.uniform(-2, 2, (2, 1)).astype(np.float32)
        obs, reward, terminated, truncated, info = timed.step(actions)
        plain_obs, plain_reward, _, plain_truncated, plain_info = plain.step(actions)
        t += 1
        np.testing.assert_array_equal(reward, plain_reward)  # the rewards (and the Monitor's returns) are the env's
        np.testing.assert_array_equal(truncated, plain_truncated)
        for i in np.flatnonzero(truncated):  # SAME_STEP autoreset: the episode's last observation is in final_obs
            assert t[i] == PENDULUM_STEPS
            assert info["final_obs"][i][3] == pytest.approx(1.0)
            np.testing.assert_array_equal(info["final_obs"][i][:3], plain_info["final_obs"][i])
            t[i] = 0
            ends += 1
        np.testing.assert_allclose(obs[:, 3], t / PENDULUM_STEPS, rtol=0, atol=1e-7)
        np.testing.assert_array_equal(obs[:, :3], plain_obs)
    assert ends == 4
    timed.close()
    plain.close()


def test_ppo_trains_saves_loads_and_evaluates_with_the_feature(tmp_path):
    ppo = PPO("Pendulum-v1", seed=1, time_feature=True, num_envs=2, num_steps=32, batch_size=32, num_epochs=1,
              normalize_obs=True)
    assert ppo.observation_space.shape == (4,)
    ppo.learn(64)
    ppo.save(tmp_path / "m")
    assert json.load(open(tmp_path / "m" / "ppo.json"))["hyperparameters"]["time_feature"] is True
    loaded = PPO.load(tmp_path / "m")
    assert loaded.hp.time_feature
    # Evaluation rebuilds the env from its id with the feature; both models act alike on it.
    a, b = ppo.evaluate(n_episodes=2, seed=5), loaded.evaluate(n_episodes=2, seed=5)
    assert a["returns"] == b["returns"] and a["lengths"] == [PENDULUM_STEPS] * 2
    assert loaded.evaluate(env="Pendulum-v1", n_episodes=1)["lengths"] == [PENDULUM_STEPS]
    # A single gym.Env is wrapped too; a VectorEnv must bring the feature itself.
    loaded.set_env(gym.make("Pendulum-v1"))
    assert loaded.env.single_observation_space.shape == (4,)
    with pytest.raises(ValueError, match="observation space .* does not match"):
        loaded.evaluate(env=gym.make_vec("Pendulum-v1", 1), n_episodes=1)


class NoTimeLimit(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


@pytest.mark.parametrize("env, message", [
    ("ALE/Pong-v5", "time_feature appends the time to vector observations: ALE/Pong-v5's are Atari frames"),
    ("tests.helpers.envs:DictBox-v0", "time_feature appends the time to a vector observation: "
                                      "tests.helpers.envs:DictBox-v0's observation space Dict"),
    (NoTimeLimit(), "time_feature needs a time limit, and NoTimeLimit has none"),
])
def test_bad_envs_are_one_line_errors(env, message):
    with pytest.raises(ValueError) as error:
        PPO(env, time_feature=True, num_envs=1, num_steps=8, batch_size=8)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.backend_independent  # an env wrapper; the model is the same on every backend
def test_the_runner_trains_with_the_flag_and_play_rebuilds_the_env(tmp_path):
    backend = keras.backend.backend()
    run = run_runner("--env_id=Pendulum-v1", "--noenv_defaults", "--time_feature", "--num_envs=2", "--num_steps=16",
                     "--batch_size=16", "--num_episodes=2", "--eval_episodes=1", "--verbose=0",
                     f"--backend={backend}", f"--logdir={tmp_path}/run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    saved = json.load(open(tmp_path / "run" / "model" / "latest" / "ppo.json"))
    assert saved["hyperparameters"]["time_feature"] is True
    play = subprocess.run([sys.executable, "-m", "unstable_ppo.play", f"--model_dir={tmp_path}/run/model/latest",
                           "--episodes=1"], env=child_env(KERAS_BACKEND=backend), capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert play.returncode == 0, play.stderr[-3000:]
    assert f"length={PENDULUM_STEPS}" in play.stdout
    # A resumed run keeps the observation it was trained on.
    resumed = run_runner("--env_id=Pendulum-v1", "--noenv_defaults", "--notime_feature", "--resume",
                         "--num_envs=2", "--num_steps=16", "--batch_size=16", "--num_episodes=3", "--verbose=0",
                         f"--backend={backend}", f"--logdir={tmp_path}/run", cwd=tmp_path)
    assert resumed.returncode == 2 and "time_feature" in resumed.stderr.strip().splitlines()[-1], resumed.stderr


def test_export_names_the_feature(tmp_path):
    pytest.importorskip("onnxruntime")
    ppo = PPO("Pendulum-v1", seed=0, time_feature=True, num_envs=1, num_steps=16, batch_size=16)
    ppo.export(tmp_path / "policy.onnx", "onnx")
    policy = json.load(open(tmp_path / "policy.json"))
    assert "TimeAwareObservation" in policy["env_preprocessing"]["pipeline"]
    assert policy["observation_space"]["shape"] == [4]
