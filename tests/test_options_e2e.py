"""The algorithm options taken from the TF1 reference code, end to end.

Training runs (early stopping and beta, the learning-rate multiplier, the normalizer
through save/load, the clip-range schedule), checkpoints saved before these options
existed, and runner runs with their flags. The pieces, one at a time:
tests/test_options_unit.py.
"""

import json

import keras
import numpy as np
import pytest
from keras import ops

from tests.helpers.runner import tensorboard_steps
from tests.helpers.settings import SMALL_2X64
from unstable_ppo import PPO
from unstable_ppo.callbacks import LambdaCallback


# --------------------------------------------------------------------------- the KL loss inside PPO


def test_early_stop_at_four_times_kl_target_and_beta_follows():
    common = dict(seed=1, num_envs=2, num_steps=64, num_epochs=6, batch_size=32, lr=3e-3, use_kl_loss=True)
    tight = PPO("Pendulum-v1", kl_target=1e-6, **common)
    tight.learn(128)
    assert tight.logs["epochs"] == 1 and tight.logs["kl"] > 4e-6
    assert tight.logs["kl_beta"] == pytest.approx(1.5) and tight.kl_beta == pytest.approx(1.5)
    loose = PPO("Pendulum-v1", kl_target=10.0, **common)
    loose.learn(128)
    assert loose.logs["epochs"] == 6 and loose.logs["kl"] < 40.0
    assert loose.logs["kl_beta"] == pytest.approx(1 / 1.5, rel=1e-6)
    assert loose.logs["lr_multiplier"] == 1.0


def test_lr_multiplier_scales_the_learning_rate_and_is_saved(tmp_path):
    seen = []
    ppo = PPO("Pendulum-v1", seed=2, use_kl_loss=True, kl_target=1e-6, init_beta=30.0, anneal_lr=False,
              lr=1e-3, **SMALL_2X64)
    ppo.learn(3 * 128, callbacks=[LambdaCallback(
        on_update_end=lambda u, logs: seen.append((logs["learning_rate"], logs["lr_multiplier"])))])
    # beta: 30 -> 35 (> 30, the lr backs off) -> 35 -> 35; the rate of update k is lr * multiplier after k-1
    np.testing.assert_allclose([m for _, m in seen], [1 / 1.5, 1 / 1.5**2, 1 / 1.5**3], rtol=1e-6)
    np.testing.assert_allclose([lr for lr, _ in seen], [1e-3, 1e-3 / 1.5, 1e-3 / 1.5**2], rtol=1e-5)
    ppo.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "ppo.json").read_text())
    assert meta["kl_adaptation"]["lr_multiplier"] == pytest.approx(1 / 1.5**3)
    loaded = PPO.load(tmp_path / "m")
    assert loaded.lr_multiplier == pytest.approx(1 / 1.5**3) and loaded.kl_beta == pytest.approx(35.0)


# --------------------------------------------------------------------------- rewards and normalization


def stats(ppo):
    return json.dumps(ppo.normalizer.to_json())


def test_normalizer_survives_save_load_and_evaluation_does_not_move_it(tmp_path):
    ppo = PPO("Pendulum-v1", seed=0, normalize_obs=True, normalize_reward=True, reward_transform="scale",
              **SMALL_2X64)
    ppo.learn(4 * 128)  # one whole episode per env: Pendulum's are 200 steps
    before = stats(ppo)
    assert ppo.normalizer.obs_rms.count > 512 and ppo.normalizer.ret_rms.count > 512
    result = ppo.evaluate(n_episodes=2)
    obs = np.stack([ppo.observation_space.sample() for _ in range(5)])
    actions, _ = ppo.predict(obs, deterministic=True)
    assert stats(ppo) == before
    # Returns are in the env's scale, not the transformed/normalized one.
    assert result["mean_return"] < -50 and ppo.logs["ep_rew_mean"] < -50

    ppo.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "ppo.json").read_text())
    saved_mean = meta["normalizer"]["obs_rms"]["mean"]
    assert isinstance(saved_mean, list) and len(saved_mean) == 3
    loaded = PPO.load(tmp_path / "m")
    assert stats(loaded) == before
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    loaded.evaluate("Pendulum-v1", n_episodes=1)
    assert stats(loaded) == before
    # Training on goes on from the saved statistics.
    loaded = PPO.load(tmp_path / "m", env="Pendulum-v1")
    count = loaded.normalizer.obs_rms.count
    loaded.learn(128)
    # a reset, then 64 steps x 2 envs
    assert loaded.normalizer.obs_rms.count == pytest.approx(count + 128 + 2)


# --------------------------------------------------------------------------- clip-range annealing


@pytest.mark.parametrize("anneal", [True, False])
def test_clip_range_schedule(anneal):
    """With anneal_clip_range, update u of U clips at clip_range · (1 - u/U), as the learning rate is annealed."""
    ppo = PPO("CartPole-v1", seed=0, num_envs=2, num_steps=16, num_epochs=1, batch_size=32, clip_range=0.3,
              anneal_clip_range=anneal)
    seen = []
    ppo.learn(4 * 32, callbacks=[LambdaCallback(on_update_end=lambda u, logs: seen.append(logs["clip_range"]))])
    expected = [0.3 * (1 - u / 4) for u in range(4)] if anneal else [0.3] * 4
    np.testing.assert_allclose(seen, expected, rtol=1e-6)


