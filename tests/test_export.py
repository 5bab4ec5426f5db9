"""Exported policies (ONNX, TF SavedModel, LiteRT) act as `PPO.predict(deterministic=True)` does.

The export always builds a TensorFlow graph. On the TensorFlow backend `PPO.export` runs in this
process; on JAX and PyTorch the models built here are saved and exported in one TensorFlow child
process (what `PPO.export` does per call, batched to keep the file fast), and the cross-backend
test goes through `PPO.export` and the command line themselves.
"""

import json
import os
import subprocess
import sys
import warnings

import gymnasium as gym
import keras
import numpy as np
import pytest
from gymnasium import spaces

from tests.helpers.envs import SpaceEnv
from tests.helpers.runner import ROOT, child_env
from tests.helpers.settings import SMALL_2X16
from unstable_ppo import PPO
from unstable_ppo.checkpoint import save_checkpoint
from unstable_ppo.spaces import space_to_json

BACKEND = keras.backend.backend()
ARTIFACT = {"onnx": "policy.onnx", "tf_saved_model": "saved_model", "litert": "policy.tflite"}
N_OBS = 1000
N_ENVS, N_STEPS = 20, 50  # recurrent: 1,000 observations, the state carried across 50 steps

Box = spaces.Box
VECTOR = Box(-1.0, 1.0, (3,), np.float32)
# name: (observation space, action space, PPO settings)
CASES = {
    "discrete": (VECTOR, spaces.Discrete(3, start=1), {}),
    "multidiscrete": (VECTOR, spaces.MultiDiscrete([2, 3, 4], start=[1, -1, 0]), {}),
    "multibinary_discrete_obs": (spaces.Discrete(5, start=2), spaces.MultiBinary(3), {}),
    # Bounds the mean crosses on one axis; observations far out of the statistics' range, so ±10 clips.
    "box_normalize_obs": (Box(-5.0, 5.0, (3,), np.float32), Box(np.array([-0.02, -1.0], np.float32),
                          np.array([0.02, 1.0], np.float32)), {"normalize_obs": True}),
    "box_nn_std": (VECTOR, Box(-1.0, 1.0, (2,), np.float32), {"nn_std": True}),
    "nature_cnn": (Box(0, 255, (4, 36, 36), np.uint8), spaces.Discrete(4), {}),  # channels first, as Atari's stack
    "recurrent": (VECTOR, spaces.Discrete(3), {"recurrent": True}),
    "recurrent_box_own_lstms": (VECTOR, Box(-1.0, 1.0, (2,), np.float32),
                                dict(recurrent=True, shared_lstm=False, shared_net=False, lstm_head_sizes=(8,))),
    "recurrent_cnn": (Box(0, 255, (36, 36, 2), np.uint8), spaces.MultiBinary(2), {"recurrent": True}),
}
# ONNX on every case; SavedModel and LiteRT on a subset that keeps a Nature CNN and a recurrent model.
FORMAT_CASES = [(case, "onnx") for case in CASES] + [
    (case, "tf_saved_model") for case in ("discrete", "box_normalize_obs", "nature_cnn", "recurrent_box_own_lstms")
] + [(case, "litert") for case in ("multidiscrete", "box_nn_std", "nature_cnn", "recurrent")]

EXPORT_ALL = """
import json, sys
from unstable_ppo.ppo import PPO
from unstable_ppo.export import write
for model_dir, output, format in json.loads(sys.argv[1]):
    write(PPO.load(model_dir), output, format)
"""


def make_ppo(case, seed=0):
    """A tiny untrained PPO whose policy head is scaled up, so actions differ from one observation to the next."""
    observation_space, action_space, settings = CASES[case]
    settings = dict(settings)
    if settings.get("recurrent"):
        settings.update(timestep_size=8, hidden_layer_size=8)
    ppo = PPO(SpaceEnv(observation_space, action_space), seed=seed, hidden_sizes=(16,),
              **(SMALL_2X16 | {"num_envs": 1}), **settings)
    head = ppo.model.policy_head
    head.kernel.assign(keras.ops.convert_to_numpy(head.kernel) * 300.0)
    head.bias.assign(np.linspace(-0.5, 0.5, head.bias.shape[0]).astype(np.float32))
    if ppo.normalizer.obs_rms is not None:
        ppo.normalizer.obs_rms.mean = np.array([1.0, -2.0, 0.5])
        ppo.normalizer.obs_rms.var = np.array([0.04, 9.0, 0.25])
    return ppo


def observations(space, n, seed):
    space.seed(seed)
    return np.stack([space.sample() for _ in range(n)])


