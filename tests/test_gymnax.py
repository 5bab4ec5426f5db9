"""The gymnax family: `gymnax/<EnvId>` ids as Gymnasium envs, through the Python API and the runner.

The env is JAX whatever the Keras backend, and the family's code is plain Python: these run once.
"""

import json

import numpy as np
import pytest

pytest.importorskip("gymnax", reason="the gymnax extra is not installed")

from unstable_ppo.envs import family_of, make_vec_env  # noqa: E402
from unstable_ppo.envs.gymnax import GymnaxEnv  # noqa: E402

pytestmark = pytest.mark.backend_independent


@pytest.mark.parametrize("env_id, obs_shape, action", [
    ("gymnax/CartPole-v1", (4,), "Discrete(2)"),
    ("gymnax/Pendulum-v1", (3,), "Box(-2.0, 2.0, (1,), float32)"),
    ("gymnax/Breakout-MinAtar", (10, 10, 4), "Discrete(3)"),
])
def test_spaces_map_to_gymnasium_and_the_family_takes_the_prefix(env_id, obs_shape, action):
    assert family_of(env_id).name == "gymnax"
    env = GymnaxEnv(env_id)
    assert env.observation_space.shape == obs_shape and str(env.action_space) == action
    obs, _ = env.reset(seed=0)
    assert obs.shape == obs_shape and env.observation_space.contains(obs.astype(env.observation_space.dtype))


def test_episodes_end_as_gymnasium_says_seeded_and_without_auto_reset():
    env = GymnaxEnv("gymnax/CartPole-v1", max_steps_in_episode=5)
    first, _ = env.reset(seed=3)
    again, _ = GymnaxEnv("gymnax/CartPole-v1").reset(seed=3)
    np.testing.assert_array_equal(first, again)  # the seed fixes the start
    ends = []
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(0)
        ends.append((terminated, truncated))
        assert reward == 1.0 and isinstance(terminated, bool)
    assert ends[-1] == (False, True) and not any(t or u for t, u in ends[:-1])  # the time limit truncates
    env = GymnaxEnv("gymnax/CartPole-v1")
    env.reset(seed=4)
    while True:  # always pushing left: the pole falls, the episode terminates
        obs, reward, terminated, truncated, _ = env.step(0)
        if terminated or truncated:
            break
    assert terminated and abs(obs[2]) > 0.2  # the last observation, not a fresh episode's


def test_bad_ids_and_env_kwargs_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown gymnax env 'CartPole-v9'.*gymnax has: CartPole-v1"):
        make_vec_env("gymnax/CartPole-v9", 1)
    with pytest.raises(ValueError, match="does not take these env_kwargs: max_steps.*max_steps_in_episode"):
        GymnaxEnv("gymnax/CartPole-v1", max_steps=3)


def test_ppo_trains_evaluates_saves_and_loads_on_a_gymnax_id(tmp_path):
    from unstable_ppo import PPO

    ppo = PPO("gymnax/CartPole-v1", seed=0, num_envs=2, num_steps=32, num_epochs=1, batch_size=32,
              env_kwargs={"max_steps_in_episode": 50})
    ppo.learn(64)
    assert ppo.num_timesteps == 64 and ppo.episode_returns  # 64 steps hold episodes of at most 50
    ppo.save(tmp_path / "m")
    loaded = PPO.load(tmp_path / "m")
    result = loaded.evaluate(n_episodes=2)  # rebuilt from the saved id and env_kwargs
    assert loaded.env_id == "gymnax/CartPole-v1" and max(result["lengths"]) <= 50


def test_the_runner_takes_a_gymnax_id(tmp_path, run_runner):
    logdir = tmp_path / "run"
    result = run_runner("--env_id=gymnax/CartPole-v1", "--num_envs=2", "--num_steps=32", "--num_epochs=1",
                        "--batch_size=32", "--total_timesteps=64", "--eval_episodes=2", f"--logdir={logdir}",
                        '--env_kwargs={"max_steps_in_episode": 40}')
    assert result.returncode == 0, result.stderr
    metrics = json.loads((logdir / "metrics.json").read_text())
    assert metrics["env_id"] == "gymnax/CartPole-v1" and metrics["total_timesteps"] == 64
    assert (logdir / "monitor" / "0.monitor.csv").read_text().count("\n") > 2  # header lines and episodes
