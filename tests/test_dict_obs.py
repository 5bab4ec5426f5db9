"""Dict and Tuple observations, and user-defined Keras encoders (issue 21), on every backend."""

import copy
import json
import os
import subprocess
import sys
import zipfile

import gymnasium as gym
import keras
import numpy as np
import pytest
from gymnasium import spaces

from tests.helpers.encoders import GridEncoder, UnregisteredEncoder, VectorEncoder
from tests.helpers.envs import DICT_SPACE, SpaceEnv
from unstable_ppo import PPO
from unstable_ppo.observations import ObservationLayout
from unstable_ppo.spaces import UnsupportedSpaceError, check_observation_space, space_from_json, space_to_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DICT_ENV = "tests.helpers.envs:DictSpaces-v0"
SMALL = dict(num_envs=2, num_steps=16, batch_size=16, num_epochs=2)
OTHERS = {"tensorflow": ("jax", "torch"), "jax": ("torch", "tensorflow"), "torch": ("tensorflow", "jax")}
ENTRIES = ["flags", "goal.0", "goal.1", "grid", "keys", "position", "room"]  # gymnasium sorts a dict's keys


def observations(n, seed=0):
    """`n` Dict observations, as a vector env returns them (one dict of batched entries)."""
    DICT_SPACE.seed(seed)
    rows = [DICT_SPACE.sample() for _ in range(n)]
    return {k: np.stack([r[k] for r in rows]) if k != "goal" else
            (np.stack([r["goal"][0] for r in rows]), np.stack([r["goal"][1] for r in rows])) for k in DICT_SPACE}


def test_dict_and_tuple_spaces_round_trip_through_json_in_order():
    space = spaces.Tuple([DICT_SPACE, spaces.Discrete(5)])
    again = space_from_json(json.loads(json.dumps(space_to_json(space))))
    assert again == space
    assert list(ObservationLayout(again).entries) == [f"0.{k}" for k in ENTRIES] + ["1"]
    with pytest.raises(UnsupportedSpaceError, match="entry 'text'"):
        check_observation_space(spaces.Dict({"a": spaces.Discrete(2), "text": spaces.Text(5)}))
    with pytest.raises(UnsupportedSpaceError, match="contains a dot"):
        check_observation_space(spaces.Dict({"a.b": spaces.Discrete(2)}))


def test_layout_flattens_stacks_and_checks_observations():
    layout = ObservationLayout(DICT_SPACE)
    batch = layout.convert(observations(3))
    assert list(batch) == ENTRIES
    assert batch["grid"].dtype == np.uint8 and batch["room"].dtype == np.int32 and batch["keys"].dtype == np.int32
    assert batch["position"].dtype == np.float32 and batch["flags"].dtype == np.float32
    assert batch["goal.0"].shape == (3, 2) and batch["goal.1"].shape == (3,)
    DICT_SPACE.seed(0)
    rows = [DICT_SPACE.sample() for _ in range(3)]
    stacked = layout.stack(rows)
    for k in ENTRIES:
        np.testing.assert_array_equal(stacked[k], batch[k])
    one, single = layout.as_batch(rows[0])
    assert single and one["grid"].shape == (1, 6, 6, 2)
    many, single = layout.as_batch(observations(3))
    assert not single and layout.batch_size(many) == 3
    with pytest.raises(ValueError, match="entry 'grid' has shape"):
        layout.as_batch({**rows[0], "grid": np.zeros((5, 5, 2))})
    with pytest.raises(ValueError, match="missing entry"):
        layout.as_batch({k: v for k, v in rows[0].items() if k != "room"})
    assert layout.vector_entries() == ["goal.0", "position"]


def test_encoder_features_match_a_numpy_encoding():
    """Vector entries as they are, indices one-hot (Discrete `start` removed), bits as floats, the image by its CNN."""
    ppo = PPO(DICT_ENV, seed=1, **SMALL)
    encoder = ppo.model.encoder
    obs = ObservationLayout(DICT_SPACE).convert(observations(4, seed=3))
    features = keras.ops.convert_to_numpy(encoder(obs))
    grid = keras.ops.convert_to_numpy(encoder.cnns["grid"](obs["grid"].astype(np.float32) / 255.0))
    assert grid.shape == (4, 128)  # below 36x36: the small CNN
    expected = np.concatenate([
        obs["flags"], obs["goal.0"], np.eye(2)[obs["goal.1"]], grid,
        np.concatenate([np.eye(2)[obs["keys"][:, 0]], np.eye(3)[obs["keys"][:, 1]]], axis=1),
        obs["position"], np.eye(3)[obs["room"] - 1],
    ], axis=1)
    np.testing.assert_allclose(features, expected, rtol=1e-6, atol=1e-6)


