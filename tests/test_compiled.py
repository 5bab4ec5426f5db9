"""The compiled trainer (unstable_ppo/compiled.py): one XLA program per PPO iteration for gymnax envs, on jax.

Its GAE is checked against the numpy path's, its schedules against `PPO.learn`'s rule, and its learning on
gymnax's CartPole; on TensorFlow and PyTorch it is a one-line error that says to use jax.
"""

import keras
import numpy as np
import pytest

pytest.importorskip("gymnax", reason="the gymnax extra is not installed")

from tests.helpers.settings import SMALL_2X16  # noqa: E402
from unstable_ppo import PPO  # noqa: E402
from unstable_ppo.buffer import compute_gae  # noqa: E402

ON_JAX = keras.backend.backend() == "jax"
jax_only = pytest.mark.skipif(not ON_JAX, reason="the compiled trainer runs on the jax backend")


@jax_only
def test_gae_in_the_compiled_program_equals_the_numpy_paths():
    from unstable_ppo.compiled import compiled_gae

    rng = np.random.default_rng(0)
    T, N = 64, 5
    rewards, values, next_values = (rng.normal(size=(T, N)).astype(np.float32) for _ in range(3))
    dones = (rng.random((T, N)) < 0.1).astype(np.float32)
    terminated = dones * (rng.random((T, N)) < 0.5)  # the other ends are truncations: they bootstrap
    expected = compute_gae(rewards, values, next_values, terminated, dones, 0.99, 0.95)
    got = compiled_gae(rewards, values, next_values, terminated, dones, 0.99, 0.95)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(np.asarray(g), e, rtol=1e-5, atol=1e-5)


@jax_only
def test_it_learns_cartpole_and_follows_the_schedules():
    from unstable_ppo.compiled import CompiledTrainer

    ppo = PPO("gymnax/CartPole-v1", seed=0, num_envs=8, num_steps=128, num_epochs=4, batch_size=256, lr=2.5e-4,
              anneal_clip_range=True, clip_range=0.2)
    trainer = CompiledTrainer(ppo, "gymnax/CartPole-v1", seed=0)
    updates, returns = 80, []
    for update in range(updates):
        logs, ended = trainer.update(update, updates)
        returns += [r for r, _ in ended]
        remaining = 1.0 - update / updates  # PPO.learn's linear schedules
        assert logs["learning_rate"] == pytest.approx(2.5e-4 * remaining, rel=1e-5)
        assert logs["clip_range"] == pytest.approx(0.2 * remaining, rel=1e-5)
        assert all(np.isfinite(v) for v in logs.values())
    assert np.mean(returns[:20]) < 40 and np.mean(returns[-20:]) > 150  # ~82k steps
    # The Keras model holds the trained weights: the Python API evaluates them on the Gymnasium twin.
    assert ppo.evaluate(n_episodes=5)["mean_return"] > 150


@jax_only
@pytest.mark.parametrize("setting, message", [(dict(recurrent=True, timestep_size=8), "recurrent=True"),
                                              (dict(normalize_obs=True), "normalize_obs=True"),
                                              (dict(use_kl_loss=True), "use_kl_loss=True")])
def test_what_it_does_not_implement_is_a_one_line_error(setting, message):
    from unstable_ppo.compiled import CompiledTrainer

    ppo = PPO("gymnax/CartPole-v1", seed=0, **SMALL_2X16, **setting)
    with pytest.raises(ValueError, match=f"{message} is not supported by the compiled trainer"):
        CompiledTrainer(ppo, "gymnax/CartPole-v1")


@pytest.mark.skipif(ON_JAX, reason="the error of the other backends")
def test_on_tensorflow_or_torch_it_says_to_use_jax():
    from unstable_ppo.compiled import CompiledTrainer

    with pytest.raises(ValueError, match="runs on the jax backend, not .*KERAS_BACKEND=jax"):
        CompiledTrainer.check(PPO(None).hp, "gymnax/CartPole-v1")


@jax_only
def test_learn_in_the_compiled_mode_logs_monitors_evaluates_saves_and_resumes(tmp_path):
    from unstable_ppo.callbacks import EvalCallback, LambdaCallback

    ppo = PPO("gymnax/CartPole-v1", seed=0, vectorization_mode="compiled", monitor_dir=tmp_path / "monitor",
              num_envs=4, num_steps=64, num_epochs=2, batch_size=128, env_kwargs={"max_steps_in_episode": 30})
    assert ppo.compiled is not None
    hooks, evaluations = [], EvalCallback(eval_freq=2 * 256, n_eval_episodes=2, verbose=0)
    ppo.learn(3 * 256, callbacks=[evaluations, LambdaCallback(
        on_rollout_end=lambda update, logs: hooks.append("rollout_end"),
        on_update_end=lambda update, logs: hooks.append(logs["num_timesteps"]))])
    assert hooks == [256, 512, 768]  # rollout and update are one program: no rollout_end between them
    assert [e[0] for e in evaluations.evaluations] == [512]
    # Every episode of every env is in its Monitor CSV and in ep_rew_mean's window (30 steps at most each).
    rows = [line.split(",") for i in range(4)
            for line in (tmp_path / "monitor" / f"{i}.monitor.csv").read_text().splitlines()[2:]]
    assert len(rows) == len(ppo.episode_returns) >= 768 // 30 - 4
    assert all(1 <= int(r[1]) <= 30 and float(r[0]) == int(r[1]) for r in rows)  # CartPole: 1 per step
    assert ppo.logs["ep_rew_mean"] == pytest.approx(np.mean([float(r[0]) for r in rows]))
    ppo.save(tmp_path / "m")
    loaded = PPO.load(tmp_path / "m", env="gymnax/CartPole-v1")
    assert loaded.hp.vectorization_mode == "compiled" and loaded.compiled is not None
    loaded.learn(4 * 256, reset_num_timesteps=False)
    assert loaded.num_timesteps == 4 * 256


@pytest.mark.backend_independent
def test_the_compiled_mode_needs_a_gymnax_id():
    from unstable_ppo.envs import make_vec_env

    with pytest.raises(ValueError, match="vectorization_mode 'compiled' needs a gymnax env id"):
        make_vec_env("CartPole-v1", 2, "compiled")


@pytest.mark.skipif(ON_JAX, reason="the error of the other backends")
def test_the_compiled_mode_on_tensorflow_or_torch_says_to_use_jax():
    with pytest.raises(ValueError, match="runs on the jax backend"):
        PPO("gymnax/CartPole-v1", vectorization_mode="compiled", **SMALL_2X16)


def test_the_runner_trains_and_resumes_in_the_compiled_mode(tmp_path, run_runner):
    import json

    logdir = tmp_path / "run"
    flags = ["--env_id=gymnax/CartPole-v1", "--vec_env=compiled", "--num_envs=4", "--num_steps=32",
             "--num_epochs=1", "--batch_size=64", "--eval_episodes=2", "--eval_interval=1", f"--logdir={logdir}",
             '--env_kwargs={"max_steps_in_episode": 20}']
    result = run_runner(*flags, "--total_timesteps=256")
    if not ON_JAX:
        assert result.returncode == 2 and "runs on the jax backend" in result.stderr.strip().splitlines()[-1]
        return
    assert result.returncode == 0, result.stderr
    result = run_runner(*flags, "--total_timesteps=384", "--resume")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((logdir / "metrics.json").read_text())
    assert metrics["total_timesteps"] == 384
    saved = json.loads((logdir / "model" / "latest" / "ppo.json").read_text())
    assert saved["hyperparameters"]["vectorization_mode"] == "compiled" and len(saved["run"]["evaluations"]) == 3
