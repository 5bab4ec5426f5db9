"""Saving and loading: round trips, across backends, and bad files."""

import json
import os
import subprocess
import sys
import zipfile

import gymnasium as gym
import keras
import numpy as np
import pytest

from tests.helpers.envs import SpaceEnv
from tests.helpers.runner import child_env
from tests.helpers.settings import SMALL_2X16
from unstable_ppo import PPO
from unstable_ppo.checkpoint import META_FILE, MODEL_FILE

from gymnasium import spaces

def values_of(ppo, obs):
    params, values = ppo.model(obs.astype(ppo.model.obs_dtype))
    return keras.ops.convert_to_numpy(params), keras.ops.convert_to_numpy(values)


@pytest.mark.quick
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_round_trip_restores_policy_optimizer_and_counters(tmp_path, env_id):
    ppo = PPO(env_id, seed=0, lr=1e-3, **SMALL_2X16)
    ppo.learn(64)
    ppo.save(tmp_path / "m")
    obs = np.stack([ppo.observation_space.sample() for _ in range(6)])
    loaded = PPO.load(tmp_path / "m")
    for a, b in zip(values_of(ppo, obs), values_of(loaded, obs)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ppo.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.num_timesteps == 64 and loaded.num_updates == 2
    assert loaded.hp == ppo.hp and loaded.env_id == env_id
    assert int(loaded.model.optimizer.iterations.numpy() if hasattr(loaded.model.optimizer.iterations, "numpy")
               else keras.ops.convert_to_numpy(loaded.model.optimizer.iterations)) == 4
    for a, b in zip(ppo.model.optimizer.variables, loaded.model.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert loaded.model.loss_config == ppo.model.loss_config
    # A loaded model keeps training.
    loaded = PPO.load(tmp_path / "m", env=env_id)
    loaded.learn(32)
    assert loaded.num_timesteps == 96
    assert not os.listdir(tmp_path / "m") == [] and all(not f.endswith(".tmp") for f in os.listdir(tmp_path / "m"))


@pytest.mark.quick
def test_saved_files_hold_no_pickle(tmp_path):
    PPO("CartPole-v1", **SMALL_2X16).save(tmp_path / "m")
    with zipfile.ZipFile(tmp_path / "m" / MODEL_FILE) as z:
        assert set(z.namelist()) == {"config.json", "metadata.json", "model.weights.h5"}
        config = json.loads(z.read("config.json"))
    assert config["class_name"] == "ActorCritic" and config["module"] is None or "unstable_ppo" in json.dumps(config)
    meta = json.loads((tmp_path / "m" / META_FILE).read_text())
    assert meta["format"] == "unstable_ppo" and meta["observation_space"]["type"] == "Box"


SAVE_SCRIPT = """
import sys, numpy as np
from unstable_ppo import PPO
env_id, out = sys.argv[1], sys.argv[2]
ppo = PPO(env_id, seed=5, num_envs=2, num_steps=16, num_epochs=1, batch_size=16)
ppo.learn(64)
ppo.save(out)
rng = np.random.default_rng(0)
obs = np.stack([ppo.observation_space.sample() for _ in range(8)]).astype("float32")
import gymnasium as gym
import keras
params, values = ppo.model(obs)
np.savez(out + "/expected.npz", obs=obs, params=keras.ops.convert_to_numpy(params),
         values=keras.ops.convert_to_numpy(values), actions=ppo.predict(obs, deterministic=True)[0])
"""


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_model_saved_under_another_backend_predicts_identically(tmp_path, env_id):
    here = keras.backend.backend()
    other = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}[here]
    out = str(tmp_path / "m")
    env = child_env(KERAS_BACKEND=other)
    proc = subprocess.run([sys.executable, "-c", SAVE_SCRIPT, env_id, out], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(open(os.path.join(out, META_FILE)).read())["keras_backend"] == other
    expected = np.load(os.path.join(out, "expected.npz"))
    loaded = PPO.load(out)
    params, values = values_of(loaded, expected["obs"])
    np.testing.assert_allclose(params, expected["params"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values, expected["values"], rtol=1e-5, atol=1e-6)
    actions, _ = loaded.predict(expected["obs"], deterministic=True)
    np.testing.assert_array_equal(actions, expected["actions"]) if env_id == "CartPole-v1" \
        else np.testing.assert_allclose(actions, expected["actions"], rtol=1e-5, atol=1e-6)


@pytest.mark.quick
def test_missing_model_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an unstable_ppo model directory"):
        PPO.load(tmp_path / "nothing")


@pytest.mark.quick
@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign_zip"])
def test_corrupt_model_file_is_a_one_line_error(tmp_path, damage):
    PPO("CartPole-v1", **SMALL_2X16).save(tmp_path / "m")
    path = tmp_path / "m" / MODEL_FILE
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a zip" * 100)
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", json.dumps({"class_name": "Lambda", "config": {"function": "os.system"}}))
    with pytest.raises(ValueError) as info:
        PPO.load(tmp_path / "m")
    assert "corrupt or foreign model file" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.quick
def test_corrupt_or_newer_metadata(tmp_path):
    PPO("CartPole-v1", **SMALL_2X16).save(tmp_path / "m")
    meta_path = tmp_path / "m" / META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(dict(meta, format_version=99)))
    with pytest.raises(ValueError, match="format version 99, newer"):
        PPO.load(tmp_path / "m")
    meta_path.write_text("{ not json")
    with pytest.raises(ValueError, match="corrupt model metadata"):
        PPO.load(tmp_path / "m")


def test_env_with_other_spaces_is_refused(tmp_path):
    PPO("CartPole-v1", **SMALL_2X16).save(tmp_path / "m")
    with pytest.raises(ValueError, match="observation space .* does not match"):
        PPO.load(tmp_path / "m", env="Acrobot-v1")
    loaded = PPO.load(tmp_path / "m")
    with pytest.raises(ValueError, match="action space .* does not match"):
        cartpole_obs = gym.make("CartPole-v1").observation_space
        loaded.evaluate(SpaceEnv(cartpole_obs, spaces.Discrete(3)), n_episodes=1)


def test_set_env_trains_a_loaded_model_on_another_number_of_envs(tmp_path):
    ppo = PPO("Pendulum-v1", seed=0, num_envs=2, num_steps=16, batch_size=16, normalize_reward=True)
    ppo.learn(32)
    ppo.save(str(tmp_path / "m"))
    loaded = PPO.load(str(tmp_path / "m"))
    assert loaded.env is None
    loaded.set_env("Pendulum-v1")
    assert loaded.env.num_envs == 2 and loaded.normalizer.returns.shape == (2,)
    from unstable_ppo.envs import make_vec_env

    loaded.set_env(make_vec_env("Pendulum-v1", 3))
    assert loaded.hp.num_envs == 3 and loaded.normalizer.returns.shape == (3,)
    loaded.learn(3 * 16 * 2, reset_num_timesteps=False)
    assert loaded.num_updates == 2 and loaded.num_timesteps == 32 + 3 * 16  # the update count continues
    with pytest.raises(ValueError, match="observation space"):
        loaded.set_env("CartPole-v1")
    loaded.env.close()
    ppo.env.close()
