"""Bad files: truncated, corrupt, foreign or too new models, and models that do not fit the env.

Each is a one-line `ValueError`/`FileNotFoundError` naming the file from `PPO.load`, and
`error: <one line>` with exit code 2 from `play` and `run --resume`. Loading runs no code
from the files: Keras's safe mode, JSON metadata, no pickle.
"""

import json
import marshal
import os
import pickle
import re
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from unstable_ppo import PPO
from unstable_ppo.checkpoint import LATEST, save_checkpoint
from unstable_ppo.checkpoint import FORMAT_VERSION, META_FILE, MODEL_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# normalize_obs: the saved model carries normalizer statistics too.
TINY = dict(num_envs=1, num_steps=16, num_epochs=1, batch_size=16, normalize_obs=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny trained CartPole model, saved once for the module; copy it before damaging it."""
    path = tmp_path_factory.mktemp("saved") / "m"
    ppo = PPO("CartPole-v1", seed=0, **TINY)
    ppo.learn(16)
    ppo.save(path)
    return path


@pytest.fixture
def model(saved, tmp_path):
    """A fresh copy of the saved model, to damage."""
    return shutil.copytree(saved, tmp_path / "m")


def load_error(path, error=ValueError, **kwargs):
    """`PPO.load`'s error message, checked to be one line."""
    with pytest.raises(error) as info:
        PPO.load(path, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


# -- model.keras ------------------------------------------------------------------


def _truncate(path, tmp_path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _zero_bytes(path, tmp_path):
    path.write_bytes(b"")


def _random_bytes(path, tmp_path):
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _foreign_zip(path, tmp_path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not a model")


def _no_weights(path, tmp_path):
    data = path.read_bytes()
    (tmp_path / "orig.keras").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "orig.keras") as src, zipfile.ZipFile(path, "w") as z:
        for name in src.namelist():
            if not name.startswith("model.weights"):
                z.writestr(name, src.read(name))


def _bad_config_json(path, tmp_path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", "{ not json")
        z.writestr("metadata.json", json.dumps({"keras_version": keras.__version__}))


def _sequential(path, tmp_path):
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(path)


BAD_MODEL_FILES = {
    "truncated": (_truncate, "not a .keras \\(zip\\) archive, or a truncated one"),
    "zero_bytes": (_zero_bytes, "not a .keras \\(zip\\) archive"),
    "random_bytes": (_random_bytes, "not a .keras \\(zip\\) archive"),
    "foreign_zip": (_foreign_zip, "corrupt or foreign model file .*config.json"),
    "no_weights": (_no_weights, "corrupt or foreign model file .*weights"),
    "bad_config_json": (_bad_config_json, "corrupt or foreign model file"),
    "sequential": (_sequential, "holds a Sequential, not an unstable_ppo ActorCritic"),
}


@pytest.mark.parametrize("case", list(BAD_MODEL_FILES))
def test_bad_model_file(model, tmp_path, case):
    damage, problem = BAD_MODEL_FILES[case]
    damage(model / MODEL_FILE, tmp_path)
    message = load_error(model)
    assert str(model / MODEL_FILE) in message
    assert re.search(problem, message), message


def test_lambda_layer_is_refused_without_running_its_code(model, tmp_path):
    """A .keras whose Lambda would write a marker file: safe mode refuses it before it runs."""
    marker = tmp_path / "marker"
    function = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")  # a constant path, no closure
    keras.Sequential([keras.Input((4,)), keras.layers.Lambda(function)]).save(model / MODEL_FILE)
    marker.unlink(missing_ok=True)  # building the model ran it once
    message = load_error(model)
    assert str(model / MODEL_FILE) in message and "Lambda" in message
    assert not marker.exists()
    # The payload is live: Keras outside safe mode does run it while loading.
    keras.models.load_model(model / MODEL_FILE, safe_mode=False)
    assert marker.exists()


def test_config_naming_a_non_keras_function_runs_nothing(model, tmp_path):
    marker = tmp_path / "marker"
    config = {"module": "os", "class_name": "system", "registered_name": "system",
              "config": {"command": f"touch {marker}"}}
    with zipfile.ZipFile(model / MODEL_FILE, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", json.dumps({"keras_version": keras.__version__}))
    message = load_error(model)
    assert "corrupt or foreign model file" in message and str(model / MODEL_FILE) in message
    assert not marker.exists()


# -- ppo.json ---------------------------------------------------------------------


def _edit(**changes):
    """A metadata damage: replace (or, with None as the value, delete) top-level keys."""

    def damage(meta, text):
        meta = dict(meta)
        for key, value in changes.items():
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
        return json.dumps(meta)

    return damage


def _edit_hp(**changes):
    return lambda meta, text: json.dumps(dict(meta, hyperparameters=dict(meta["hyperparameters"], **changes)))


def _edit_normalizer(**changes):
    def damage(meta, text):
        normalizer = dict(meta["normalizer"])
        normalizer["obs_rms"] = dict(normalizer["obs_rms"], **changes)
        return json.dumps(dict(meta, normalizer=normalizer))

    return damage


BAD_METADATA = {
    "truncated": (lambda meta, text: text[: len(text) // 2], "corrupt model metadata"),
    "empty": (lambda meta, text: "", "corrupt model metadata"),
    "binary": (lambda meta, text: b"\xff\xfe\x00garbage", "corrupt model metadata"),
    "deeply_nested": (lambda meta, text: "[" * 100_000, "corrupt model metadata"),
    "not_a_dict": (lambda meta, text: json.dumps([meta]), "not an unstable_ppo metadata file"),
    "wrong_format": (_edit(format="stable_baselines3"), "not an unstable_ppo metadata file"),
    "newer_format": (_edit(format_version=FORMAT_VERSION + 1),
                     f"format version {FORMAT_VERSION + 1}, newer than .* reads \\({FORMAT_VERSION}\\): upgrade"),
    "format_version_string": (_edit(format_version="2"), "format_version '2' is not an integer"),
    "no_hyperparameters": (_edit(hyperparameters=None), "'hyperparameters' is missing"),
    "no_observation_space": (_edit(observation_space=None), "'observation_space' is missing"),
    "no_action_space": (_edit(action_space=None), "'action_space' is missing"),
    "hyperparameters_list": (_edit(hyperparameters=[1, 2]), "bad hyperparameters: expected an object"),
    "unknown_hyperparameter": (_edit_hp(learning_speed=3), "bad hyperparameters: unknown PPO argument.*learning_speed"),
    "negative_lr": (_edit_hp(lr=-1.0), "bad hyperparameters: lr must be > 0"),
    "lr_string": (_edit_hp(lr="fast"), "bad hyperparameters"),
    "hidden_sizes_int": (_edit_hp(hidden_sizes=64), "bad hyperparameters"),
    "unknown_space_type": (_edit(observation_space={"type": "Graph"}), "bad observation_space: unknown space type"),
    "space_without_shape": (_edit(observation_space={"type": "Box", "dtype": "float32"}),
                            "bad observation_space: 'shape' is missing"),
    "space_a_string": (_edit(action_space="Discrete(2)"), "bad action_space: expected an object"),
    "space_bad_dtype": (_edit(observation_space={"type": "Box", "shape": [4], "dtype": "no_such_dtype",
                                                  "low": {"fill": 0}, "high": {"fill": 1}}),
                        "bad observation_space"),
    "space_wrong_size": (_edit(observation_space={"type": "Box", "shape": [4], "dtype": "float32",
                                                   "low": {"values": [0, 1]}, "high": {"fill": 1}}),
                         "bad observation_space"),
    "space_not_the_models": (_edit(action_space={"type": "Discrete", "n": 3, "start": 0}),
                             "bad action_space: Discrete\\(3\\) does not match the Discrete\\(2\\) of .*model.keras"),
    "seed_string": (_edit(seed="zero"), "bad seed"),
    "num_timesteps_string": (_edit(num_timesteps="many"), "bad num_timesteps"),
    "num_updates_negative": (_edit(num_updates=-3), "bad num_updates"),
    "run_a_list": (_edit(run=[1]), "bad run"),
    "kl_adaptation_a_string": (_edit(kl_adaptation="beta"), "bad kl_adaptation"),
    "rng_state_a_string": (_edit(rng_state="seed 0"), "bad rng_state: expected an object"),
    "rng_state_garbage": (_edit(rng_state={"bit_generator": "PCG64", "state": {"state": "x", "inc": 1},
                                           "has_uint32": 0, "uinteger": 0}), "bad rng_state"),
    "rng_state_overflow": (_edit(rng_state={"bit_generator": "PCG64", "state": {"state": -1, "inc": 1},
                                            "has_uint32": 0, "uinteger": 0}), "bad rng_state"),
    "normalizer_wrong_shape": (_edit_normalizer(mean=[0.0, 0.0, 0.0]), "bad normalizer: .*shape \\(3,\\)"),
    "normalizer_nan": (_edit_normalizer(var=[float("nan")] * 4), "bad normalizer: .*not finite"),
    "normalizer_missing": (_edit(normalizer=None), "bad normalizer: missing"),
    "normalizer_a_list": (_edit(normalizer=[0.0]), "bad normalizer: expected an object"),
    "normalizer_without_obs_rms": (lambda meta, text: json.dumps(dict(meta, normalizer={"returns": [0.0]})),
                                   "bad normalizer: obs_rms is missing"),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_bad_metadata(model, case):
    damage, problem = BAD_METADATA[case]
    meta_path = model / META_FILE
    text = meta_path.read_text()
    damaged = damage(json.loads(text), text)
    (meta_path.write_bytes if isinstance(damaged, bytes) else meta_path.write_text)(damaged)
    message = load_error(model)
    assert str(model) in message
    assert re.search(problem, message), message


def test_rng_state_of_another_bit_generator_is_ignored(model):
    """Not damage: a state numpy's default generator cannot take, so the fresh generator is kept."""
    meta = json.loads((model / META_FILE).read_text())
    meta["rng_state"] = {"bit_generator": "MT19937", "state": {"key": [0] * 624, "pos": 0}}
    (model / META_FILE).write_text(json.dumps(meta))
    assert PPO.load(model).num_updates == 1


# -- directories ------------------------------------------------------------------


def test_empty_directory(tmp_path):
    assert "not an unstable_ppo model directory" in load_error(tmp_path, FileNotFoundError)


def test_nonexistent_path(tmp_path):
    message = load_error(tmp_path / "nothing", FileNotFoundError)
    assert f"{tmp_path / 'nothing'} does not exist" in message


def test_a_file_instead_of_a_directory(model):
    message = load_error(model / MODEL_FILE)
    assert f"{model / MODEL_FILE} is a file, not a model directory" in message


@pytest.mark.parametrize("missing", [MODEL_FILE, META_FILE])
def test_directory_missing_one_file(model, missing):
    (model / missing).unlink()
    message = load_error(model, FileNotFoundError)
    assert f"{model / missing} is missing" in message


def _run_with_dangling_link(saved, tmp_path, name):
    model_root = tmp_path / "run" / "model"
    model_root.mkdir(parents=True)
    shutil.copytree(saved, model_root / ".gone")
    os.symlink(".gone", model_root / name)
    shutil.rmtree(model_root / ".gone")
    return model_root


@pytest.mark.parametrize("name", [LATEST, "best"])
def test_dangling_latest_or_best_link(saved, tmp_path, name):
    model_root = _run_with_dangling_link(saved, tmp_path, name)
    message = load_error(model_root, FileNotFoundError, best=name == "best")
    assert f"broken checkpoint link {model_root / name}: it points to .gone, which does not exist" in message


# -- spaces that do not fit the env -----------------------------------------------


def test_model_on_an_env_with_other_spaces(model):
    message = load_error(model, env="Pendulum-v1")
    assert f"cannot use the model in {model} on this env" in message and "does not match" in message


# -- no code, no pickle -----------------------------------------------------------


def test_loading_uses_no_pickle_or_marshal(model, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("loading a model must not unpickle or unmarshal anything")

    class Refused(pickle.Unpickler):
        def __init__(self, *args, **kwargs):
            refuse()

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", Refused)
    monkeypatch.setattr(marshal, "loads", refuse)
    monkeypatch.setattr(np, "load", refuse)
    loaded = PPO.load(model)
    meta = json.loads((model / META_FILE).read_text())
    # The sampling RNG and the normalizer come from the JSON.
    assert loaded.rng.bit_generator.state == meta["rng_state"]
    np.testing.assert_array_equal(loaded.normalizer.obs_rms.mean, meta["normalizer"]["obs_rms"]["mean"])
    np.testing.assert_array_equal(loaded.normalizer.obs_rms.var, meta["normalizer"]["obs_rms"]["var"])
    assert loaded.normalizer.obs_rms.count == meta["normalizer"]["obs_rms"]["count"]
    assert loaded.predict(np.zeros(4, np.float32))[0] in (0, 1)


# -- the command-line tools: exit code 2 and one line -----------------------------


def cli(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-3000:]
    return last


def test_play_truncated_model_file(model):
    _truncate(model / MODEL_FILE, None)
    last = cli("unstable_ppo.play", f"--model_dir={model}", "--episodes=1")
    assert f"corrupt or foreign model file {model / MODEL_FILE}" in last


def test_play_newer_format_version(model):
    meta = json.loads((model / META_FILE).read_text())
    (model / META_FILE).write_text(json.dumps(dict(meta, format_version=FORMAT_VERSION + 1)))
    last = cli("unstable_ppo.play", f"--model_dir={model}", "--episodes=1")
    assert "newer than this unstable_ppo" in last and "upgrade unstable_ppo" in last


def test_play_on_an_env_with_other_spaces(model):
    last = cli("unstable_ppo.play", f"--model_dir={model}", "--env_id=Pendulum-v1", "--episodes=1")
    assert "observation space" in last and "does not match" in last


def _run_dir(tmp_path):
    """A run directory with a `latest` checkpoint of the tiny model, as `run` leaves it."""
    ppo = PPO("CartPole-v1", seed=0, **TINY)
    logdir = tmp_path / "run"
    flags = dict(seed=0, num_envs=1, num_steps=16, num_epochs=1, batch_size=16, normalize_obs=True)
    save_checkpoint(ppo, str(logdir / "model"), LATEST, {"flags": flags, "evaluations": []})
    return logdir, logdir / "model" / LATEST


RESUME_ARGS = ("--resume", "--env_id=CartPole-v1", "--num_episodes=2", "--eval_episodes=1", "--verbose=0")


def test_resume_with_corrupt_metadata(tmp_path):
    logdir, latest = _run_dir(tmp_path)
    text = (latest / META_FILE).read_text()
    (latest / META_FILE).write_text(text[: len(text) // 2])
    last = cli("unstable_ppo.run", *RESUME_ARGS, f"--logdir={logdir}")
    assert f"--resume: corrupt model metadata {latest / META_FILE}: " in last
    assert not (logdir / "training.log").exists()


def test_resume_with_corrupt_model_file(tmp_path):
    logdir, latest = _run_dir(tmp_path)
    _random_bytes(latest / MODEL_FILE, None)
    last = cli("unstable_ppo.run", *RESUME_ARGS, f"--logdir={logdir}")
    assert f"corrupt or foreign model file {latest / MODEL_FILE}" in last
    assert not (logdir / "training.log").exists()


def test_resume_with_a_dangling_latest_link(saved, tmp_path):
    model_root = _run_with_dangling_link(saved, tmp_path, LATEST)
    last = cli("unstable_ppo.run", *RESUME_ARGS, f"--logdir={model_root.parent}")
    assert f"--resume: broken checkpoint link {model_root / LATEST}: it points to .gone" in last
