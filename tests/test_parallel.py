"""Parallelism: gathering worker processes, Ray gathering actors, data-parallel learners.

The promise checked here is that the split of the work never changes a seeded run:
M gathering workers (processes or Ray actors) collect the trajectories one
in-process vector env does, and N learners make the update one learner makes.
The Ray tests run a real local Ray instance on 127.0.0.1, started once for the module.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from tests.helpers.runner import ROOT, child_env
from unstable_ppo import PPO
from unstable_ppo.envs import make_vec_env

BACKEND = keras.backend.backend()


def _env(**extra):
    return child_env(KERAS_BACKEND=BACKEND, **extra)


def _rollouts(ppo, count=2, collect=None):
    """`count` rollouts with the current weights: the buffers' arrays, copied."""
    buffer, out = ppo.make_buffer(), []
    if ppo.collector.last_obs is None:
        ppo.collector.reset()
    for _ in range(count):
        (collect or ppo.collect_rollout)(buffer)
        out.append({k: v.copy() for k, v in vars(buffer).items() if isinstance(v, np.ndarray)})
    return out


# -- gathering workers on one machine ------------------------------------------------------


def test_gathering_workers_step_the_same_envs_as_one_vector_env():
    """Same observations, rewards, flags, final observations and episode records, step by step."""
    one = make_vec_env("CartPole-v1", 4, max_episode_steps=15)
    two = make_vec_env("CartPole-v1", 4, max_episode_steps=15, gather_per_worker=2)
    try:
        assert type(two).__name__ == "GatherVectorEnv" and two.metadata["autoreset_mode"].name == "SAME_STEP"
        assert np.array_equal(one.reset(seed=7)[0], two.reset(seed=7)[0])
        actions = np.random.default_rng(0).integers(0, 2, (60, 4))
        finals = episodes = 0
        for a in actions:
            (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) = one.step(a), two.step(a)
            for x, y in ((o1, o2), (r1, r2), (te1, te2), (tr1, tr2)):
                assert np.array_equal(x, y)
            assert set(i1) == set(i2)
            if "final_obs" in i1:
                assert np.array_equal(i1["_final_obs"], i2["_final_obs"])
                for i in np.flatnonzero(i1["_final_obs"]):
                    assert np.array_equal(i1["final_obs"][i], i2["final_obs"][i])
                    finals += 1
                assert ("episode" in i1["final_info"]) == ("episode" in i2["final_info"])
                if "episode" in i1["final_info"]:  # the Monitor's record (of a terminated episode)
                    e1, e2 = i1["final_info"]["episode"], i2["final_info"]["episode"]
                    assert all(np.array_equal(e1[k], e2[k]) for k in ("r", "l", "_r") if k in e1)
                    episodes += 1
        assert finals >= 8 and episodes >= 1  # time-limit and terminal ends were compared
    finally:
        one.close()
        two.close()


def test_gathering_workers_train_exactly_like_one_process(tmp_path):
    """Two seeded learns, M=1 and M=2: the same weights, episodes and Monitor files."""
    results = []
    for m in (1, 2):
        ppo = PPO("CartPole-v1", seed=3, num_envs=4, num_steps=48, batch_size=96, num_epochs=1,
                  gather_per_worker=m, monitor_dir=str(tmp_path / f"m{m}"))
        ppo.learn(2 * 4 * 48)
        ppo.env.close()
        results.append((ppo.model.get_weights(), list(ppo.episode_returns)))
    (w1, e1), (w2, e2) = results
    assert e1 == e2 and len(e1) > 0
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert sorted(os.listdir(tmp_path / "m2")) == [f"{i}.monitor.csv" for i in range(4)]
    rows = lambda m, i: (tmp_path / f"m{m}" / f"{i}.monitor.csv").read_text().splitlines()[2:]  # noqa: E731
    assert all([r.split(",")[:2] for r in rows(1, i)] == [r.split(",")[:2] for r in rows(2, i)] for i in range(4))