def reference(ppo, seed=1):
    """Observations and what `predict` does with them; recurrent: 50 steps of 20 envs, starts in between."""
    rng = np.random.default_rng(seed)
    if not ppo.recurrent:
        obs = observations(ppo.observation_space, N_OBS, seed)
        return {"obs": obs, "actions": ppo.predict(obs, deterministic=True)[0]}
    obs = observations(ppo.observation_space, N_ENVS * N_STEPS, seed).reshape(N_STEPS, N_ENVS,
                                                                              *ppo.observation_space.shape)
    starts = (rng.random((N_STEPS, N_ENVS)) < 0.1).astype(np.float32)
    starts[0] = 1.0
    state = rng.normal(size=(N_ENVS, ppo.model.state_size)).astype(np.float32)  # zeroed by the first starts
    actions = []
    for t in range(N_STEPS):
        action, state = ppo.predict(obs[t], state, starts[t], deterministic=True)
        actions.append(action)
    return {"obs": obs, "starts": starts, "actions": np.stack(actions), "final_state": state}


class Runner:
    """An exported artifact, called through its own runtime with the names `policy.json` gives."""

    def __init__(self, path, format):
        json_path = os.path.join(path, "policy.json") if format == "tf_saved_model" else os.path.join(
            os.path.dirname(path), "policy.json")
        with open(json_path) as f:
            self.description = json.load(f)
        assert self.description["format"] == format
        self.inputs = {spec["name"]: spec for spec in self.description["inputs"]}
        self.outputs = [spec["name"] for spec in self.description["outputs"]]
        if format == "onnx":
            import onnxruntime

            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            assert {i.name for i in session.get_inputs()} == set(self.inputs)
            assert [o.name for o in session.get_outputs()] == self.outputs
            assert {value.shape[0] for value in session.get_inputs() + session.get_outputs()} == {"batch"}
            self.call = lambda feed: dict(zip(self.outputs, session.run(self.outputs, feed)))
        elif format == "tf_saved_model":
            import tensorflow as tf

            fn = tf.saved_model.load(path).signatures[self.description["signature"]]
            self.call = lambda feed: {k: v.numpy() for k, v in fn(**tf.nest.map_structure(tf.constant, feed)).items()}
        else:
            import tensorflow as tf

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation in favour of ai_edge_litert
                interpreter = tf.lite.Interpreter(model_path=path)
            runner = interpreter.get_signature_runner(self.description["signature"])
            self.call = lambda feed: runner(**feed)

    def __call__(self, obs, state=None, episode_start=None):
        feed = {"obs": np.asarray(obs, self.inputs["obs"]["dtype"])}
        if state is not None:
            feed.update(state=np.asarray(state, np.float32), episode_start=np.asarray(episode_start, np.float32))
        out = self.call(feed)
        for spec in self.description["outputs"]:
            assert str(out[spec["name"]].dtype) == spec["dtype"], spec
        return out


def assert_same_actions(got, expected, space):
    assert got.dtype == expected.dtype and got.shape == expected.shape, (got.dtype, got.shape, expected.dtype,
                                                                         expected.shape)
    if isinstance(space, spaces.Box):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    else:
        np.testing.assert_array_equal(got, expected)


def check_runner(runner, ppo, ref):
    """The artifact against `predict`'s actions (and the recurrent state carried alongside)."""
    if not ppo.recurrent:
        assert_same_actions(runner(ref["obs"])["action"], ref["actions"], ppo.action_space)
        single = runner(ref["obs"][:1])["action"]  # a batch of one: the batch axis is dynamic
        assert_same_actions(single[0], ref["actions"][0], ppo.action_space)
        return
    state = np.ones((N_ENVS, ppo.model.state_size), np.float32)  # zeroed by the first starts, as predict's was
    for t in range(N_STEPS):
        out = runner(ref["obs"][t], state, ref["starts"][t])
        assert_same_actions(out["action"], ref["actions"][t], ppo.action_space)
        state = out["next_state"]
    np.testing.assert_allclose(state, ref["final_state"], rtol=0, atol=1e-5)