def _load_and_act(backend, model_dir, obs_file, out_file, pythonpath=ROOT):
    script = ("import sys, numpy as np\nfrom unstable_ppo import PPO\nimport tests.helpers.envs\n"
              "ppo = PPO.load(sys.argv[1])\nd = np.load(sys.argv[2])\n"
              "obs = {k: d[k] for k in d.files}\nobs['goal'] = (obs.pop('goal.0'), obs.pop('goal.1'))\n"
              "np.save(sys.argv[3], ppo.predict(obs, deterministic=True)[0])\n")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=pythonpath)
    proc = subprocess.run([sys.executable, "-c", script, model_dir, obs_file, out_file], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(out_file)


@pytest.mark.cross_backend  # saved here, loaded on both others: python -m tests runs it once
@pytest.mark.parametrize("env_id", [DICT_ENV, "tests.helpers.envs:DictBox-v0"], ids=["discrete", "box"])
def test_trained_dict_policy_acts_the_same_after_loading_on_the_other_backends(tmp_path, env_id):
    """collect -> update -> save here; load on the two other backends: the same deterministic actions."""
    ppo = PPO(env_id, seed=2, normalize_obs=True, **SMALL)
    ppo.learn(64)
    ppo.save(str(tmp_path / "model"))
    obs = observations(64, seed=9)
    ours, _ = ppo.predict(obs, deterministic=True)
    flat = ObservationLayout(DICT_SPACE).convert(obs)
    np.savez(tmp_path / "obs.npz", **flat)
    for other in OTHERS[keras.backend.backend()]:
        theirs = _load_and_act(other, str(tmp_path / "model"), str(tmp_path / "obs.npz"), str(tmp_path / "a.npy"))
        if ours.dtype.kind == "f":
            np.testing.assert_allclose(theirs, ours, atol=1e-5)
        else:
            np.testing.assert_array_equal(theirs, ours)
    assert len(set(np.ravel(ours).tolist())) > 1 or ours.dtype.kind != "f"
    loaded = PPO.load(str(tmp_path / "model"))
    assert loaded.evaluate(n_episodes=2)["lengths"] == [9, 9]


class RecordObservations(gym.vector.VectorWrapper):
    """Keeps every observation the vector env returns (its reset and step rows)."""

    def __init__(self, env):
        super().__init__(env)
        self.seen = []

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.seen.append(obs)
        return obs, info

    def step(self, actions):
        result = self.env.step(actions)
        self.seen.append(result[0])
        return result


def test_normalization_keeps_statistics_per_vector_entry_and_saves_them(tmp_path):
    vec = RecordObservations(gym.vector.SyncVectorEnv([lambda: gym.make(DICT_ENV)] * 2))
    ppo = PPO(vec, seed=0, normalize_obs=True, **SMALL)
    ppo.learn(64)
    rms = ppo.normalizer.obs_rms
    assert sorted(rms) == ["goal.0", "position"]  # images, indices and bits pass through
    layout = ObservationLayout(DICT_SPACE)
    seen = [layout.convert(o) for o in vec.seen]
    for key in rms:
        values = np.concatenate([s[key] for s in seen]).astype(np.float64)
        np.testing.assert_allclose(rms[key].mean, values.mean(axis=0), atol=1e-6)  # count starts at 1e-4
        np.testing.assert_allclose(rms[key].var, values.var(axis=0), rtol=1e-4, atol=1e-6)
    batch = layout.convert(observations(5))
    out = ppo.normalizer.obs(batch)
    np.testing.assert_allclose(out["position"], np.clip((batch["position"] - rms["position"].mean)
                                                        / rms["position"].std, -10, 10), rtol=1e-5)
    assert out["grid"] is batch["grid"] and out["room"] is batch["room"]
    ppo.save(str(tmp_path / "m"))
    loaded = PPO.load(str(tmp_path / "m"))
    for key in rms:
        np.testing.assert_array_equal(loaded.normalizer.obs_rms[key].mean, rms[key].mean)
    meta = json.load(open(tmp_path / "m" / "ppo.json"))
    assert sorted(meta["normalizer"]["obs_rms"]) == ["goal.0", "position"]
    vec.close()


def test_recurrent_dict_policy_trains_predicts_with_state_and_reloads(tmp_path):
    ppo = PPO(DICT_ENV, seed=3, recurrent=True, timestep_size=4, hidden_layer_size=8, **SMALL)
    ppo.learn(64)
    obs = observations(3, seed=1)
    state = ppo.initial_state(3)
    actions, state = ppo.predict(obs, state=state, episode_start=np.ones(3), deterministic=True)
    assert actions.shape == (3,) and state.shape == (3, 16) and np.abs(state).sum() > 0
    ppo.save(str(tmp_path / "m"))
    loaded = PPO.load(str(tmp_path / "m"))
    again, again_state = loaded.predict(obs, state=ppo.initial_state(3), episode_start=np.ones(3), deterministic=True)
    np.testing.assert_array_equal(again, actions)
    np.testing.assert_allclose(again_state, state, atol=1e-6)


def test_a_dict_model_refuses_plain_observations_and_other_spaces(tmp_path):
    ppo = PPO(DICT_ENV, seed=0, **SMALL)
    with pytest.raises(ValueError, match="takes Dict observations"):
        ppo.predict(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="does not match"):
        ppo.check_env(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="net='cnn' needs image"):
        PPO(DICT_ENV, net="cnn", **SMALL)
    with pytest.raises(ValueError, match="not supported yet"):
        ppo.export(str(tmp_path / "p.onnx"))


# -- user-defined encoders -------------------------------------------------------------------

GRID = spaces.Dict({"image": spaces.Box(0, 10, (5, 5, 3), np.uint8), "direction": spaces.Discrete(4)})
gym.register("GridDict-v0", entry_point=lambda: SpaceEnv(copy.deepcopy(GRID), spaces.Discrete(3), episode_length=6))


@pytest.mark.cross_backend  # saved here, loaded on both others: python -m tests runs it once
def test_custom_encoder_trains_saves_and_acts_the_same_on_every_backend(tmp_path):
    ppo = PPO("GridDict-v0", seed=4, encoder=GridEncoder(filters=4, units=8), **SMALL)
    assert [tuple(w.shape) for w in ppo.model.encoder.weights] == [(2, 2, 3, 4), (4,), (68, 8), (8,)]
    ppo.learn(64)
    ppo.save(str(tmp_path / "model"))
    with zipfile.ZipFile(tmp_path / "model" / "model.keras") as z:
        config = json.loads(z.read("config.json"))["config"]
    assert config["encoder"]["registered_name"] == "tests>GridEncoder"
    assert config["encoder"]["config"]["filters"] == 4
    GRID.seed(5)
    rows = [GRID.sample() for _ in range(32)]
    obs = {k: np.stack([r[k] for r in rows]) for k in GRID}
    ours, _ = ppo.predict(obs, deterministic=True)
    np.savez(tmp_path / "obs.npz", **obs)
    script = ("import sys, numpy as np\nfrom unstable_ppo import PPO\nppo = PPO.load(sys.argv[1])\n"
              "d = np.load(sys.argv[2])\nnp.save(sys.argv[3], ppo.predict({k: d[k] for k in d.files}, deterministic=True)[0])\n")
    for other in OTHERS[keras.backend.backend()]:
        # The child never imports tests.helpers.encoders itself: loading imports the module the file names.
        env = dict(os.environ, KERAS_BACKEND=other, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
        out = str(tmp_path / f"{other}.npy")
        proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model"), str(tmp_path / "obs.npz"),
                               out], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        np.testing.assert_array_equal(np.load(out), ours)


def test_separate_policy_and_value_encoders_save_and_load(tmp_path):
    ppo = PPO("CartPole-v1", seed=0, policy_encoder=VectorEncoder(units=4), value_encoder=VectorEncoder(units=6),
              **SMALL)
    assert ppo.model.encoder.units == 4 and ppo.model.value_encoder.units == 6
    ppo.learn(64)
    ppo.save(str(tmp_path / "m"))
    loaded = PPO.load(str(tmp_path / "m"))
    assert loaded.model.value_encoder.units == 6
    for a, b in zip(ppo.model.get_weights(), loaded.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], ppo.predict(obs, deterministic=True)[0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(encoder=UnregisteredEncoder()), "UnregisteredEncoder .* is not registered"),
    (dict(encoder="dense"), "must be a Keras layer"),
    (dict(encoder=VectorEncoder(), value_encoder=VectorEncoder()), "either encoder="),
    (dict(policy_encoder=VectorEncoder()), "go together"),
    (dict(encoder=VectorEncoder(), net="cnn"), "net='cnn' does not apply"),
    (dict(encoder=GridEncoder()), "fails on this env's observations"),
], ids=["unregistered", "not-a-layer", "both", "half", "cnn", "wrong-input"])
def test_bad_encoders_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        PPO("CartPole-v1", **kwargs)
    assert "\n" not in str(error.value)