def test_a_dead_gathering_worker_is_rebuilt_like_a_dead_env(caplog):
    env = make_vec_env("CartPole-v1", 4, gather_per_worker=2, max_env_restarts=1, env_timeout=10)
    try:
        env.reset(seed=0)
        gather = env.env
        os.kill(gather.workers[1].pid, signal.SIGKILL)
        gather.workers[1].join(5)
        with caplog.at_level("WARNING", logger="unstable_ppo"):
            obs, rewards, terminated, truncated, info = env.step(np.zeros(4, np.int64))
        assert "gathering worker 1 (envs 2-3) died during step" in caplog.text
        assert truncated.all() and info["env_restarted"].all() and obs.shape == (4, 4)
        assert all(p.is_alive() for p in env.env.workers)  # a fresh set of workers
        env.step(np.zeros(4, np.int64))
    finally:
        env.close()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num_envs=4", "--gather_per_worker=3"], "gather_per_worker=3 does not divide num_envs=4"),
        (["--num_envs=4", "--gather_per_worker=8"], "gather_per_worker=8 is larger than num_envs=4"),
        (["--num_envs=4", "--worker_num=64"],
         "worker_num=64 is more than the" if BACKEND == "jax" else "worker_num=64 (data-parallel learners) needs "
                                                                     "the jax backend"),
        (["--ray_address=127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
        (["--ray_address=127.0.0.1:1", "--normalize_obs"], "normalize_obs keeps running statistics in one process"),
    ],
)
def test_bad_parallelism_flags_exit_2_with_one_line(tmp_path, flags, message, run_runner):
    start = time.perf_counter()
    proc = run_runner("--env_id=CartPole-v1", *flags, cwd=tmp_path, env=_env(), timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "log").exists()
    assert time.perf_counter() - start < 60  # an unreachable cluster is an error, not a hang


def test_ray_address_without_ray_installed_is_a_one_line_error(tmp_path, run_runner):
    """A `ray` package that fails to import stands in for a machine without Ray."""
    (tmp_path / "shadow" / "ray").mkdir(parents=True)
    (tmp_path / "shadow" / "ray" / "__init__.py").write_text("raise ImportError('no ray here')\n")
    env = _env(PYTHONPATH=f"{tmp_path / 'shadow'}{os.pathsep}{ROOT}")
    proc = run_runner("--env_id=CartPole-v1", "--ray_address=127.0.0.1:6379", cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "needs Ray, which is not installed" in errors[0], proc.stderr[-2000:]


# -- data-parallel learners ------------------------------------------------------------------

_DATA_PARALLEL_CHECK = textwrap.dedent("""
    import json, sys
    import numpy as np
    from unstable_ppo import PPO

    results = []
    for n in (1, 2):
        ppo = PPO("CartPole-v1", seed=0, num_envs=4, num_steps=32, batch_size=64, num_epochs=2, worker_num=n)
        buffer = ppo.make_buffer()
        ppo.collector.reset()
        ppo.collect_rollout(buffer)
        logs = ppo.update(buffer)
        devices = len(ppo.model.trainable_variables[0].value.sharding.device_set)
        results.append((ppo.model.get_weights(), logs, devices))
    (w1, l1, d1), (w2, l2, d2) = results
    print(json.dumps({"devices": [d1, d2],
                      "max_weight_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(w1, w2)),
                      "max_change": max(float(np.max(np.abs(a - b))) for a, b in
                                        zip(w1, PPO("CartPole-v1", seed=0, num_envs=4).model.get_weights())),
                      "loss": [l1["loss"], l2["loss"]]}))
""")


def test_data_parallel_learners_make_the_update_of_one():
    if BACKEND != "jax":
        with pytest.raises(ValueError, match=f"worker_num=2 \\(data-parallel learners\\) needs the jax backend.*"
                                             f"uses {BACKEND}"):
            PPO("CartPole-v1", num_envs=4, worker_num=2)
        return
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", _DATA_PARALLEL_CHECK], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == [1, 2]  # the update really ran on two devices
    assert result["max_change"] > 1e-4  # the update moved the weights ...
    assert result["max_weight_diff"] < 1e-5  # ... and both ways alike
    assert result["loss"][0] == pytest.approx(result["loss"][1], rel=1e-5)


# -- Ray gathering actors -----------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray instance on loopback for this module; yields its address."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'unstable_ppo[ray]')")
    ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=4, include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": ROOT, "KERAS_BACKEND": BACKEND,
                                                             "TF_CPP_MIN_LOG_LEVEL": "3"}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.mark.parametrize("policy", ["mlp", "recurrent", "gsde", "dict"])
