"""The Atari pipeline: gymnasium's wrappers and ale-py's vector env, and a short run through the runner."""

import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from tests.helpers.runner import child_env
from unstable_ppo.envs.atari import EpisodicLife, is_atari, make_atari_env
from unstable_ppo.envs import make_vec_env
from unstable_ppo.envs.monitor import read_monitor

GAME = "BreakoutNoFrameskip-v4"


def test_atari_ids_are_recognised():
    assert is_atari(GAME) and is_atari("ALE/Pong-v5") and is_atari("BreakoutNoFrameskip-v0")
    assert not is_atari("CartPole-v1") and not is_atari("NoSuchGame-v9")


def test_training_env_is_the_standard_pipeline():
    env = make_atari_env(GAME, training=True)
    assert env.observation_space.shape == (4, 84, 84) and env.observation_space.dtype == np.uint8
    names = []
    e = env
    while hasattr(e, "env"):
        names.append(type(e).__name__)
        e = e.env
    assert names[:5] == ["FrameStackObservation", "TransformReward", "FireReset", "EpisodicLife",
                         "AtariPreprocessing"]
    preprocessing = env.get_wrapper_attr("noop_max"), env.get_wrapper_attr("frame_skip")
    assert preprocessing == (30, 4)
    env.close()


def test_episodic_life_ends_the_learners_episode_but_not_the_game(tmp_path):
    env = make_atari_env(GAME, training=True, monitor_file=str(tmp_path / "0.monitor.csv"))
    life = env
    while not isinstance(life, EpisodicLife):
        life = life.env
    ale = env.unwrapped.ale
    env.reset(seed=0)
    env.action_space.seed(0)
    rewards, life_ends, games = set(), 0, 0
    for _ in range(3000):
        lives = ale.lives()
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        rewards.add(float(reward))
        if terminated or truncated:
            game_over = life.game_over
            if game_over:
                games += 1
            else:
                life_ends += 1
                assert ale.lives() == lives - 1  # a life was lost, the game goes on
            env.reset()
            if not game_over:
                assert ale.lives() == lives - 1  # reset after a life loss is not a new game
    env.close()
    assert rewards <= {-1.0, 0.0, 1.0}  # clipped for the learner
    assert games >= 1 and life_ends >= 4 * games
    _, rows = read_monitor(tmp_path / "0.monitor.csv")
    assert len(rows) == games  # the Monitor sees whole games only


@pytest.mark.parametrize("mode", ["sync", "ale"])
def test_vector_envs_report_real_game_scores(tmp_path, mode):
    train = make_vec_env(GAME, 2, mode, monitor_dir=str(tmp_path / mode), training=True)
    train.reset(seed=1)
    train.action_space.seed(1)
    episodes, raw_terminations = [], 0
    for _ in range(1500):
        _, reward, terminated, truncated, info = train.step(train.action_space.sample())
        assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
        raw_terminations += int(terminated.sum())
        for source in (info, info.get("final_info", {})):
            if "episode" in source:
                episodes += [float(r) for r in source["episode"]["r"][source["_episode"]]]
    train.close()
    assert len(episodes) >= 1 and raw_terminations >= 4 * len(episodes)  # lives end learner episodes
    rows = []
    for i in range(2):
        header, env_rows = read_monitor(tmp_path / mode / f"{i}.monitor.csv")
        assert header["env_id"] == GAME
        rows += env_rows
    assert sorted(r["r"] for r in rows) == sorted(episodes)
    assert all(r["l"] > 100 for r in rows)  # frames of whole games

    evaluation = make_vec_env(GAME, 1, mode, training=False, max_episode_steps=100)
    evaluation.reset(seed=2)
    for step in range(100):
        _, _, terminated, truncated, _ = evaluation.step(evaluation.action_space.sample())
        if terminated.any() or truncated.any():
            break
    assert truncated.any() and step == 99  # no life-loss terminations; cut at 100 agent steps
    evaluation.close()


def test_a_short_breakout_run_saves_everything_play_needs(tmp_path, run_runner):
    backend = keras.backend.backend()
    env = child_env()
    logdir = tmp_path / "breakout"
    proc = run_runner(
        f"--env_id={GAME}", "--num_envs=2", "--num_steps=32",
        "--batch_size=32", "--num_epochs=1", "--num_episodes=2", "--eval_interval=1", "--eval_episodes=1",
        "--eval_max_steps=100", f"--backend={backend}", f"--logdir={logdir}", "--verbose=0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    flags = json.loads((logdir / "model" / "latest" / "ppo.json").read_text())["run"]["flags"]
    assert flags["vec_env"] == "ale" and flags["clip_range"] == 0.1 and flags["ent_coef"] == 0.01  # atari.flags
    assert sorted(os.listdir(logdir / "monitor")) == ["0.monitor.csv", "1.monitor.csv"]
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(logdir))
    assert (logdir / "model" / "best" / "model.keras").is_file()
    metrics = json.loads((logdir / "metrics.json").read_text())
    assert metrics["total_timesteps"] == 128 and metrics["backend"] == backend
    play = subprocess.run(
        [sys.executable, "-m", "unstable_ppo.play", f"--model_dir={logdir / 'model'}", "--episodes=1",
         "--max_steps=100"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert play.returncode == 0, play.stderr[-3000:]
    assert play.stdout.strip().splitlines()[-1].endswith("episodes=1")


def test_breakout_with_the_cnn_lstm_head_runs_through_the_runner(tmp_path, run_runner):
    backend = keras.backend.backend()
    logdir = tmp_path / "breakout_lstm"
    proc = run_runner(
        f"--env_id={GAME}", "--num_envs=2", "--num_steps=16",
        "--batch_size=16", "--num_epochs=1", "--num_episodes=1", "--eval_episodes=1", "--eval_max_steps=50",
        "--recurrent", "--timestep_size=8", "--hidden_layer_size=32", f"--backend={backend}",
        f"--logdir={logdir}", "--verbose=0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with zipfile.ZipFile(logdir / "model" / "latest" / "model.keras") as z:
        config = json.loads(z.read("config.json"))["config"]
    assert config["recurrent"] and config["net"] == "cnn" and config["hidden_layer_size"] == 32
    metrics = json.loads((logdir / "metrics.json").read_text())
    assert metrics["total_timesteps"] == 32 and metrics["backend"] == backend


@pytest.mark.backend_independent  # the spaces are compared before Keras loads the model
def test_a_model_played_on_an_env_with_other_spaces_is_a_one_line_error(tmp_path):
    from unstable_ppo import PPO

    PPO("CartPole-v1", seed=0, num_envs=2, num_steps=32, batch_size=32).save(tmp_path / "m")
    env = child_env()
    proc = subprocess.run([sys.executable, "-m", "unstable_ppo.play", f"--model_dir={tmp_path / 'm'}",
                           f"--env_id={GAME}", "--episodes=1"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not match" in errors[0] and "Traceback" not in proc.stderr