def test_loading_an_encoder_whose_module_is_gone_is_a_one_line_error(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "my_encoders.py").write_text(
        "import keras\n\n@keras.saving.register_keras_serializable(package='mine')\n"
        "class Mine(keras.layers.Layer):\n    def __init__(self, **kw):\n        super().__init__(**kw)\n"
        "        self.d = keras.layers.Dense(3)\n    def call(self, x):\n        return self.d(x)\n")
    script = ("import sys\nfrom my_encoders import Mine\nfrom unstable_ppo import PPO\n"
              "PPO('CartPole-v1', encoder=Mine(), num_envs=1, num_steps=8, batch_size=8).save(sys.argv[1])\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=f"{ROOT}{os.pathsep}{package}")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with pytest.raises(ValueError, match="encoder mine>Mine comes from module my_encoders, which cannot be imported"
                       ) as error:
        PPO.load(str(tmp_path / "m"))
    assert "\n" not in str(error.value)


@pytest.mark.backend_independent  # the flags that name an encoder; training it runs on every backend above
def test_runner_trains_a_dict_env_and_an_encoder_from_flags(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    common = ["--num_envs=2", "--num_steps=16", "--batch_size=16", "--num_episodes=2", "--eval_episodes=2",
              "--verbose=0", f"--backend={keras.backend.backend()}"]
    run = subprocess.run([sys.executable, "-m", "unstable_ppo.run", f"--env_id={DICT_ENV}", "--normalize_obs",
                          f"--logdir={tmp_path}/dict", *common], env=env, capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.load(open(tmp_path / "dict" / "metrics.json"))["latest"]["mean_return"] >= 0
    # The checkpoint keeps the id as given, module and all, so play rebuilds the env from it alone.
    assert json.load(open(tmp_path / "dict" / "model" / "latest" / "ppo.json"))["env_id"] == DICT_ENV
    play = subprocess.run([sys.executable, "-m", "unstable_ppo.play", f"--model_dir={tmp_path}/dict/model/latest",
                           "--episodes=2"], env=dict(env, KERAS_BACKEND=keras.backend.backend()),
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert play.returncode == 0, play.stderr[-3000:]
    assert "mean" in play.stdout.lower(), play.stdout
    run = subprocess.run([sys.executable, "-m", "unstable_ppo.run", "--env_id=CartPole-v1", "--noenv_defaults",
                          "--encoder=tests.helpers.encoders:VectorEncoder", '--encoder_kwargs={"units": 5}',
                          f"--logdir={tmp_path}/enc", *common], env=env, capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = PPO.load(str(tmp_path / "enc" / "model" / "latest"))
    assert type(loaded.model.encoder).__name__ == "VectorEncoder" and loaded.model.encoder.units == 5


@pytest.mark.parametrize("flags, message", [
    (["--encoder=tests.helpers.encoders"], "expected module:ClassName"),
    (["--encoder=tests.helpers.encoders:VectorEncoder", "--encoder_kwargs=[1]"], "expected a JSON object"),
    (["--encoder=tests.helpers.encoders:VectorEncoder", "--encoder_kwargs={units: 3}"], "not JSON"),
    (["--encoder_kwargs={}"], "--encoder_kwargs needs --encoder"),
    (["--encoder=no_such_module_xyz:Enc"], "cannot import module 'no_such_module_xyz'"),
    (["--encoder=tests.helpers.encoders:Missing"], "has no class 'Missing'"),
    (["--encoder=tests.helpers.encoders:VectorEncoder", '--encoder_kwargs={"size": 3}'], "VectorEncoder"),
    (["--encoder=tests.helpers.encoders:UnregisteredEncoder"], "is not registered"),
], ids=["no-colon", "not-object", "not-json", "kwargs-alone", "no-module", "no-class", "bad-kwargs", "unregistered"])
def test_bad_encoder_flags_are_one_line_errors(tmp_path, flags, message):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-m", "unstable_ppo.run", "--env_id=CartPole-v1", "--num_episodes=1",
                          f"--logdir={tmp_path}/r", "--verbose=0", f"--backend={keras.backend.backend()}", *flags],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode != 0
    lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
    assert message in lines[-1] and lines[-1].startswith("error"), run.stderr[-2000:]
    assert len(lines) == 1, run.stderr[-2000:]


def test_a_model_with_a_custom_encoder_exports_to_onnx(tmp_path):
    """The encoder is plain Keras ops, so it traces into the exported graph like the built-in layers."""
    ort = pytest.importorskip("onnxruntime")
    ppo = PPO("CartPole-v1", seed=0, encoder=VectorEncoder(units=8), **SMALL)
    ppo.learn(64)
    ppo.export(str(tmp_path / "policy.onnx"))
    session = ort.InferenceSession(str(tmp_path / "policy.onnx"))
    obs = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    actions = session.run(None, {session.get_inputs()[0].name: obs})[0]
    np.testing.assert_array_equal(actions.ravel(), ppo.predict(obs, deterministic=True)[0])