def test_ray_actors_collect_the_same_rollouts_as_one_vector_env(ray_cluster, policy):
    """A recurrent policy's LSTM states and episode starts come back with the rest of the rollout;
    gSDE's actors act with their own envs' exploration matrices, redrawn on the same steps."""
    from unstable_ppo.ray_gather import RayGatherer

    # gSDE on MountainCarContinuous: continuous actions whose float rounding the (gentle) dynamics do not
    # amplify, unlike Pendulum's, where torch's thread-dependent rounding grew to 1e-3 within 30 steps.
    env_id = {"mlp": "CartPole-v1", "recurrent": "CartPoleNoVel-v1", "gsde": "MountainCarContinuous-v0",
              "dict": "tests.helpers.envs:DictSpaces-v0"}[policy]  # every kind of Dict entry
    settings = dict(seed=5, num_envs=4, num_steps=48, batch_size=64)
    if policy == "recurrent":
        settings.update(recurrent=True, timestep_size=16, hidden_layer_size=16)
    if policy == "gsde":
        settings.update(use_sde=True, sde_sample_freq=5)
    count = 2
    local = PPO(env_id, **settings)
    expected = _rollouts(local, count)
    driver = PPO(env_id, **settings)
    gatherer = RayGatherer(driver, env_id, 2, seed=5)
    try:
        got = _rollouts(driver, count, collect=gatherer.collect_rollout)
    finally:
        gatherer.close()
    assert driver.rng.random() == local.rng.random()  # the driver's RNG moved on as in-process
    for e, g in zip(expected, got):
        for name, value in e.items():
            if value.dtype.kind == "f":
                np.testing.assert_allclose(g[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
            else:
                assert np.array_equal(g[name], value), name
    # The same episodes; the actors report theirs actor by actor, not in step order.
    assert sorted(driver.episode_returns) == sorted(local.episode_returns)
    assert len(local.episode_returns) > 0 or policy == "gsde"  # MountainCarContinuous's episodes last 999 steps
    local.env.close()
    driver.env.close()


@pytest.mark.backend_independent  # the actors' restarts; their rollouts match on every backend above
def test_runner_on_ray_goes_on_while_a_killed_actor_restarts_and_saves(ray_cluster, tmp_path, run_runner):
    """SIGKILL one actor mid-run: the run goes on with the other, the restarted one rejoins, the run saves.

    The run is long; once the actor is back and two more updates are done, SIGTERM ends it
    the usual way (a checkpoint, exit 143), so the test waits for the restart, whatever it takes.
    """
    logdir = tmp_path / "run"
    num_steps = 128
    proc = run_runner(
        "--env_id=CartPole-v1", "--num_envs=4", f"--num_steps={num_steps}",
        "--batch_size=256", "--num_epochs=1", "--num_episodes=100000", "--eval_episodes=2",
        "--eval_interval=0", "--save_interval=0", "--gather_per_worker=2", f"--ray_address={ray_cluster}",
        "--verbose=2", f"--logdir={logdir}",
        env=_env(), wait=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, deadline, killed, back_at = logdir / "training.log", time.time() + 240, None, None
    while time.time() < deadline and proc.poll() is None:
        text = log.read_text() if log.exists() else ""
        if killed is None and "update 1:" in text:
            pid = int(next(line for line in text.splitlines() if "gathering actor 1 " in line).rsplit(" ", 1)[1])
            os.kill(pid, signal.SIGKILL)  # the second rollout is in flight
            killed = pid
        if killed is not None and back_at is None and "gathering actor 1 (envs 2-3) is back" in text:
            back_at = int(text.split("is back", 1)[1].split("rejoins rollout ", 1)[1].split()[0])
        if back_at is not None and f"update {back_at + 1}:" in text:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=120)
    assert killed is not None and back_at is not None, stderr[-3000:]
    assert proc.returncode == 143 and "checkpoint saved" in stderr, stderr[-3000:]
    text = log.read_text()
    lost = [line for line in text.splitlines() if "gathering actor 1 (envs 2-3) failed during rollout" in line]
    assert len(lost) == 1 and "failed during rollout 2 " in lost[0], text[-3000:]
    back = next(line for line in text.splitlines() if "gathering actor 1 (envs 2-3) is back" in line)
    assert f"(pid {killed})" not in back  # a new process rejoined
    missed = back_at - 2  # rollouts 2 .. back_at - 1 lacked actor 1's two envs
    saved = json.loads((logdir / "model" / "latest" / "ppo.json").read_text())
    updates = saved["num_updates"]
    assert missed >= 1 and updates > back_at
    assert saved["num_timesteps"] == (updates * 4 - missed * 2) * num_steps
    assert sorted(os.listdir(logdir / "monitor")) == [f"{i}.monitor.csv" for i in range(4)]


@pytest.mark.backend_independent  # the kwargs reach the envs; the model is the same on every backend
def test_ray_actors_build_their_envs_with_the_env_kwargs(ray_cluster, tmp_path, run_runner):
    """`--env_kwargs` reaches the actors' envs: CartPole cut at 7 steps in every actor's Monitor file."""
    logdir = tmp_path / "run"
    proc = run_runner(
        "--env_id=CartPole-v1", "--noenv_defaults", "--num_envs=4", "--num_steps=16", "--batch_size=32",
        "--num_epochs=1", "--num_episodes=2", "--eval_episodes=1", "--gather_per_worker=2",
        f"--ray_address={ray_cluster}", '--env_kwargs={"max_episode_steps": 7}', f"--logdir={logdir}",
        env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for i in range(4):
        lengths = [int(row["l"]) for row in csv.DictReader((logdir / "monitor" / f"{i}.monitor.csv").read_text()
                                                            .splitlines()[1:])]
        assert lengths and max(lengths) <= 7, (i, lengths)
    assert json.loads((logdir / "model" / "latest" / "ppo.json").read_text())["hyperparameters"]["env_kwargs"] == {
        "max_episode_steps": 7}