# --------------------------------------------------------------------------- checkpoints from before these options


@pytest.mark.parametrize("missing", [1, 2])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_checkpoint_from_before_the_kl_loss_or_clip_annealing_still_loads(tmp_path, env_id, missing):
    """A model.keras without ε (saved before clip annealing), or without β and ε (before the KL loss), loads.

    β falls back to 1 and ε to the saved clip range.
    """
    import zipfile

    import h5py

    ppo = PPO(env_id, seed=0, init_beta=3.0, clip_range=0.3, **SMALL_2X64)
    ppo.save(tmp_path / "m")
    archive = tmp_path / "m" / "model.keras"
    with zipfile.ZipFile(archive) as z:
        members = {name: z.read(name) for name in z.namelist()}
    (tmp_path / "w.h5").write_bytes(members["model.weights.h5"])
    with h5py.File(tmp_path / "w.h5", "r+") as f:
        own = f["vars"]
        n = len(own)
        np.testing.assert_allclose(own[str(n - 1)][()], 0.3)  # ε and, before it, β are the last own variables
        np.testing.assert_allclose(own[str(n - 2)][()], 3.0)
        for i in range(n - missing, n):
            del own[str(i)]
    members["model.weights.h5"] = (tmp_path / "w.h5").read_bytes()
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    loaded = PPO.load(tmp_path / "m")
    assert loaded.kl_beta == (1.0 if missing == 2 else 3.0)
    assert float(ops.convert_to_numpy(loaded.model.clip_epsilon)) == pytest.approx(0.3)
    obs = np.stack([ppo.observation_space.sample() for _ in range(4)])
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], ppo.predict(obs, deterministic=True)[0])


# --------------------------------------------------------------------------- the runner


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--env_id=Pendulum-v1", "--use_kl_loss", "--clip_range=0.1"], "drop --clip_range"),
        (["--env_id=CartPole-v1", "--use_kl_loss", "--anneal_clip_range"], "drop --anneal_clip_range"),
        (["--env_id=Pendulum-v1", "--eta=-1"], "eta must be >= 0"),
        (["--env_id=Pendulum-v1", "--reward_transform=log"], "unknown reward_transform 'log'"),
        (["--env_id=Pendulum-v1", "--use_kl_loss", "--kl_target=0"], "kl_target must be > 0"),
        (["--env_id=CartPole-v1", "--eta=0.5"], "eta applies to Box"),
        (["--env_id=CartPole-v1", "--nn_std"], "nn_std applies to Box"),
    ],
)
def test_runner_bad_option_flags(tmp_path, flags, message, run_runner):
    proc = run_runner(*flags, f"--backend={keras.backend.backend()}", cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "log").exists()


def test_runner_short_run_with_the_reference_code_options(tmp_path, run_runner):
    logdir = tmp_path / "run"
    flags = ("--env_id=Pendulum-v1", "--num_envs=2", "--num_steps=64", "--num_epochs=2", "--batch_size=64",
             "--num_episodes=2", "--eval_episodes=1", "--eval_interval=0", "--verbose=0", "--use_kl_loss",
             "--kl_target=0.02", "--init_beta=2", "--eta_kl=20", "--eta=0.1", "--nn_std",
             "--reward_transform=scale",
             "--reward_scale=0.1", "--normalize_reward", "--normalize_obs", f"--logdir={logdir}",
             f"--backend={keras.backend.backend()}")
    proc = run_runner(*flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((logdir / "model" / "latest" / "ppo.json").read_text())
    hp = meta["hyperparameters"]
    assert hp["use_kl_loss"] and hp["kl_target"] == 0.02 and hp["eta"] == 0.1 and hp["nn_std"]
    assert hp["reward_transform"] == "scale" and hp["reward_scale"] == 0.1 and hp["eta_kl"] == 20.0
    assert hp["normalize_obs"] and hp["normalize_reward"] and hp["init_beta"] == 2.0
    assert meta["normalizer"]["obs_rms"]["count"] > 256 and meta["normalizer"]["ret_rms"]["count"] > 256
    assert any(abs(meta["kl_adaptation"]["kl_beta"] - 2 * 1.5**k) < 1e-5 for k in (-2, -1, 0, 1, 2))
    for tag in ("train/kl_beta", "train/lr_multiplier", "train/std", "train/kl"):
        assert tensorboard_steps(logdir, tag) == [128, 256], tag
    # A resumed run keeps these options.
    proc = run_runner(*flags, "--resume", "--nonormalize_obs", "--num_episodes=3")
    assert proc.returncode == 2 and "--normalize_obs=False differs" in proc.stderr, proc.stderr[-2000:]
    proc = run_runner(*flags, "--resume", "--num_episodes=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((logdir / "metrics.json").read_text())["total_timesteps"] == 384