def export_all(ppos, root):
    """`{name: {format: path}}`: each `(ppo, formats)` of `ppos` exported under `root/name/format/`.

    On TensorFlow through `PPO.export`; else saved and exported in one TensorFlow child process, which
    is what `PPO.export` does for each call (the cross-backend test below takes that route itself).
    """
    paths, jobs = {}, []
    for name, (ppo, formats) in ppos.items():
        paths[name] = {}
        for format in formats:
            os.makedirs(root / name / format)
            path = paths[name][format] = str(root / name / format / ARTIFACT[format])
            if BACKEND == "tensorflow":
                ppo.export(path, format)
            else:
                jobs.append((str(root / name / "model"), path, format))
        if BACKEND != "tensorflow":
            ppo.save(root / name / "model")
    if jobs:
        proc = subprocess.run([sys.executable, "-c", EXPORT_ALL, json.dumps(jobs)], capture_output=True, text=True,
                              env=child_env(KERAS_BACKEND="tensorflow"), timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return paths


def cartpole_ppo():
    ppo = PPO("CartPole-v1", seed=3, **SMALL_2X16)
    ppo.learn(256)
    head = ppo.model.policy_head  # sharper, so that episodes differ in length
    head.kernel.assign(keras.ops.convert_to_numpy(head.kernel) * 300.0)
    return ppo


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{name: (ppo, reference or None, {format: artifact path})}: the CASES in the formats FORMAT_CASES
    names, and an ONNX CartPole and Breakout policy."""
    ppos, references = {}, {}
    for case in CASES:
        keras.backend.clear_session()
        ppo = make_ppo(case)
        ppos[case] = (ppo, [format for c, format in FORMAT_CASES if c == case])
        references[case] = reference(ppo)
    ppos["CartPole-v1"] = (cartpole_ppo(), ["onnx"])
    ppos["BreakoutNoFrameskip-v4"] = (PPO("BreakoutNoFrameskip-v4", seed=0, num_envs=1, num_steps=16, batch_size=16),
                                      ["onnx"])
    paths = export_all(ppos, tmp_path_factory.mktemp("export"))
    return {name: (ppo, references.get(name), paths[name]) for name, (ppo, _) in ppos.items()}


@pytest.mark.parametrize("case, format", FORMAT_CASES)
def test_exported_policy_acts_as_predict(exported, case, format):
    ppo, ref, paths = exported[case]
    if not isinstance(ppo.action_space, spaces.Box):  # the scaled-up head makes actions vary
        assert len(np.unique(ref["actions"].reshape(-1, *ppo.action_space.shape or (1,)), axis=0)) > 1
    runner = Runner(paths[format], format)
    check_runner(runner, ppo, ref)
    description = runner.description
    assert description["observation_space"] == json.loads(json.dumps(space_to_json(ppo.observation_space)))
    assert description["action_space"] == json.loads(json.dumps(space_to_json(ppo.action_space)))
    assert description["recurrent"] == ppo.recurrent and description["state_size"] == ppo.model.state_size
    assert [spec["shape"][0] for spec in description["inputs"] + description["outputs"]] == [None] * (
        len(description["inputs"]) + len(description["outputs"]))


def test_observation_normalizer_is_folded_into_the_graph(exported):
    ppo, ref, paths = exported["box_normalize_obs"]
    normalized = ppo.normalizer.obs(ref["obs"])
    assert (np.abs(normalized) == 10.0).any() and (np.abs(normalized) < 10.0).any()  # clipping and not
    # Without the statistics the same network acts differently: the export must have used them.
    rms, ppo.normalizer.obs_rms = ppo.normalizer.obs_rms, None
    try:
        unnormalized, _ = ppo.predict(ref["obs"], deterministic=True)
    finally:
        ppo.normalizer.obs_rms = rms
    got = Runner(paths["onnx"], "onnx")(ref["obs"])["action"]
    assert np.abs(got - unnormalized).max() > 1e-3
    np.testing.assert_allclose(got, ref["actions"], rtol=0, atol=1e-5)


def _load_example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("onnx_play", os.path.join(ROOT, "examples", "onnx_play.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exported_cartpole_plays_as_evaluate(exported):
    ppo, _, paths = exported["CartPole-v1"]
    returns, lengths = _load_example().play(paths["onnx"], "CartPole-v1", episodes=4, seed=11)
    expected = ppo.evaluate(gym.make("CartPole-v1"), n_episodes=4, seed=11)
    assert returns == expected["returns"] and lengths == expected["lengths"]
    assert len(set(lengths)) > 1


def test_exported_breakout_plays_as_evaluate(exported):
    """The example's Atari pipeline is the evaluation's: same frames, same actions, same score."""
    ppo, _, paths = exported["BreakoutNoFrameskip-v4"]
    returns, lengths = _load_example().play(paths["onnx"], "BreakoutNoFrameskip-v4", episodes=1, seed=4,
                                            max_steps=100)
    expected = ppo.evaluate(n_episodes=1, seed=4, max_episode_steps=100)
    assert returns == expected["returns"] and lengths == expected["lengths"]


def test_a_model_trained_here_exports_through_the_api_and_the_command_line(tmp_path):
    """On JAX and PyTorch both go through a TensorFlow child process, from the backend-neutral saved model."""
    ppo = PPO("Pendulum-v1", seed=2, normalize_obs=True, **SMALL_2X16)
    ppo.learn(128)
    assert ppo.normalizer.obs_rms.count > 100
    obs = observations(ppo.observation_space, N_OBS, 5)
    expected, _ = ppo.predict(obs, deterministic=True)
    os.makedirs(tmp_path / "api")
    (tmp_path / "api" / "policy.onnx").write_text("an earlier export")
    ppo.export(tmp_path / "api" / "policy.onnx", overwrite=True)
    assert_same_actions(Runner(str(tmp_path / "api" / "policy.onnx"), "onnx")(obs)["action"], expected,
                        ppo.action_space)
    save_checkpoint(ppo, tmp_path / "run" / "model", "best")
    proc = subprocess.run([sys.executable, "-m", "unstable_ppo.export", f"--model_dir={tmp_path / 'run' / 'model'}",
                           "--best", "--format=tf_saved_model", f"--output={tmp_path / 'sm'}"],
                          capture_output=True, text=True, env=child_env(KERAS_BACKEND=BACKEND), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"wrote {tmp_path / 'sm'}")
    assert_same_actions(Runner(str(tmp_path / "sm"), "tf_saved_model")(obs)["action"], expected, ppo.action_space)


# -- bad input: one line, exit code 2, and no Keras imported before the flags are checked ---------

PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print("IMPORTED=" + ",".join(m for m in ("keras", "tensorflow", "jax", "torch")
                                                      if m in sys.modules), file=sys.stderr))
for name in sys.argv[1].split(","):
    if name:
        sys.modules[name] = None  # as if the package were not installed
sys.argv = ["unstable_ppo.export"] + sys.argv[2:]
runpy.run_module("unstable_ppo.export", run_name="__main__")
"""


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model"
    PPO("CartPole-v1", **SMALL_2X16).save(path)
    return path


@pytest.mark.parametrize("case", ["unknown format", "missing model", "no tf2onnx", "output exists"])
def test_bad_input_is_one_line(tmp_path, saved_model_dir, case):
    (tmp_path / "exists.onnx").write_text("")
    args = {
        "unknown format": ("", f"--model_dir={saved_model_dir}", "--format=pickle", f"--output={tmp_path}/p"),
        "missing model": ("", f"--model_dir={tmp_path}/nothing", f"--output={tmp_path}/p.onnx"),
        "no tf2onnx": ("tf2onnx", f"--model_dir={saved_model_dir}", f"--output={tmp_path}/p.onnx"),
        "output exists": ("", f"--model_dir={saved_model_dir}", f"--output={tmp_path}/exists.onnx"),
    }[case]
    message = {
        "unknown format": "error: unknown format 'pickle': use onnx, tf_saved_model or litert",
        "missing model": f"error: not an unstable_ppo model directory: {tmp_path}/nothing does not exist",
        "no tf2onnx": "error: format onnx needs the tf2onnx package, which is not installed: "
                      'pip install -e ".[export]"',
        "output exists": f"error: {tmp_path}/exists.onnx already exists: pass --overwrite",
    }[case]
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300,
                          env=child_env(KERAS_BACKEND=BACKEND))
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 2, proc.stderr[-3000:]
    assert lines[0].startswith(message), lines[0]
    assert lines[1] == "IMPORTED=", proc.stderr  # neither Keras nor any backend
    assert not os.path.exists(tmp_path / "p.onnx") and (tmp_path / "exists.onnx").read_text() == ""


def test_bad_input_through_the_api(tmp_path):
    ppo = PPO("CartPole-v1", **SMALL_2X16)
    with pytest.raises(ValueError, match="unknown format 'pt'"):
        ppo.export(tmp_path / "p", format="pt")
    (tmp_path / "p.onnx").write_text("")
    with pytest.raises(ValueError, match="already exists"):
        ppo.export(tmp_path / "p.onnx")
    with pytest.raises(ValueError, match="is not a directory"):
        ppo.export(tmp_path / "p.onnx" / "q.onnx")
    assert os.listdir(tmp_path) == ["p.onnx"]
    ppo.export(tmp_path / "new" / "dir" / "p.onnx")  # missing directories are made, as `mkdir -p`
    assert sorted(os.listdir(tmp_path / "new" / "dir")) == ["p.onnx", "policy.json"]
