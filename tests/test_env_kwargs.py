"""gymnasium.make's keyword arguments for the env id (`env_kwargs=`, `--env_kwargs`), as the RL Zoo's env_kwargs.

Checked against envs built here with `gym.make(id, **kwargs)`: training, evaluation after a save and load,
play, resume and export rebuild the same env; bad values are one-line errors.
"""

import json
import subprocess
import sys

import gymnasium as gym
import keras
import numpy as np
import pytest

from tests.helpers.runner import child_env, run_runner
from unstable_ppo import PPO
from unstable_ppo.evaluation import play_episodes

LOW_G = {"g": 2.0}  # Pendulum-v1's gravity (default 10): the same observations, other dynamics


def returns_on(ppo, episodes=2, **make_kwargs):
    """The deterministic returns of `ppo` on `episodes` Pendulum-v1 envs built here with `make_kwargs`, seed 7."""
    env = gym.make_vec("Pendulum-v1", episodes, vectorization_mode="sync", **make_kwargs)
    try:
        return play_episodes(ppo, gym.wrappers.vector.RecordEpisodeStatistics(env), episodes, True, 7)["returns"]
    finally:
        env.close()


def test_training_envs_evaluation_and_a_loaded_model_use_the_kwargs(tmp_path):
    ppo = PPO("Pendulum-v1", seed=0, num_envs=2, num_steps=32, batch_size=32, num_epochs=1, env_kwargs=LOW_G)
    assert [e.unwrapped.g for e in ppo.env.envs] == [2.0, 2.0]
    ppo.learn(64)
    ppo.save(tmp_path / "m")
    assert json.load(open(tmp_path / "m" / "ppo.json"))["hyperparameters"]["env_kwargs"] == LOW_G
    loaded = PPO.load(tmp_path / "m")
    assert loaded.hp.env_kwargs == LOW_G
    low, default = returns_on(loaded, **LOW_G), returns_on(loaded)
    assert low != default  # the check below can tell the two envs apart
    assert loaded.evaluate(n_episodes=2, seed=7)["returns"] == low
    assert ppo.evaluate(n_episodes=2, seed=7)["returns"] == low
    loaded.set_env("Pendulum-v1")
    assert loaded.env.envs[0].unwrapped.g == 2.0
    # An env the caller built is used as it is.
    assert loaded.evaluate(env=gym.make_vec("Pendulum-v1", 2), n_episodes=2, seed=7)["returns"] == default


def test_without_kwargs_nothing_changes():
    ppo = PPO("Pendulum-v1", seed=0, num_envs=1, num_steps=16, batch_size=16)
    assert ppo.hp.env_kwargs is None and ppo.env.envs[0].unwrapped.g == 10.0


@pytest.mark.parametrize("env_kwargs, message", [
    ({"render_mode": "human"}, "env_kwargs cannot set render_mode"),
    ({"g": object()}, "env_kwargs['g'] must be a JSON value"),
    ({"g": float("nan")}, "env_kwargs['g'] must be a JSON value"),
    ({1: 2}, "env_kwargs keys must be argument names, got 1"),
    ([("g", 2.0)], "env_kwargs must be a dict of gymnasium.make's keyword arguments"),
    ({"gravity": 2.0}, "Pendulum-v1 does not take these env_kwargs: "),
])
def test_bad_kwargs_are_one_line_errors(env_kwargs, message):
    with pytest.raises(ValueError) as error:
        PPO("Pendulum-v1", env_kwargs=env_kwargs, num_envs=1, num_steps=8, batch_size=8)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def runner(tmp_path, *flags):
    return run_runner("--env_id=Pendulum-v1", "--noenv_defaults", "--num_envs=2", "--num_steps=16", "--batch_size=16",
                      "--eval_episodes=1", "--verbose=0", f"--backend={keras.backend.backend()}",
                      f"--logdir={tmp_path}/run", *flags, cwd=tmp_path)


@pytest.mark.backend_independent  # the kwargs reach the envs; the model is the same on every backend
def test_the_runner_flag_play_and_resume(tmp_path):
    run = runner(tmp_path, '--env_kwargs={"g": 2.0}', "--num_episodes=2")
    assert run.returncode == 0, run.stderr[-3000:]
    saved = json.load(open(tmp_path / "run" / "model" / "latest" / "ppo.json"))
    assert saved["hyperparameters"]["env_kwargs"] == LOW_G and saved["run"]["flags"]["env_kwargs"] == LOW_G
    model = PPO.load(tmp_path / "run" / "model" / "latest")
    expected = returns_on(model, episodes=1, **LOW_G)[0]
    play = subprocess.run([sys.executable, "-m", "unstable_ppo.play", f"--model_dir={tmp_path}/run/model/latest",
                           "--episodes=1", "--seed=7"], env=child_env(KERAS_BACKEND=keras.backend.backend()),
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert play.returncode == 0, play.stderr[-3000:]
    assert f"return={expected:.2f}" in play.stdout, (expected, play.stdout)
    # Resuming keeps the env: the same object written another way is accepted, another value is refused.
    same = runner(tmp_path, "--env_kwargs={ \"g\" :2.0 }", "--resume", "--num_episodes=3")
    assert same.returncode == 0, same.stderr[-3000:]
    other = runner(tmp_path, '--env_kwargs={"g": 3.0}', "--resume", "--num_episodes=4")
    assert other.returncode == 2 and "env_kwargs" in other.stderr.strip().splitlines()[-1], other.stderr


@pytest.mark.parametrize("line, message", [
    ('--env_kwargs={"g": 2.0', "not JSON"),
    ("--env_kwargs=[1, 2]", "expected a JSON object"),
])
def test_a_bad_value_in_a_flagfile_names_the_line(tmp_path, line, message):
    flagfile = tmp_path / "pendulum.flags"
    flagfile.write_text("# a comment\n--num_envs=2\n" + line + "\n")
    run = runner(tmp_path, f"--flagfile={flagfile}", "--num_episodes=1")
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode != 0 and f"{flagfile}:3" in last and message in last, run.stderr[-2000:]


def test_an_unknown_kwarg_stops_the_runner_in_one_line(tmp_path):
    run = runner(tmp_path, '--env_kwargs={"gravity": 2.0}', "--num_episodes=1")
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode != 0 and "Pendulum-v1 does not take these env_kwargs" in last, run.stderr[-2000:]
    assert not (tmp_path / "run" / "model").exists()


def test_export_names_the_kwargs(tmp_path):
    pytest.importorskip("onnxruntime")
    ppo = PPO("Pendulum-v1", seed=0, env_kwargs=LOW_G, num_envs=1, num_steps=16, batch_size=16)
    ppo.export(tmp_path / "policy.onnx", "onnx")
    assert json.load(open(tmp_path / "policy.json"))["env_kwargs"] == LOW_G
    np.testing.assert_equal(PPO("Pendulum-v1", num_envs=1, num_steps=8, batch_size=8).hp.env_kwargs, None)
