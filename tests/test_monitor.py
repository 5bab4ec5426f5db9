"""Monitor CSVs and TensorBoard scalars, in the formats other RL tools read."""

import os

import numpy as np
import pytest

from unstable_ppo import PPO
from unstable_ppo.envs.monitor import read_monitor
from unstable_ppo.summaries import TENSORBOARD_KEYS, TensorBoardLogger

pytestmark = [pytest.mark.quick, pytest.mark.backend_independent]  # numpy, CSVs and TensorBoard files: no Keras backend


def test_every_env_writes_its_episodes_to_a_monitor_csv(tmp_path):
    ppo = PPO("CartPole-v1", seed=0, num_envs=3, num_steps=64, num_epochs=1, batch_size=64,
              monitor_dir=str(tmp_path / "monitor"))
    ppo.learn(3 * 64 * 2)
    ppo.env.close()
    files = sorted(os.listdir(tmp_path / "monitor"))
    assert files == ["0.monitor.csv", "1.monitor.csv", "2.monitor.csv"]
    lines = (tmp_path / "monitor" / "0.monitor.csv").read_text().splitlines()
    assert lines[0].startswith('#{"t_start": ') and '"env_id": "CartPole-v1"' in lines[0]
    assert lines[1] == "r,l,t"
    episodes = []
    for name in files:
        header, rows = read_monitor(tmp_path / "monitor" / name)
        assert header["env_id"] == "CartPole-v1" and rows
        assert all(r["r"] == r["l"] for r in rows)  # CartPole: reward 1 per step
        assert [r["t"] for r in rows] == sorted(r["t"] for r in rows)
        episodes += rows
    # The CSVs hold the same episodes as the in-process statistics.
    assert len(episodes) == len(ppo.episode_returns) or len(ppo.episode_returns) == 100
    np.testing.assert_allclose(sorted(r["r"] for r in episodes)[-5:],
                               sorted(ppo.episode_returns)[-5:])


def test_tensorboard_scalars_use_the_stable_baselines3_keys(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    logger = TensorBoardLogger(str(tmp_path))
    logs = {name: float(i + 1) for i, name in enumerate(TENSORBOARD_KEYS)}
    logger.write(logs, step=1024)
    logger.write({k: v * 2 for k, v in logs.items()}, step=2048)
    logger.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"rollout/ep_rew_mean", "train/approx_kl", "train/clip_fraction", "train/entropy_loss",
            "train/explained_variance", "train/policy_gradient_loss", "train/value_loss",
            "train/learning_rate", "time/fps"} <= tags
    import tensorflow as tf

    events = acc.Tensors("train/entropy_loss")
    assert [e.step for e in events] == [1024, 2048]
    entropy = logs["entropy"]
    assert [float(tf.make_ndarray(e.tensor_proto)) for e in events] == [-entropy, -2 * entropy]


def test_async_workers_report_episodes_and_write_monitor_files(tmp_path):
    from unstable_ppo.envs import make_vec_env

    env = make_vec_env("CartPole-v1", 2, "async", monitor_dir=str(tmp_path / "monitor"))
    env.reset(seed=0)
    env.action_space.seed(0)
    returns = []
    for _ in range(200):
        _, _, _, _, info = env.step(env.action_space.sample())
        final = info.get("final_info", {})
        if "episode" in final:
            returns += [float(r) for r in final["episode"]["r"][final["_episode"]]]
    env.close()
    rows = [row for i in range(2) for row in read_monitor(tmp_path / "monitor" / f"{i}.monitor.csv")[1]]
    assert len(returns) >= 5 and sorted(returns) == sorted(row["r"] for row in rows)
